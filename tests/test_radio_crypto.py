"""Radio frame security: a sealer and an opener as a pair over in-memory bytes."""

from __future__ import annotations

import collections
import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldc2.crypto.radio import (
    COUNTER_SPAN,
    EPOCH_GRACE,
    MAX_BODY,
    MAX_FRAME,
    OVERHEAD,
    TAG_BYTES,
    WINDOW,
    FrameOpener,
    FrameSealer,
    Opened,
    candidates,
    expected_years_to_forgery,
    pack_header,
    parse_header,
)
from fieldc2.crypto.radio_keys import (
    COUNTER_RESERVE,
    MAX_COUNTER,
    ChannelKey,
    FileCounterStore,
    MemoryCounterStore,
    channel_id_of,
    key_document,
    key_from_document,
)
from fieldc2.errors import ConfigError, FrameRejected, LinkError, RadioFrameError

KEY0 = ChannelKey("sar-north", 0, bytes(range(16)))
KEY1 = ChannelKey("sar-north", 1, bytes(range(16, 32)))
T0 = 1_760_000_000.0


def sealer(sender: int = 7, start: int = 0, key: ChannelKey = KEY0) -> FrameSealer:
    return FrameSealer(key, sender, MemoryCounterStore(start))


def reason_of(opener: FrameOpener, frame: bytes, now: float = T0) -> str:
    with pytest.raises(FrameRejected) as caught:
        opener.open(frame, now)
    return caught.value.reason


# --- layout and keys -----------------------------------------------------------------------

def test_overhead_is_seven_bytes_and_header_layout_is_the_fixed_one() -> None:
    key = ChannelKey("sar-north", 6, bytes(16))
    frame = FrameSealer(key, 200, MemoryCounterStore(0xABC_DEF)).seal(b"12345")
    assert OVERHEAD == 7 and TAG_BYTES == 4
    assert len(frame) == 5 + OVERHEAD
    # version 1, epoch 6 mod 4 = 2, counter bits 11..8 = 0xD; sender; counter bits 7..0
    assert frame[:3] == bytes((0b01_10_1101, 200, 0xEF))
    assert parse_header(frame) == (2, 200, 0xDEF)
    assert pack_header(6, 200, 0xABC_DEF) == frame[:3]


def test_passphrase_keys_are_deterministic_and_bound_to_the_channel_name() -> None:
    a = ChannelKey.from_passphrase("sar-north", "correct horse battery")
    assert a == ChannelKey.from_passphrase("sar-north", "correct horse battery")
    assert a.master != ChannelKey.from_passphrase("sar-south", "correct horse battery").master
    assert "master" not in repr(a) and a.master.hex() not in repr(a)
    with pytest.raises(ConfigError):
        ChannelKey.from_passphrase("sar-north", "short")


def test_subkeys_differ_per_epoch_but_the_channel_id_does_not() -> None:
    same_master = ChannelKey("sar-north", 1, KEY0.master)
    assert same_master.aead_key != KEY0.aead_key
    assert same_master.channel_id == KEY0.channel_id == channel_id_of("sar-north")
    assert 0 <= KEY0.channel_id <= 0xFFFF
    assert channel_id_of("sar-south") != KEY0.channel_id


def test_export_line_and_json_document_round_trip() -> None:
    key = ChannelKey.generate("ops.team-2", 41)
    line = key.export()
    assert line.startswith("fieldc2-chan:v1:ops.team-2:41:")
    assert ChannelKey.from_export(line) == key
    doc = key_document(key)
    assert set(json.loads(doc)) == {"channel", "epoch", "key"}
    assert json.loads(doc)["epoch"] == 41
    assert key_from_document(doc) == key


@pytest.mark.parametrize("line", [
    "fieldc2-chan:v2:a:0:AAAAAAAAAAAAAAAAAAAAAA==", "fieldc2-chan:v1:a:x:AAAAAAAAAAAAAAAAAAAAAA==",
    "fieldc2-chan:v1:a:0:not-base64!", "fieldc2-chan:v1:a:0:AAAA", "fieldc2-chan:v1:a:b:0:AA==",
    "fieldc2-chan:v1:a b:0:AAAAAAAAAAAAAAAAAAAAAA==", "fieldc2-chan:v1:a:99999999999:AA==",
])
def test_bad_export_lines_are_config_errors(line: str) -> None:
    with pytest.raises(ConfigError):
        ChannelKey.from_export(line)
    with pytest.raises(ConfigError):
        key_from_document(b'{"channel": "a", "epoch": "0"}')


