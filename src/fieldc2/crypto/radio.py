"""Frame security for the compact radio link: AES-128-CCM, 4-byte tag, 7 bytes overhead.

On air (see ``docs/dil.md``)::

    byte 0      bits 7-6 version (1), bits 5-4 key epoch mod 4, bits 3-0 counter bits 11..8
    byte 1      sender id 0..254 (255 is reserved for "all")
    byte 2      counter bits 7..0
    ...         ciphertext, as long as the body
    last 4      CCM tag (TAG_BYTES)

The 3-byte header is sent in clear and authenticated as associated data.  The
13-byte CCM nonce is never sent; both ends build it from what they know::

    channel id (2, from the channel name) | key epoch (4, u32) | sender (1) | counter (6, u48)

**Why CCM and not GCM.**  A truncated GCM tag is much weaker than its length:
Ferguson ("Authentication weaknesses in GCM", 2005) showed that forgeries
against a short GCM tag get easier with every forgery attempt and reveal the
authentication key, and NIST SP 800-38D hedges 32-bit GCM tags with strict
usage limits.  CCM's CBC-MAC truncates cleanly: each attempt succeeds with
probability 2^-32, independent of earlier ones.  4-byte CCM/CMAC MICs are what
LoRaWAN and Bluetooth Mesh use on links like ours.

**Forgery bound.**  An attempt succeeds with probability at most
``MAX_CANDIDATES * 2^-32 = 2^-31`` (each forged frame is trial-decrypted under at
most two counter candidates, see below).  Attempts cost airtime: on LoRa
LongFast a minimal frame takes ~0.35 s, so at the 10 % EU868 duty cycle an
attacker gets ~1,029 attempts an hour, 9.0 million a year, and waits about
**238 years** for one expected forgery (476 with a single candidate; 24 years
for a transmitter that ignores the duty cycle and jams the channel 100 % of the
time).  Every failed decryption is counted (``stats.decrypt_failures``,
``stats.rejected["tag"]``), so an attempt at scale is visible long before.
:func:`expected_years_to_forgery` computes these figures.

**Counters.**  Each sender numbers its frames with a 48-bit counter that never
repeats (:mod:`fieldc2.crypto.radio_keys` persists it ahead) and that does *not*
restart with a new key epoch, so one replay window per sender stays sound across
rotations.  Only its 12 low bits are sent.  The receiver takes as first
candidate the value congruent to them that is closest to the highest counter it
accepted from that sender, within ``[highest - 2047, highest + 2048]``; the
second is that plus 4096.  A candidate below the 64-counter window is not
decrypted; an already seen one ends the search (a duplicate from a flooding
relay must not cost a decryption or count as an attack); the others are
decrypted in order and the first that authenticates wins.  So a sender may run
up to 6,144 counters ahead of what a receiver last heard (a crash skips at most
256), a reordered frame is accepted within 64, and an old replay is rejected as
``"window"`` or ``"replay"``.  One blind spot: a frame 4,033..4,096 ahead whose
12-bit alias is among the last 64 seen is taken for a duplicate; the sender's
later frames leave the alias range within 64 frames and are accepted again.  A
sender never heard is treated as if it had last sent ``unknown_floor - 1``: with
the default floor 0 its counter must be below 8,192.  A receiver that joins later
than that must be told (``expect()``, or ``restore()`` a peer's snapshot).

**What the tag proves.**  Possession of the channel key, not the sender: any
member can send as any sender id, so orders and FLASH messages carry Ed25519
signatures (:mod:`fieldc2.crypto.signing`).  Two devices with one sender id on
one key would reuse nonces, which leaks plaintext XORs; sender ids are assigned.
A receiver with no state (neither snapshot nor ``expect()``) accepts a replay of
an old frame once; persist :meth:`FrameOpener.snapshot` after accepting.  A
receiver keeps no window for its own sender id, so it would accept its own
frame played back by an attacker (or a digipeater): give it ``own=`` its id
and such frames are rejected as ``"reflected"`` before any decryption.

**Rotation without a flag day.**  Install the next epoch's key on receivers
ahead of time; tell senders to ``rotate()``.  The first authenticated frame
under a newer epoch (or ``promote()``) makes it current, and older epochs are
then accepted for ``grace`` more seconds and rejected as ``"epoch"`` after.
``now`` is wall-clock seconds, because deadlines survive restarts in snapshots.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from fieldc2.crypto.radio_keys import MAX_COUNTER, ChannelKey, CounterStore
from fieldc2.errors import ConfigError, FrameRejected, LinkError, RadioFrameError

VERSION = 1
HEADER_BYTES = 3
#: 4 bytes, as LoRaWAN's MIC: the forgery bound above is what it buys.
TAG_BYTES = 4
OVERHEAD = HEADER_BYTES + TAG_BYTES
#: Largest frame: a LoRa PHY payload holds at most 255 bytes.  Bounds the
#: decryption work a garbage frame can cause.
MAX_FRAME = 255
MAX_BODY = MAX_FRAME - OVERHEAD
#: Sender ids 0..254; 255 means "all" in the link layer.
MAX_SENDER = 254
COUNTER_LOW_BITS = 12
COUNTER_SPAN = 1 << COUNTER_LOW_BITS
#: First candidate lies in [highest - LOOK_BEHIND, highest + SPAN - 1 - LOOK_BEHIND].
LOOK_BEHIND = COUNTER_SPAN // 2 - 1
#: Trial decryptions per frame; each multiplies the forgery chance (2 -> 2^-31).
MAX_CANDIDATES = 2
#: Replay window: a frame may arrive up to 63 counters late (flooding relays
#: reorder a few frames); one 64-bit word per sender keeps state at 15 bytes.
WINDOW = 64
_FULL = (1 << WINDOW) - 1
#: Keys held at once: previous, current, next (and one spare); the header's 2
#: epoch bits cannot tell more apart.
EPOCH_SLOTS = 4
#: Default seconds an older epoch stays valid after a newer one is seen: long
#: enough for a device that was out of range for a while to hear the rotation.
EPOCH_GRACE = 6 * 3600.0
#: Largest snapshot restored: 255 senders x ~40 bytes of JSON, with margin.
MAX_SNAPSHOT = 64 * 1024
SECONDS_PER_YEAR = 365.25 * 24 * 3600


def pack_header(epoch: int, sender: int, counter: int) -> bytes:
    return bytes(((VERSION << 6) | ((epoch & 3) << 4) | ((counter >> 8) & 0xF),
                  sender, counter & 0xFF))


def parse_header(frame: bytes) -> tuple[int, int, int]:
    """``(epoch mod 4, sender, counter low 12 bits)``; RadioFrameError if malformed."""
    if not OVERHEAD <= len(frame) <= MAX_FRAME:
        raise RadioFrameError(f"radio frame of {len(frame)} bytes, need {OVERHEAD}..{MAX_FRAME}")
    if frame[0] >> 6 != VERSION:
        raise RadioFrameError(f"radio frame version {frame[0] >> 6}, expected {VERSION}")
    if frame[1] > MAX_SENDER:
        raise RadioFrameError("radio frame from reserved sender id 255")
    return (frame[0] >> 4) & 3, frame[1], ((frame[0] & 0xF) << 8) | frame[2]


def make_nonce(channel_id: int, epoch: int, sender: int, counter: int) -> bytes:
    return (channel_id.to_bytes(2, "big") + epoch.to_bytes(4, "big") + bytes((sender,))
            + counter.to_bytes(6, "big"))


def expected_years_to_forgery(frame_airtime: float = 0.35, duty: float = 0.10,
                              candidates: int = MAX_CANDIDATES) -> float:
    """Expected years of attempts, at ``duty`` of the airtime, until one forgery passes."""
    attempts_per_year = duty * SECONDS_PER_YEAR / frame_airtime
    return float(2 ** (8 * TAG_BYTES)) / candidates / attempts_per_year


class FrameSealer:
    """Sender side: body in, frame out.  One per sender id and channel."""

    def __init__(self, key: ChannelKey, sender: int, counters: CounterStore,
                 max_body: int = MAX_BODY) -> None:
        if not 0 <= sender <= MAX_SENDER:
            raise ConfigError(f"sender id {sender} outside 0..{MAX_SENDER}")
        if not 0 <= max_body <= MAX_BODY:
            raise ConfigError(f"max_body {max_body} outside 0..{MAX_BODY}")
        self.sender = sender
        self.max_body = max_body
        self._counters = counters
        self._key = key
        self._channel_id = key.channel_id
        self._aead = AESCCM(key.aead_key, tag_length=TAG_BYTES)

    @property
    def epoch(self) -> int:
        return self._key.epoch

    def rotate(self, key: ChannelKey) -> None:
        """Switch to a newer epoch's key; the counter carries on."""
        if key.name != self._key.name or key.epoch <= self._key.epoch:
            raise ConfigError(f"rotate needs a newer key of channel {self._key.name!r}")
        self._key = key
        self._aead = AESCCM(key.aead_key, tag_length=TAG_BYTES)

    def seal(self, body: bytes) -> bytes:
        if len(body) > self.max_body:
            raise LinkError(f"body of {len(body)} bytes exceeds {self.max_body}")
        counter = self._counters.take()
        if counter > MAX_COUNTER:
            raise LinkError("48-bit frame counter exhausted; this sender id needs a new key")
        header = pack_header(self._key.epoch, self.sender, counter)
        nonce = make_nonce(self._channel_id, self._key.epoch, self.sender, counter)
        return header + self._aead.encrypt(nonce, body, header)

    def close(self) -> None:
        self._counters.close()


