"""A client that never reads must not slow anyone else down.

Integration: a non-reading client with a tiny receive window sits in the same
group as twenty busy senders.  The server must switch it to its latest-only
backlog, keep its memory bounded, disconnect it after ``slow_client_timeout``
and meanwhile keep delivering to everyone else with low latency.

Units: :class:`fieldc2.fanout.Backlog` and :func:`fieldc2.fanout.deliver_bucket`.

Only loopback traffic; every loop is bounded in iterations and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from fieldc2.fanout import Backlog, Outgoing, deliver_bucket
from fieldc2.model.cot import Event, EventFacts
from fieldc2.protocol.cot_xml import parse_event
from fieldc2.protocol.framing import ProtoStreamFramer
from fieldc2.protocol.stream import Format
from fieldc2.protocol.tak_v1 import payload_to_event
from fieldc2.router import Peer
from fieldc2.server import CommandPost
from fieldc2.sim.units import chat, self_report
from fieldc2.transport.stream import ClientConnection
from tests.conftest import eventually, make_config

HOST = "127.0.0.1"
HIGH = 64 * 1024
SLOW_TIMEOUT = 2.0
SENDERS = 20
#: Seconds between two reports of one sender (20 events/s each, 400/s in all).
SEND_INTERVAL = 0.05
MAX_REPORTS = 1000
MAX_READS = 200_000
BASE_LAT = 10.0
LAT_STEP = 1e-5
#: Latency every good client must keep while the non-reader is stuck.
MAX_LATENCY = 1.0
#: How far past the high-water mark a paused transport's buffer may be: the
#: one write that crossed the mark (a tick's batch or the picture).
BUFFER_SLACK = 256 * 1024

_UID = re.compile(rb'<event\b[^>]*?\buid="([^"]*)"')
_LAT = re.compile(rb'<point\b[^>]*?\blat="([-0-9.]+)"')


# --- clients -------------------------------------------------------------------


class Unit:
    """A busy, well-behaved client: reports fast and reads everything.

    A report's latitude encodes its sequence number, so every receiver can
    look up when it was sent and measure its latency.
    """

    def __init__(self, index: int, registry: dict[str, Unit], *, chat_every: int = 0) -> None:
        self.uid = f"UNIT-{index:02d}"
        self.callsign = f"U{index:02d}"
        self.registry = registry
        registry[self.uid] = self
        self.chat_every = chat_every
        self.sent_at: list[float] = []
        self.chats = 0
        self.latest: dict[str, int] = {}
        self.latencies: list[tuple[float, float]] = []  # (sent at, latency)
        self.stop = asyncio.Event()
        self._pending = bytearray()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, port)
        self._tasks = [asyncio.create_task(self._send_loop()),
                       asyncio.create_task(self._read_loop())]

    async def _send_loop(self) -> None:
        for seq in range(MAX_REPORTS):
            if self.stop.is_set():
                return
            self.sent_at.append(time.monotonic())
            self.writer.write(self_report(self.uid, self.callsign, BASE_LAT + seq * LAT_STEP,
                                          20.0))
            if self.chat_every and seq % self.chat_every == 0:
                self.writer.write(chat(self.uid, self.callsign, f"message {seq}"))
                self.chats += 1
            await self.writer.drain()
            await asyncio.sleep(SEND_INTERVAL)

    async def _read_loop(self) -> None:
        for _ in range(MAX_READS):
            data = await self.reader.read(256 * 1024)
            if not data:
                return
            now = time.monotonic()
            self._pending += data
            *complete, rest = self._pending.split(b"</event>")
            self._pending = bytearray(rest)
            for event in complete:
                self._note(event, now)

    def _note(self, event: bytes | bytearray, now: float) -> None:
        uid, lat = _UID.search(event), _LAT.search(event)
        if uid is None or lat is None:
            return
        sender = self.registry.get(uid.group(1).decode())
        if sender is None:
            return
        seq = round((float(lat.group(1)) - BASE_LAT) / LAT_STEP)
        if seq >= len(sender.sent_at):
            return  # not a report of this run
        sent = sender.sent_at[seq]
        self.latencies.append((sent, now - sent))
        self.latest[sender.uid] = max(seq, self.latest.get(sender.uid, -1))

    @property
    def last_seq(self) -> int:
        return len(self.sent_at) - 1

    async def close(self) -> None:
        self.stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def non_reader(port: int, uid: str, group: str = "Cyan") -> socket.socket:
    """A client that says who it is and then never reads.

    Its receive buffer is tiny, and so is its MSS: on loopback the server's
    kernel send buffer is sized from the MSS (about 4 MB for loopback's 64 KB
    segments), which would otherwise take many seconds to fill.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if hasattr(socket, "TCP_MAXSEG"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, (HOST, port))
        await loop.sock_sendall(sock, self_report(uid, uid, 10.5, 20.5, group=group))
    except BaseException:
        sock.close()
        raise
    return sock