def test_forgery_bound_figures() -> None:
    # 2^32 / 2 candidates / (0.1 * 31,557,600 s / 0.35 s) attempts a year
    assert expected_years_to_forgery() == pytest.approx(238.17, abs=0.01)
    assert expected_years_to_forgery(candidates=1) == pytest.approx(476.35, abs=0.01)
    assert expected_years_to_forgery(duty=1.0) == pytest.approx(23.82, abs=0.01)


# --- round trips -----------------------------------------------------------------------------

near_wrap = st.builds(lambda k, d: max(0, k * COUNTER_SPAN + d),
                      st.integers(0, (MAX_COUNTER >> 12) - 1), st.integers(-4, 4))


@given(bodies=st.lists(st.binary(max_size=MAX_BODY), min_size=1, max_size=8),
       sender=st.integers(0, 254), start=near_wrap, behind=st.integers(0, 2000),
       epoch=st.integers(0, 2**32 - 1))
def test_seal_open_round_trip_across_the_12_bit_wrap(
        bodies: list[bytes], sender: int, start: int, behind: int, epoch: int) -> None:
    key = ChannelKey("sar-north", epoch, KEY0.master)
    tx = FrameSealer(key, sender, MemoryCounterStore(start))
    rx = FrameOpener([key])
    rx.expect(sender, max(0, start - behind))
    for offset, body in enumerate(bodies):
        frame = tx.seal(body)
        assert len(frame) == len(body) + OVERHEAD
        assert rx.open(frame, T0) == Opened(sender, start + offset, epoch, body)
    assert rx.stats.accepted == len(bodies) and not rx.stats.rejected


@given(low=st.integers(0, COUNTER_SPAN - 1), highest=st.integers(-1, MAX_COUNTER))
def test_first_candidate_is_the_closest_to_the_highest_seen(low: int, highest: int) -> None:
    found = candidates(highest, low)
    assert 1 <= len(found) <= 2 or highest > MAX_COUNTER - COUNTER_SPAN
    for c in found:
        assert c % COUNTER_SPAN == low and 0 <= c <= MAX_COUNTER
    if found and found[0] >= COUNTER_SPAN:
        assert highest - 2047 <= found[0] <= highest + 2048


def test_empty_body_and_largest_body() -> None:
    tx, rx = sealer(), FrameOpener([KEY0])
    assert rx.open(tx.seal(b""), T0).body == b""
    big = os.urandom(MAX_BODY)
    frame = tx.seal(big)
    assert len(frame) == MAX_FRAME and rx.open(frame, T0).body == big
    with pytest.raises(LinkError):
        tx.seal(big + b"x")


def test_fresh_receiver_accepts_a_sender_below_8192_and_expect_moves_it_forward() -> None:
    rx = FrameOpener([KEY0])
    assert rx.open(sealer(start=8191).seal(b"a"), T0).counter == 8191
    late = sealer(sender=9, start=50_000)
    assert reason_of(rx, late.seal(b"b")) == "tag"  # unknown high bits: cannot be found
    rx.expect(9, 49_990)
    assert rx.open(late.seal(b"c"), T0).counter == 50_001


@pytest.mark.parametrize("gap", [1, 2048, 2049, 4031, 4032, 4033, 4095, 4097, 6144])
def test_a_sender_may_run_ahead_by_up_to_6144_counters(gap: int) -> None:
    rx = FrameOpener([KEY0])
    rx.expect(7, 9_000)
    rx.open(sealer(start=10_000).seal(b"a"), T0)
    assert rx.open(sealer(start=10_000 + gap).seal(b"b"), T0).counter == 10_000 + gap


def test_a_jump_onto_the_alias_of_a_seen_counter_heals_within_the_window() -> None:
    rx = FrameOpener([KEY0])
    rx.expect(7, 9_000)
    for counter in range(10_000 - WINDOW + 1, 10_001):
        rx.open(sealer(start=counter).seal(b"a"), T0)
    tx = sealer(start=10_000 + 4096 - WINDOW + 1)  # aliases 9937..10000, all seen
    for _ in range(WINDOW):
        assert reason_of(rx, tx.seal(b"b")) == "replay"
    assert rx.open(tx.seal(b"c"), T0).counter == 10_000 + 4097
    assert rx.stats.decrypt_failures == 1  # the duplicates cost no decryption