class Opened(msgspec.Struct, frozen=True):
    """An authenticated, fresh frame."""

    sender: int
    counter: int
    epoch: int
    body: bytes


@dataclass
class OpenerStats:
    accepted: int = 0
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    """Rejections by reason: tag, replay, window, epoch, reflected, malformed."""
    decrypt_failures: int = 0
    """Trial decryptions that failed: the count of forgery attempts (at most 2 per frame)."""


class _Window:
    """Highest accepted counter and a bitmap of the 64 below it (bit i: highest - i)."""

    __slots__ = ("highest", "seen")

    def __init__(self, highest: int, seen: int) -> None:
        self.highest, self.seen = highest, seen

    def check(self, counter: int) -> str | None:
        if counter > self.highest:
            return None
        offset = self.highest - counter
        if offset >= WINDOW:
            return "window"
        return "replay" if (self.seen >> offset) & 1 else None

    def mark(self, counter: int) -> None:
        if counter > self.highest:
            shift = counter - self.highest
            self.seen = ((self.seen << shift) | 1) & _FULL if shift < WINDOW else 1
            self.highest = counter
        else:
            self.seen |= 1 << (self.highest - counter)

    def merge(self, highest: int, seen: int) -> None:
        """Union with another record of the same sender."""
        if highest > self.highest:
            self.highest, self.seen, highest, seen = highest, seen, self.highest, self.seen
        shift = self.highest - highest
        if shift < WINDOW:
            self.seen |= (seen << shift) & _FULL