def server_side(post: CommandPost, uid: str) -> ClientConnection | None:
    return next((c for c in post.clients.values() if c.uid == uid), None)


def fieldc2_warnings(caplog: pytest.LogCaptureFixture, port: int) -> list[str]:
    tag = f"@{HOST}:{port}:"
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("fieldc2") and r.levelno >= logging.WARNING
            and tag in r.getMessage()]


# --- integration ---------------------------------------------------------------


async def test_non_reader_does_not_slow_anyone_down(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path, write_buffer_high=HIGH, slow_client_timeout=SLOW_TIMEOUT)
    registry: dict[str, Unit] = {}
    units = [Unit(i, registry, chat_every=5 if i == 0 else 0) for i in range(SENDERS)]
    samples: list[tuple[int, int, int, int]] = []
    good_paused: list[str] = []
    async with CommandPost(config) as post:
        sock = await non_reader(post.tcp_port, "SLOW-READER")
        port = sock.getsockname()[1]
        sampler: asyncio.Task[None] | None = None
        try:
            await eventually(lambda: server_side(post, "SLOW-READER") is not None, 3.0)
            slow = server_side(post, "SLOW-READER")
            assert slow is not None
            for unit in units:
                await unit.start(post.tcp_port)

            async def sample() -> None:
                for _ in range(2000):  # 2000 x 10 ms at most
                    transport = slow.transport
                    if slow.id not in post.clients or transport is None:
                        return
                    if slow.paused_since is not None:
                        backlog = slow.backlog
                        samples.append((len(backlog), len(backlog.positions),
                                        len(backlog.others), transport.get_write_buffer_size()))
                    for unit in units:
                        peer = server_side(post, unit.uid)
                        if peer is not None and peer.paused_since is not None:
                            good_paused.append(unit.uid)
                    await asyncio.sleep(0.01)

            sampler = asyncio.create_task(sample())
            await eventually(lambda: slow.paused_since is not None, 10.0)
            stuck_at = time.monotonic()
            await eventually(lambda: slow.id not in post.clients, SLOW_TIMEOUT + 3.0)
            gone_at = time.monotonic()
            await asyncio.sleep(0.5)  # and a little while after it is gone
            for unit in units:
                unit.stop.set()
            await asyncio.sleep(SEND_INTERVAL * 2)
            # Every report of every sender reaches every other sender.
            await eventually(lambda: all(
                u.latest.get(o.uid, -1) == o.last_seq for u in units for o in units if o is not u),
                3.0)
        finally:
            if sampler is not None:
                sampler.cancel()
                await asyncio.gather(sampler, return_exceptions=True)
            for unit in units:
                if unit._tasks:
                    await unit.close()
            sock.close()

    # The non-reader got stuck, and was dropped in time with a reason.
    assert gone_at - stuck_at <= SLOW_TIMEOUT + 2.0, f"dropped after {gone_at - stuck_at:.1f} s"
    lines = fieldc2_warnings(caplog, port)
    assert any(re.search(r"too slow|fell behind", line) for line in lines), lines
    # Nobody else ever had to be treated as slow, and latency stayed low.
    assert not good_paused, f"good clients were paused: {sorted(set(good_paused))}"
    while_stuck = [lat for sent, lat in (x for u in units for x in u.latencies)
                   if stuck_at <= sent <= gone_at]
    after = [lat for sent, lat in (x for u in units for x in u.latencies) if sent > gone_at]
    assert len(while_stuck) >= SENDERS * (SENDERS - 1) * 10, len(while_stuck)
    assert after
    assert max(while_stuck) < MAX_LATENCY, f"worst latency while stuck {max(while_stuck):.2f} s"
    assert max(after) < MAX_LATENCY, f"worst latency after {max(after):.2f} s"
    # Its memory stayed bounded: latest-only positions, bounded others, no write buffer growth.
    assert samples, "never sampled the non-reader while it was slow"
    limit = config.stream.max_backlog
    assert max(s[0] for s in samples) <= SENDERS + limit
    assert max(s[1] for s in samples) <= SENDERS  # one position per uid
    assert max(s[2] for s in samples) <= limit
    assert max(s[2] for s in samples) >= 1, "the chat never reached the backlog"
    assert max(s[3] for s in samples) <= HIGH + BUFFER_SLACK