def test_a_sender_too_far_ahead_is_rejected_until_resynchronised() -> None:
    rx = FrameOpener([KEY0])
    rx.expect(7, 9_000)
    rx.open(sealer(start=10_000).seal(b"a"), T0)
    frame = sealer(start=10_000 + 7_000).seal(b"b")
    assert reason_of(rx, frame) == "window"  # its alias 8808 is below the window
    assert rx.stats.decrypt_failures == 1  # 12904 was tried
    rx.expect(7, 16_900)
    assert rx.open(frame, T0).counter == 17_000


# --- rejection -------------------------------------------------------------------------------

def test_every_single_bit_flip_is_rejected() -> None:
    tx, rx = sealer(start=5000), FrameOpener([KEY0, KEY1])
    rx.open(tx.seal(b"x"), T0)
    frame = tx.seal(b"abc")
    for bit in range(len(frame) * 8):
        flipped = bytearray(frame)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises((FrameRejected, RadioFrameError)):
            rx.open(bytes(flipped), T0)
    assert rx.open(frame, T0).body == b"abc"  # the rejections changed no state
    assert rx.stats.accepted == 2
    assert sum(rx.stats.rejected.values()) == len(frame) * 8


def test_wrong_key_or_channel_is_rejected_as_tag() -> None:
    frame = sealer().seal(b"hello")
    assert reason_of(FrameOpener([ChannelKey("sar-north", 0, bytes(16))]), frame) == "tag"
    assert reason_of(FrameOpener([ChannelKey("sar-south", 0, KEY0.master)]), frame) == "tag"


def test_replay_and_out_of_window_are_rejected() -> None:
    tx, rx = sealer(), FrameOpener([KEY0])
    frames = [tx.seal(bytes([i])) for i in range(100)]
    rx.open(frames[99], T0)
    assert reason_of(rx, frames[99]) == "replay"
    assert reason_of(rx, frames[99 - WINDOW]) == "window"
    assert reason_of(rx, frames[0]) == "window"
    assert rx.open(frames[99 - WINDOW + 1], T0).counter == 99 - WINDOW + 1
    assert reason_of(rx, frames[99 - WINDOW + 1]) == "replay"


@settings(max_examples=30)
@given(order=st.permutations(range(WINDOW)))
def test_reordering_within_the_window_is_accepted_once_each(order: list[int]) -> None:
    tx, rx = sealer(start=4000), FrameOpener([KEY0])
    rx.expect(7, 4000)
    frames = [tx.seal(bytes([i])) for i in range(WINDOW)]
    assert [rx.open(frames[i], T0).counter for i in order] == [4000 + i for i in order]
    for frame in frames:
        assert reason_of(rx, frame) == "replay"


def test_rejections_are_counted_by_reason() -> None:
    tx, rx = sealer(), FrameOpener([KEY0])
    frames = [tx.seal(b"m") for _ in range(80)]
    rx.open(frames[79], T0)
    reason_of(rx, frames[79])
    reason_of(rx, frames[0])
    reason_of(rx, frames[79][:-1] + bytes([frames[79][-1] ^ 1]))
    reason_of(rx, FrameSealer(KEY1, 3, MemoryCounterStore()).seal(b"m"))
    with pytest.raises(RadioFrameError):
        rx.open(b"\x40\x01", T0)
    assert rx.stats.rejected == collections.Counter(
        {"replay": 2, "window": 1, "epoch": 1, "malformed": 1})
    assert rx.stats.accepted == 1
    # replays (even tampered ones) are refused before any decryption; frames[0]'s
    # alias 0 is below the window and its second candidate 4096 was tried
    assert rx.stats.decrypt_failures == 1


@pytest.mark.parametrize("frame", [
    b"", b"\x40\x01\x02", b"\x40\x01\x02\x03\x04\x05",  # too short for header + tag
    b"\x00\x01\x02\x03\x04\x05\x06", b"\xc0\x01\x02\x03\x04\x05\x06",  # versions 0 and 3
    b"\x40\xff\x02\x03\x04\x05\x06",  # sender 255 is reserved
    b"\x40\x01\x02" + bytes(MAX_FRAME),  # longer than a LoRa payload
])
def test_malformed_frames_are_radio_frame_errors(frame: bytes) -> None:
    with pytest.raises(RadioFrameError):
        FrameOpener([KEY0]).open(frame, T0)


@given(st.binary(max_size=300) | st.binary(max_size=40).map(lambda b: b"\x40" + b))
def test_fuzz_open_only_raises_our_frame_errors(data: bytes) -> None:
    rx = FrameOpener([KEY0, KEY1])
    rx.open(sealer(start=3).seal(b"seed"), T0)
    with pytest.raises((RadioFrameError, FrameRejected)):
        rx.open(data, T0)