def candidates(highest: int, low: int) -> list[int]:
    """Full counters with these 12 low bits to try, first the closest to ``highest``."""
    first = highest + (low - highest + LOOK_BEHIND) % COUNTER_SPAN - LOOK_BEHIND
    if first < 0:
        first += COUNTER_SPAN
    span = range(first, first + COUNTER_SPAN * MAX_CANDIDATES, COUNTER_SPAN)
    return [c for c in span if c <= MAX_COUNTER]


_Sender = Annotated[int, msgspec.Meta(ge=0, le=MAX_SENDER)]
_Counter = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNTER)]
_Epoch = Annotated[int, msgspec.Meta(ge=0, le=(1 << 32) - 1)]


class SenderState(msgspec.Struct, frozen=True, array_like=True):
    sender: _Sender
    highest: _Counter
    seen: Annotated[int, msgspec.Meta(ge=0)]
    """Bitmap, < 2^64 (checked on restore: msgspec bounds stop at int64)."""


class OpenerSnapshot(msgspec.Struct, frozen=True):
    """Receiver state that must survive a restart (no keys: those are provisioned)."""

    v: int
    channel_id: int
    current: _Epoch | None
    retire_at: dict[int, float]
    senders: list[SenderState]


class FrameOpener:
    """Receiver side: frame in, :class:`Opened` out, or FrameRejected / RadioFrameError.

    State is one :class:`_Window` per sender heard (at most 255) and up to
    ``EPOCH_SLOTS`` keys; :meth:`snapshot` is at most a few kilobytes.
    """

    def __init__(self, keys: Iterable[ChannelKey], *, grace: float = EPOCH_GRACE,
                 unknown_floor: int = 0, own: int | None = None) -> None:
        if own is not None and not 0 <= own <= MAX_SENDER:
            raise ConfigError(f"own sender id {own} out of range")
        self.own = own
        """This receiver's own sender id: a frame claiming it is our own frame
        played back (or a forgery of one) and is rejected as ``reflected``
        before any decryption; the opener keeps no window for it."""
        self.grace = grace
        """Seconds an older epoch stays valid after a newer one became current."""
        self.unknown_floor = unknown_floor
        """Lowest counter accepted from a sender with no state (see module docstring)."""
        self.stats = OpenerStats()
        self.current: int | None = None
        self._channel: str | None = None
        self._channel_id = 0
        self._slots: dict[int, tuple[ChannelKey, AESCCM]] = {}
        self._retire_at: dict[int, float] = {}
        self._windows: dict[int, _Window] = {}
        for key in keys:
            self.install(key)
        if self._channel is None:
            raise ConfigError("a frame opener needs at least one channel key")

    @property
    def channel_id(self) -> int:
        return self._channel_id

    def install(self, key: ChannelKey) -> None:
        """Hold ``key`` (typically the next epoch, ahead of the switch)."""
        if self._channel is not None and key.name != self._channel:
            raise ConfigError(f"key for channel {key.name!r}, opener is for {self._channel!r}")
        held = self._slots.get(key.epoch % EPOCH_SLOTS)
        if held is not None and held[0].epoch > key.epoch:
            raise ConfigError(f"epoch {key.epoch} would replace the newer epoch {held[0].epoch}")
        self._channel, self._channel_id = key.name, key.channel_id
        self._slots[key.epoch % EPOCH_SLOTS] = (key, AESCCM(key.aead_key, tag_length=TAG_BYTES))

    def promote(self, epoch: int, now: float, grace: float | None = None) -> None:
        """Make ``epoch`` current; older epochs expire ``grace`` seconds after ``now``.

        Happens by itself on the first authenticated frame under a newer epoch.
        Call it with ``grace=0`` to cut an older (compromised) epoch off at once;
        a deadline is only ever brought forward.
        """
        if self.current is not None and epoch < self.current:
            return
        deadline = now + (self.grace if grace is None else grace)
        for key, _ in self._slots.values():
            if key.epoch < epoch:
                self._retire_at[key.epoch] = min(self._retire_at.get(key.epoch, deadline),
                                                 deadline)
        self.current = epoch
        for old in [e for e in self._retire_at if e < epoch - EPOCH_SLOTS]:
            del self._retire_at[old]

    def expect(self, sender: int, floor: int) -> None:
        """Counters of ``sender`` below ``floor`` are spent (learned out of band).

        Resynchronises a sender that ran more than 6,144 counters ahead, or
        seeds a receiver that joins late.  Only ever moves forward.
        """
        if not 0 <= sender <= MAX_SENDER or not 0 <= floor <= MAX_COUNTER:
            raise ConfigError(f"expect({sender}, {floor}) out of range")
        window = self._windows.get(sender)
        if window is None or floor - 1 > window.highest:
            self._windows[sender] = _Window(floor - 1, _FULL)

    def open(self, frame: bytes, now: float) -> Opened:
        try:
            opened = self._open(bytes(frame), now)
        except FrameRejected as exc:
            self.stats.rejected[exc.reason] += 1
            raise
        except RadioFrameError:
            self.stats.rejected["malformed"] += 1
            raise
        self.stats.accepted += 1
        return opened

    def _open(self, frame: bytes, now: float) -> Opened:
        epoch_bits, sender, low = parse_header(frame)
        if sender == self.own:
            raise FrameRejected("reflected", f"frame claims our own sender id {sender}")
        key, aead = self._key_for(epoch_bits, now)
        window = self._windows.get(sender) or self._unknown_window()
        reason: str | None = None
        for counter in candidates(window.highest, low):
            problem = window.check(counter)
            if problem == "replay":
                # Flooding relays deliver duplicates all the time: no trial
                # decryption for them, so decrypt_failures counts only attacks.
                reason = reason or problem
                break
            if problem is None:
                nonce = make_nonce(self._channel_id, key.epoch, sender, counter)
                try:
                    body = aead.decrypt(nonce, frame[HEADER_BYTES:], frame[:HEADER_BYTES])
                except InvalidTag:
                    self.stats.decrypt_failures += 1
                    problem = "tag"
                else:
                    return self._accept(sender, counter, window, key.epoch, body, now)
            reason = reason or problem
        raise FrameRejected(reason or "window", f"frame from sender {sender}: {reason}")

    def _unknown_window(self) -> _Window:
        floor = self.unknown_floor
        return _Window(floor - 1, _FULL if floor > 0 else 0)

    def _key_for(self, epoch_bits: int, now: float) -> tuple[ChannelKey, AESCCM]:
        held = self._slots.get(epoch_bits)
        if held is None:
            raise FrameRejected("epoch", f"no key for epoch {epoch_bits} (mod 4)")
        epoch = held[0].epoch
        if self.current is not None and epoch < self.current:
            deadline = self._retire_at.get(epoch)
            if deadline is None or now >= deadline:
                del self._slots[epoch_bits]  # retired: forget the key material
                raise FrameRejected("epoch", f"epoch {epoch} is retired")
        return held

    def _accept(self, sender: int, counter: int, window: _Window, epoch: int, body: bytes,
                now: float) -> Opened:
        window.mark(counter)
        self._windows[sender] = window
        if self.current is None or epoch > self.current:
            self.promote(epoch, now)
        return Opened(sender, counter, epoch, body)

    def snapshot(self) -> bytes:
        """Replay state and epoch deadlines as JSON; persist it after accepting frames."""
        senders = [SenderState(sender, window.highest, window.seen)
                   for sender, window in sorted(self._windows.items()) if window.highest >= 0]
        return msgspec.json.encode(OpenerSnapshot(1, self._channel_id, self.current,
                                                  dict(self._retire_at), senders))

    def restore(self, data: bytes) -> None:
        """Merge a snapshot in; merging only ever adds protection, never removes it."""
        if len(data) > MAX_SNAPSHOT:
            raise ConfigError(f"opener snapshot larger than {MAX_SNAPSHOT} bytes")
        try:
            snap = msgspec.json.decode(data, type=OpenerSnapshot)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"opener snapshot is corrupt: {exc}") from exc
        if snap.v != 1 or snap.channel_id != self._channel_id:
            raise ConfigError("opener snapshot is of another channel or format")
        if any(state.seen > _FULL for state in snap.senders):
            raise ConfigError("opener snapshot has a replay bitmap wider than 64 bits")
        for state in snap.senders:
            window = self._windows.setdefault(state.sender, _Window(-1, 0))
            window.merge(state.highest, state.seen)
        for epoch, deadline in snap.retire_at.items():
            self._retire_at[epoch] = min(self._retire_at.get(epoch, deadline), deadline)
        if snap.current is not None and (self.current is None or snap.current > self.current):
            self.current = snap.current