async def test_non_reader_whose_backlog_overflows_is_dropped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Chat is not coalesced: past ``max_backlog`` undelivered messages the client goes."""
    max_backlog = 10
    config = make_config(tmp_path, write_buffer_high=HIGH, slow_client_timeout=30.0,
                         max_backlog=max_backlog)
    registry: dict[str, Unit] = {}
    units = [Unit(i, registry, chat_every=1 if i == 0 else 0) for i in range(5)]
    async with CommandPost(config) as post:
        sock = await non_reader(post.tcp_port, "SLOW-CHAT")
        port = sock.getsockname()[1]
        try:
            await eventually(lambda: server_side(post, "SLOW-CHAT") is not None, 3.0)
            slow = server_side(post, "SLOW-CHAT")
            assert slow is not None
            for unit in units:
                await unit.start(post.tcp_port)
            await eventually(lambda: slow.paused_since is not None, 10.0)
            peak = 0
            for _ in range(400):  # 400 x 10 ms at most
                if slow.id not in post.clients:
                    break
                peak = max(peak, len(slow.backlog.others))
                await asyncio.sleep(0.01)
            assert slow.id not in post.clients, "an overflowing backlog did not get it dropped"
            assert peak <= max_backlog + 1
            # The others carry on.
            marks = {u.uid: u.last_seq for u in units}
            await eventually(lambda: all(u.latest.get(o.uid, -1) > marks[o.uid]
                                         for u in units for o in units if o is not u), 3.0)
        finally:
            for unit in units:
                if unit._tasks:
                    await unit.close()
            sock.close()
    lines = fieldc2_warnings(caplog, port)
    assert any(re.search(rf"fell behind: more than {max_backlog}", line) for line in lines), lines


async def test_slow_client_cannot_make_the_server_buffer_the_picture(tmp_path: Path) -> None:
    """Changing group makes the server resend the picture: that must respect backpressure.

    A non-reader that alternates its ``__group`` between two teams gets the
    whole picture of the new team on every report.  Those writes must go to
    its (latest-only) backlog like everything else once it is slow, not pile
    up in the transport's write buffer.
    """
    config = make_config(tmp_path, write_buffer_high=HIGH, slow_client_timeout=SLOW_TIMEOUT)
    teams, markers = ("Cyan", "Red"), 150
    async with CommandPost(config) as post:
        reader, writer = await asyncio.open_connection(HOST, post.tcp_port)

        async def drain() -> None:
            for _ in range(MAX_READS):
                if not await reader.read(65536):
                    return

        drainer = asyncio.create_task(drain())
        sock: socket.socket | None = None
        sizes: list[int] = []
        try:
            for team in teams:
                writer.write(self_report("LOADER", "LOADER", 10.1, 20.1, group=team))
                for i in range(markers):
                    writer.write(self_report(f"PIC-{team}-{i}", f"P{i}", 10.2, 20.2, group=team))
                await writer.drain()
                await eventually(lambda t=team: sum(
                    i.event.uid.startswith(f"PIC-{t}-") for i in post.picture.entries.values())
                    == markers)
            sock = await non_reader(post.tcp_port, "REGROUPER")
            port = sock.getsockname()[1]
            await eventually(lambda: server_side(post, "REGROUPER") is not None, 3.0)
            slow = server_side(post, "REGROUPER")
            assert slow is not None and slow.transport is not None
            loop = asyncio.get_running_loop()
            for k in range(60):
                report = self_report("REGROUPER", "REGROUPER", 10.5, 20.5, group=teams[k % 2])
                await loop.sock_sendall(sock, report)
                await asyncio.sleep(0.01)
                if slow.transport is None or slow.id not in post.clients:
                    break
                sizes.append(slow.transport.get_write_buffer_size())
        finally:
            drainer.cancel()
            await asyncio.gather(drainer, return_exceptions=True)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            if sock is not None:
                sock.close()
    assert sizes
    assert max(sizes) <= HIGH + BUFFER_SLACK, (
        f"the server buffered {max(sizes) / 1e6:.1f} MB for a client that reads nothing "
        f"(write_buffer_high is {HIGH // 1024} KiB; port {port})")


# --- Backlog -------------------------------------------------------------------

_NOW = 1_714_564_800_000


def _item(uid: str, cot_type: str = "a-f-G-U-C", *, sender: int = 1, lat: float = 0.0,
          facts: EventFacts | None = None) -> Outgoing:
    event = Event(uid=uid, type=cot_type, how="m-g", time=_NOW, start=_NOW,
                  stale=_NOW + 60_000, lat=lat)
    return Outgoing(event, facts or EventFacts(), frozenset({"Cyan"}), sender)


def test_backlog_keeps_only_the_latest_position_per_uid() -> None:
    backlog = Backlog(limit=10)
    items = [_item(f"U{n % 3}", lat=n) for n in range(30)]
    assert all(backlog.add(item) for item in items)
    assert len(backlog) == 3
    assert len(backlog.positions) == 3 and not backlog.others
    drained = backlog.drain()
    assert {i.event.uid: i.event.lat for i in drained} == {"U0": 27, "U1": 28, "U2": 29}
    assert all(any(d is i for i in items[-3:]) for d in drained)
    assert len(backlog) == 0 and backlog.drain() == []


def test_backlog_positions_are_not_limited_beyond_their_uids() -> None:
    backlog = Backlog(limit=2)
    assert all(backlog.add(_item(f"U{n}")) for n in range(50))
    assert len(backlog) == 50


def test_backlog_keeps_chat_alerts_and_directed_items_in_order() -> None:
    backlog = Backlog(limit=100)
    directed = EventFacts(dest_callsigns=("BRAVO",))
    sequence = [
        _item("GeoChat.A.All.1", "b-t-f"),
        _item("A-9-1-1", "b-a-o-tbl"),
        _item("U1", lat=1.0),
        _item("GeoChat.A.All.1", "b-t-f"),  # same uid again: still two messages
        _item("U1", lat=2.0),
        _item("U2", "a-f-G-U-C", facts=directed),  # directed positions are not coalesced
        _item("U2", "a-f-G-U-C", facts=directed),
        _item("A-9-1-1", "b-a-o-can"),
        _item("marker-1", "t-x-d-d"),
    ]
    for item in sequence:
        assert backlog.add(item)
    others = [i for i in sequence if i.event.uid != "U1"]
    assert list(backlog.others) == others
    assert len(backlog) == len(others) + 1
    drained = backlog.drain()
    assert drained[: len(others)] == others  # in arrival order ...
    assert drained[len(others):] == [sequence[4]]  # ... then the latest position


def test_backlog_limit_returns_false_past_max() -> None:
    backlog = Backlog(limit=3)
    assert [backlog.add(_item(f"GeoChat.{n}", "b-t-f")) for n in range(3)] == [True] * 3
    assert backlog.add(_item("A-1", "b-a-o-tbl")) is False
    assert backlog.add(_item("U1")) is True  # positions never hit the limit
    assert len(backlog.others) == 4


# --- deliver_bucket -------------------------------------------------------------


class CountingOutgoing(Outgoing):
    """Counts how often each wire format is actually encoded."""

    __slots__ = ("frame_encodes", "payload_encodes", "xml_encodes")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.xml_encodes = self.payload_encodes = self.frame_encodes = 0

    def xml(self) -> bytes:
        if self._xml is None:
            self.xml_encodes += 1
        return super().xml()

    def payload(self) -> bytes:
        if self._payload is None:
            self.payload_encodes += 1
        return super().payload()

    def frame(self) -> bytes:
        if self._frame is None:
            self.frame_encodes += 1
        return super().frame()


class FakeRecipient(Peer):
    __slots__ = ("events_out", "fmt", "slow", "taken", "writes")

    def __init__(self, peer_id: int, fmt: Format, *, slow: bool = False) -> None:
        super().__init__(peer_id, frozenset({"Cyan"}))
        self.fmt = fmt
        self.slow = slow
        self.events_out = 0
        self.writes: list[bytes] = []
        self.taken: list[Outgoing] = []

    @property
    def format(self) -> Format:
        return self.fmt

    @property
    def wants_items(self) -> bool:
        return self.slow

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def take_items(self, items: Iterable[Outgoing]) -> None:
        self.taken.extend(items)


def _proto_uids(data: bytes) -> list[str]:
    framer = ProtoStreamFramer()
    framer.feed(data)
    uids = []
    for _ in range(1000):
        payload = framer.next_frame()
        if payload is None:
            break
        decoded = payload_to_event(payload)
        assert decoded is not None
        uids.append(decoded[0].uid)
    return uids


def _bucket() -> list[CountingOutgoing]:
    items = []
    for n, sender in enumerate([1, 2, 1, 3, 0, 2]):
        event, facts = parse_event(self_report(f"UID-{n}", f"CS{n}", 10 + n, 20 + n)
                                   .split(b"?>", 1)[1])
        items.append(CountingOutgoing(event, facts, frozenset({"Cyan"}), sender))
    return items


def test_deliver_bucket_one_write_per_recipient_without_its_own_events() -> None:
    items = _bucket()
    senders = {i.sender for i in items}
    xml_sender = FakeRecipient(1, Format.XML)
    proto_sender = FakeRecipient(2, Format.PROTO)
    xml_listener = FakeRecipient(7, Format.XML)
    xml_listener2 = FakeRecipient(8, Format.XML)
    proto_listener = FakeRecipient(9, Format.PROTO)
    slow_sender = FakeRecipient(3, Format.XML, slow=True)
    recipients = [xml_sender, proto_sender, xml_listener, xml_listener2, proto_listener,
                  slow_sender]

    delivered = deliver_bucket(list(items), senders, recipients)

    for item in items:
        assert item.xml_encodes <= 1 and item.payload_encodes <= 1 and item.frame_encodes <= 1
    expected_total = 0
    for r in recipients:
        others = [i for i in items if i.sender != r.id]
        if r.slow:
            assert r.writes == [] and r.taken == others
            continue
        assert len(r.writes) == 1, f"recipient {r.id} got {len(r.writes)} writes"
        data = r.writes[0]
        if r.fmt is Format.XML:
            assert data == b"".join(i.xml() for i in others)
            assert not data.startswith(b"\xbf")
        else:
            assert data == b"".join(i.frame() for i in others)
            assert data[:1] == b"\xbf"
            assert _proto_uids(data) == [i.event.uid for i in others]
        assert r.events_out == len(others)
        expected_total += len(others)
    assert delivered == expected_total
    # Recipients that sent nothing share the very same bytes object.
    assert xml_listener.writes[0] is xml_listener2.writes[0]


def test_deliver_bucket_encodes_each_event_once_per_format() -> None:
    items = _bucket()
    original = self_report("UID-WIRE", "WIRE", 11.0, 21.0).split(b"?>", 1)[1]
    event, facts = parse_event(original)
    passthrough = CountingOutgoing(event, facts, frozenset({"Cyan"}), 4, original)
    items.append(passthrough)
    recipients = [FakeRecipient(100 + n, Format.XML if n % 2 else Format.PROTO)
                  for n in range(10)]
    recipients += [FakeRecipient(s, Format.XML) for s in (1, 2)]
    recipients += [FakeRecipient(3, Format.PROTO)]
    deliver_bucket(list(items), {i.sender for i in items}, recipients)
    for item in items:
        assert item.payload_encodes == 1 and item.frame_encodes == 1
    assert [i.xml_encodes for i in items] == [1] * (len(items) - 1) + [0]
    # An XML sender's own bytes are forwarded untouched to XML recipients.
    assert all(original in r.writes[0] for r in recipients if r.fmt is Format.XML)


def test_deliver_bucket_sole_sender_gets_no_write() -> None:
    items = [CountingOutgoing(i.event, i.facts, i.key, 5) for i in _bucket()[:3]]
    alone = FakeRecipient(5, Format.XML)
    listener = FakeRecipient(6, Format.PROTO)
    assert deliver_bucket(list(items), {5}, [alone, listener]) == 3
    assert alone.writes == [] and alone.events_out == 0
    assert len(listener.writes) == 1 and listener.events_out == 3
    assert all(i.xml_encodes <= 1 and i.frame_encodes == 1 for i in items)