@given(st.binary(max_size=200))
def test_fuzz_restore_only_raises_config_error(data: bytes) -> None:
    with pytest.raises(ConfigError):
        FrameOpener([KEY0]).restore(data)


# --- counters across restarts ----------------------------------------------------------------

def test_counter_file_never_reuses_a_value_after_clean_close(tmp_path: Path) -> None:
    path = tmp_path / "counter.json"
    used: list[int] = []
    for run in range(3):
        tx = FrameSealer(KEY0, 7, FileCounterStore(path))
        rx = FrameOpener([KEY0])
        rx.expect(7, used[-1] + 1 if used else 0)
        used += [rx.open(tx.seal(b"p"), T0).counter for _ in range(10 + run * 300)]
        tx.close()
    assert used == list(range(len(used)))  # a clean close skips nothing
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_counter_file_never_reuses_a_value_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "counter.json"
    seen: set[int] = set()
    highest = -1
    for n in (1, 255, 256, 257, 700, 0, 3):
        store = FileCounterStore(path)  # the previous one is dropped without close()
        taken = [store.take() for _ in range(n)]
        assert not seen & set(taken) and all(c > highest for c in taken)
        if taken:
            assert taken[0] - highest <= COUNTER_RESERVE  # receivers absorb the skip
            highest = taken[-1]
        seen |= set(taken)


def test_a_crash_between_reservation_and_use_still_skips_safely(tmp_path: Path) -> None:
    path = tmp_path / "counter.json"
    store = FileCounterStore(path, reserve=10)
    assert [store.take() for _ in range(3)] == [0, 1, 2]
    assert json.loads(path.read_bytes())["next"] == 10  # reserved before handing out 0
    assert FileCounterStore(path, reserve=10).take() == 10


def test_corrupt_counter_file_refuses_to_guess(tmp_path: Path) -> None:
    path = tmp_path / "counter.json"
    path.write_bytes(b"{not json")
    with pytest.raises(LinkError):
        FileCounterStore(path)


def test_counter_exhaustion_is_refused() -> None:
    tx = sealer(start=MAX_COUNTER)
    assert len(tx.seal(b"last")) == 4 + OVERHEAD
    with pytest.raises(LinkError):
        tx.seal(b"one too many")


def test_bad_sealer_configuration() -> None:
    with pytest.raises(ConfigError):
        FrameSealer(KEY0, 255, MemoryCounterStore())
    with pytest.raises(ConfigError):
        FrameSealer(KEY0, 1, MemoryCounterStore(), max_body=MAX_BODY + 1)


# --- receiver restarts -----------------------------------------------------------------------

def test_snapshot_restore_keeps_replay_protection() -> None:
    senders = [sealer(sender=s, start=100 * s) for s in range(5)]
    rx = FrameOpener([KEY0])
    for s in range(5):
        rx.expect(s, 100 * s)
    frames = [[tx.seal(bytes([i])) for i in range(70)] for tx in senders]
    for per_sender in frames:
        for frame in per_sender[:60]:
            rx.open(frame, T0)
    snap = rx.snapshot()
    assert len(snap) < 400
    restarted = FrameOpener([KEY0])
    restarted.restore(snap)
    for per_sender in frames:
        assert reason_of(restarted, per_sender[59]) == "replay"
        assert reason_of(restarted, per_sender[0]) == "replay"  # 59 back: still in the window
        assert restarted.open(per_sender[65], T0).body == bytes([65])
    restarted.restore(snap)  # an older snapshot merged in removes no protection
    assert reason_of(restarted, frames[0][65]) == "replay"
    assert restarted.open(frames[0][60], T0).counter == 60


def test_restore_refuses_another_channels_snapshot() -> None:
    other = FrameOpener([ChannelKey("sar-south", 0, KEY0.master)])
    with pytest.raises(ConfigError):
        FrameOpener([KEY0]).restore(other.snapshot())


# --- key rotation ----------------------------------------------------------------------------

def test_rotation_accepts_both_epochs_during_grace_then_rejects_the_old() -> None:
    early, late = sealer(sender=1), sealer(sender=2)
    rx = FrameOpener([KEY0], grace=600.0)
    rx.install(KEY1)  # ahead of the switch
    assert rx.open(late.seal(b"old"), T0).epoch == 0
    early.rotate(KEY1)
    assert rx.open(early.seal(b"new"), T0 + 10).epoch == 1  # makes epoch 1 current
    assert rx.current == 1
    assert rx.open(late.seal(b"straggler"), T0 + 609).epoch == 0
    assert reason_of(rx, late.seal(b"too late"), T0 + 610) == "epoch"
    late.rotate(KEY1)
    assert rx.open(late.seal(b"caught up"), T0 + 611).counter == 3  # counter carried on


def test_replay_across_epochs_is_still_a_replay() -> None:
    tx, rx = sealer(), FrameOpener([KEY0, KEY1])
    old = tx.seal(b"a")
    rx.open(old, T0)
    tx.rotate(KEY1)
    rx.open(tx.seal(b"b"), T0 + 1)
    assert reason_of(rx, old, T0 + 2) == "replay"


def test_promote_with_zero_grace_cuts_the_old_epoch_off_and_survives_restart() -> None:
    tx = sealer()
    rx = FrameOpener([KEY0, KEY1])
    rx.open(tx.seal(b"a"), T0)
    rx.promote(1, T0 + 5, grace=0)
    frame = tx.seal(b"b")
    assert reason_of(rx, frame, T0 + 5) == "epoch"
    restarted = FrameOpener([KEY0, KEY1])
    restarted.restore(rx.snapshot())
    assert reason_of(restarted, frame, T0 + 6) == "epoch"


def test_grace_deadline_survives_restart() -> None:
    old, new = sealer(sender=1), sealer(sender=2, key=KEY1)
    rx = FrameOpener([KEY0, KEY1])
    rx.open(new.seal(b"n"), T0)
    restarted = FrameOpener([KEY0, KEY1])
    restarted.restore(rx.snapshot())
    assert restarted.open(old.seal(b"o"), T0 + EPOCH_GRACE - 1).epoch == 0
    assert reason_of(restarted, old.seal(b"o"), T0 + EPOCH_GRACE) == "epoch"


def test_unknown_epoch_and_bad_installs() -> None:
    frame = FrameSealer(ChannelKey("sar-north", 2, bytes(16)), 1, MemoryCounterStore()).seal(b"")
    assert reason_of(FrameOpener([KEY0, KEY1]), frame) == "epoch"
    rx = FrameOpener([ChannelKey("sar-north", 4, bytes(16))])
    with pytest.raises(ConfigError):
        rx.install(KEY0)  # 0 mod 4 would replace the newer epoch 4
    with pytest.raises(ConfigError):
        rx.install(ChannelKey("sar-south", 5, bytes(16)))
    with pytest.raises(ConfigError):
        sealer(key=KEY1).rotate(KEY0)
    with pytest.raises(ConfigError):
        FrameOpener([])


def test_epoch_four_later_replaces_epoch_zero() -> None:
    key4 = ChannelKey("sar-north", 4, bytes(range(4, 20)))
    rx = FrameOpener([KEY0])
    rx.install(key4)
    assert reason_of(rx, sealer().seal(b"z")) == "tag"  # epoch 0's key is gone
    assert rx.open(FrameSealer(key4, 7, MemoryCounterStore()).seal(b"z"), T0).epoch == 4


def test_many_senders_interleaved_at_random() -> None:
    rng = random.Random(4)
    txs = {s: sealer(sender=s, start=rng.randrange(0, 8000)) for s in range(0, 255, 17)}
    rx = FrameOpener([KEY0])
    got = collections.Counter[int]()
    for _ in range(600):
        s = rng.choice(list(txs))
        got[rx.open(txs[s].seal(b"."), T0).sender] += 1
    assert sum(got.values()) == 600 and len(rx.snapshot()) < 1000


def test_restore_refuses_corrupt_snapshots() -> None:
    rx = FrameOpener([KEY0])
    good = json.loads(rx.snapshot())
    wide = dict(good, senders=[[1, 5, 1 << 64]])
    negative = dict(good, senders=[[1, -5, 1]])
    for data in (b"", b"[]", json.dumps(wide).encode(), json.dumps(negative).encode(),
                 b" " * (70 * 1024)):
        with pytest.raises(ConfigError):
            rx.restore(data)


def test_own_frame_reflected_back_is_rejected_and_counted() -> None:
    tx = sealer()  # sends as slot 7
    me = FrameOpener([KEY0], own=7)
    frame = tx.seal(b"my own position")
    with pytest.raises(FrameRejected) as info:
        me.open(frame, T0)
    assert info.value.reason == "reflected"
    assert me.stats.rejected["reflected"] == 1 and me.stats.decrypt_failures == 0
    other = FrameOpener([KEY0], own=6)
    assert other.open(frame, T0).body == b"my own position"
    with pytest.raises(ConfigError):
        FrameOpener([KEY0], own=255)
