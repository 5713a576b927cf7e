"""Hostile input must not disturb the clients that behave.

Every test keeps two well-behaved clients (ALPHA and BRAVO: raw asyncio TCP
clients that send a self-report every 0.2 s and read everything) exchanging
positions while one attack runs.  Each position carries its sequence number in
its latitude, so a test can tell that positions sent *after* the attack started
(and after it ended) still cross.  For each attack the test also checks that
the server is still up and that the attack left a WARNING saying what was
dropped.

Only loopback traffic; every loop is bounded in iterations and in time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest
from takproto.proto import TakMessage

from fieldc2.protocol.cot_xml import MAX_DEPTH, format_time
from fieldc2.protocol.framing import MAX_DISCARD
from fieldc2.protocol.stream import MAX_REJECTS
from fieldc2.protocol.tak_v1 import stream_frame
from fieldc2.server import CommandPost
from fieldc2.sim.units import self_report
from fieldc2.transport.stream import ClientConnection
from tests.conftest import eventually, make_config

HOST = "127.0.0.1"
#: Seconds between two self-reports of a good client.
REPORT_INTERVAL = 0.2
#: Upper bounds that keep every client loop finite.
MAX_REPORTS = 400
MAX_READS = 100_000
MAX_RECEIVED = 64 * 1024 * 1024
#: Latitude encodes a report's sequence number: lat = BASE_LAT + seq * LAT_STEP.
BASE_LAT = 10.0
LAT_STEP = 1e-4
#: How long positions may take to cross before a test fails.
CROSS_TIMEOUT = 5.0
#: Longest any attack may run.
ATTACK_TIMEOUT = 20.0

_UID = re.compile(rb'<event\b[^>]*?\buid="([^"]*)"')
_LAT = re.compile(rb'<point\b[^>]*?\blat="([-0-9.]+)"')


def _passwd_markers() -> tuple[bytes, ...]:
    """Strings that would only be on the wire if /etc/passwd leaked."""
    markers = [b"root:x:0:0"]
    with contextlib.suppress(OSError):
        lines = [line for line in Path("/etc/passwd").read_bytes().splitlines() if b":" in line]
        markers.extend(lines[:3])
    return tuple(markers)


PASSWD_MARKERS = _passwd_markers()


def cot(uid: str, *, cot_type: str = "a-f-G-U-C", detail: str = "",
        lat: float = 10.5) -> bytes:
    """A CoT event with the given detail, inserted verbatim (no escaping)."""
    ms = int(time.time() * 1000)
    t = format_time(ms)
    return (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" how="m-g" time="{t}" start="{t}"'
        f' stale="{format_time(ms + 120_000)}">'
        f'<point lat="{lat}" lon="20.5" hae="0.0" ce="9.9" le="9.9"/>'
        f"<detail>{detail}</detail></event>"
    ).encode()


def proto_event(uid: str, *, callsign: str = "", group: str = "", xml_detail: str = "") -> bytes:
    """A TAK protocol v1 stream frame, built with takproto directly."""
    message = TakMessage()
    event = message.cotEvent
    event.type = "a-f-G-U-C"
    event.uid = uid
    event.how = "m-g"
    ms = int(time.time() * 1000)
    event.sendTime = event.startTime = ms
    event.staleTime = ms + 120_000
    event.lat, event.lon, event.hae, event.ce, event.le = 10.5, 20.5, 0.0, 9.9, 9.9
    if callsign:
        event.detail.contact.callsign = callsign
        event.detail.contact.endpoint = "*:-1:stcp"
    if group:
        event.detail.group.name = group
        event.detail.group.role = "Team Member"
    if xml_detail:
        event.detail.xmlDetail = xml_detail
    return stream_frame(message.SerializeToString())


def _events_in(data: bytes | bytearray) -> list[bytes]:
    return [bytes(part) + b"</event>" for part in data.split(b"</event>")[:-1]]


# --- clients -------------------------------------------------------------------


class GoodClient:
    """A well-behaved TAK client: reports every REPORT_INTERVAL, reads everything."""

    def __init__(self, name: str) -> None:
        self.uid = f"GOOD-{name}"
        self.callsign = name
        self.seq = 0
        """Sequence number of the next report (all lower ones are sent)."""
        self.raw = bytearray()
        self.events: list[bytes] = []
        self.latest: dict[str, int] = {}
        self._pending = bytearray()
        self._tasks: list[asyncio.Task[None]] = []
        self.local_port = 0

    async def start(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, port)
        self.local_port = self.writer.get_extra_info("sockname")[1]
        self._tasks = [asyncio.create_task(self._send_loop()),
                       asyncio.create_task(self._read_loop())]

    async def _send_loop(self) -> None:
        for _ in range(MAX_REPORTS):
            lat = BASE_LAT + self.seq * LAT_STEP
            self.writer.write(self_report(self.uid, self.callsign, lat, 20.0))
            self.seq += 1
            await self.writer.drain()
            await asyncio.sleep(REPORT_INTERVAL)

    async def _read_loop(self) -> None:
        for _ in range(MAX_READS):
            data = await self.reader.read(65536)
            if not data or len(self.raw) > MAX_RECEIVED:
                return
            self.raw += data
            self._pending += data
            *complete, rest = self._pending.split(b"</event>")
            self._pending = bytearray(rest)
            for part in complete:
                self._note(bytes(part) + b"</event>")

    def _note(self, event: bytes) -> None:
        self.events.append(event)
        uid, lat = _UID.search(event), _LAT.search(event)
        if uid is None or lat is None or not uid.group(1).startswith(b"GOOD-"):
            return
        seq = round((float(lat.group(1)) - BASE_LAT) / LAT_STEP)
        key = uid.group(1).decode()
        self.latest[key] = max(seq, self.latest.get(key, -1))

    def seen(self, other: GoodClient, seq: int) -> bool:
        """True once a report of ``other`` numbered ``seq`` or later arrived."""
        return self.latest.get(other.uid, -1) >= seq

    @property
    def alive(self) -> bool:
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class Attacker:
    """A raw connection that sends what it is told and keeps all it receives."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed = asyncio.Event()
        self.sent = 0
        self.port = 0
        self._task: asyncio.Task[None] | None = None

    async def connect(self, port: int) -> Attacker:
        self.reader, self.writer = await asyncio.open_connection(HOST, port)
        self.port = self.writer.get_extra_info("sockname")[1]
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            for _ in range(MAX_READS):
                data = await self.reader.read(65536)
                if not data or len(self.received) > MAX_RECEIVED:
                    return
                self.received += data
        except ConnectionError:
            return
        finally:
            self.closed.set()

    async def send(self, data: bytes, *, chunk: int = 64 * 1024, pause: float = 0.0) -> None:
        """Send ``data`` in chunks; stop quietly once the server hangs up."""
        for offset in range(0, len(data), chunk):
            if self.closed.is_set() or self.writer.is_closing():
                return
            piece = data[offset : offset + chunk]
            try:
                self.writer.write(piece)
                await self.writer.drain()
            except ConnectionError:
                return
            self.sent += len(piece)
            await asyncio.sleep(pause)

    async def wait_closed(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), timeout)
        return self.closed.is_set()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@contextlib.asynccontextmanager
async def good_pair(post: CommandPost) -> AsyncIterator[tuple[GoodClient, GoodClient]]:
    """ALPHA and BRAVO, connected and already seeing each other."""
    a, b = GoodClient("ALPHA"), GoodClient("BRAVO")
    try:
        await a.start(post.tcp_port)
        await b.start(post.tcp_port)
        await eventually(lambda: a.seen(b, 0) and b.seen(a, 0), CROSS_TIMEOUT)
        yield a, b
    finally:
        for client in (a, b):
            if client._tasks:
                await client.close()


@pytest.fixture
async def good(post: CommandPost) -> AsyncIterator[tuple[GoodClient, GoodClient]]:
    async with good_pair(post) as pair:
        yield pair


@contextlib.asynccontextmanager
async def attacker_on(port: int) -> AsyncIterator[Attacker]:
    attacker = await Attacker().connect(port)
    try:
        yield attacker
    finally:
        await attacker.close()


# --- checks --------------------------------------------------------------------


async def positions_cross(a: GoodClient, b: GoodClient) -> None:
    """Reports sent from now on reach the other client."""
    mark_a, mark_b = a.seq, b.seq
    await eventually(lambda: b.seen(a, mark_a) and a.seen(b, mark_b), CROSS_TIMEOUT)


async def under_attack(post: CommandPost, a: GoodClient, b: GoodClient,
                       attack: Awaitable[object], *, during: bool = False) -> None:
    """Run ``attack``; positions sent after it started and after it ended must cross.

    With ``during``, the first ones must cross while the attack is still going
    (for attacks paced to last about a second or more).
    """
    mark_a, mark_b = a.seq, b.seq
    task = asyncio.ensure_future(attack)
    try:
        await eventually(lambda: b.seen(a, mark_a) and a.seen(b, mark_b), CROSS_TIMEOUT)
        if during:
            assert not task.done(), "positions only crossed after the attack was over"
        await asyncio.wait_for(task, ATTACK_TIMEOUT)
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await positions_cross(a, b)
    assert a.alive and b.alive, "a good client lost its connection"
    await assert_server_up(post)


async def assert_server_up(post: CommandPost) -> None:
    assert all(not task.done() for task in post._tasks), "a server task died"
    assert post._servers[0].is_serving()
    # A brand-new client is still served: it gets the protocol offer.
    reader, writer = await asyncio.open_connection(HOST, post.tcp_port)
    try:
        writer.write(self_report("PROBE", "PROBE", 10.9, 20.9, group="Probe"))
        await writer.drain()
        reply = await asyncio.wait_for(reader.readuntil(b"</event>"), 3.0)
        assert b"t-x-takp-v" in reply
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def fieldc2_warnings(caplog: pytest.LogCaptureFixture, port: int) -> list[str]:
    """WARNING (or worse) lines fieldc2 logged about the client on ``port``."""
    tag = f"@{HOST}:{port}:"
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("fieldc2") and r.levelno >= logging.WARNING
            and tag in r.getMessage()]


def assert_warned(caplog: pytest.LogCaptureFixture, port: int, pattern: str) -> None:
    lines = fieldc2_warnings(caplog, port)
    assert any(re.search(pattern, line) for line in lines), (
        f"no WARNING matching {pattern!r} about the client on port {port}; got {lines}")


def assert_nothing_from(prefix: bytes, *clients: GoodClient) -> None:
    for client in clients:
        leaked = [e[:120] for e in client.events if (m := _UID.search(e)) and
                  m.group(1).startswith(prefix)]
        assert not leaked, f"{client.callsign} received hostile events: {leaked}"


# --- a. an event that never ends ----------------------------------------------


async def test_unterminated_event_of_10_mb(post: CommandPost, good: tuple[GoodClient, GoodClient],
                                           caplog: pytest.LogCaptureFixture) -> None:
    a, b = good
    payload = b"<event " + b"a" * (10 * 1024 * 1024)
    async with attacker_on(post.tcp_port) as attacker:

        async def attack() -> None:
            await attacker.send(payload, chunk=16 * 1024, pause=0.01)
            await attacker.wait_closed(5.0)

        await under_attack(post, a, b, attack(), during=True)
        assert attacker.closed.is_set(), "the server kept a connection sending endless garbage"
        assert attacker.sent < len(payload), "the server read all 10 MB before giving up"
        assert attacker.sent > MAX_DISCARD
    assert_warned(caplog, attacker.port, r"dropped a message: no </event> within \d+ bytes")
    assert_warned(caplog, attacker.port, r"closing: \d+ bytes without a usable event")


# --- b. billion laughs ---------------------------------------------------------


def _lol_doctype(levels: int = 9) -> str:
    entities = ['<!ENTITY lol0 "lol">']
    entities += [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, levels + 1)]
    return f"<!DOCTYPE event [{''.join(entities)}]>"


def _billion_laughs(placement: str) -> bytes:
    event = cot("LOL-1", detail='<contact callsign="&lol9;" endpoint="*:-1:stcp"/>'
                                "<remarks>&lol9;</remarks>")
    doctype = _lol_doctype().encode()
    if placement == "prolog":
        return b'<?xml version="1.0"?>' + doctype + event
    head, _, tail = event.partition(b">")
    return head + b">" + doctype + tail  # inside the <event> element


@pytest.mark.parametrize("placement", ["prolog", "inside-event"])
async def test_billion_laughs(post: CommandPost, good: tuple[GoodClient, GoodClient],
                              caplog: pytest.LogCaptureFixture, placement: str) -> None:
    a, b = good
    async with attacker_on(post.tcp_port) as attacker:

        async def attack() -> None:
            await attacker.send(_billion_laughs(placement))
            await attacker.send(cot("LOL-2", detail="<remarks>&lol9;</remarks>"))

        await under_attack(post, a, b, attack())
        await positions_cross(a, b)
    assert_nothing_from(b"LOL-", a, b)
    lines = fieldc2_warnings(caplog, attacker.port)
    assert sum("dropped a message" in line for line in lines) >= 2, lines
    assert_warned(caplog, attacker.port, r"dropped a message: .*(non-event data|malformed XML)")


# --- c. external entities ------------------------------------------------------

XXE_DTD = '<!DOCTYPE event [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
XXE_PE_DTD = '<!DOCTYPE event [<!ENTITY % xxe SYSTEM "file:///etc/passwd"> %xxe;]>'

XML_XXE = [
    # Classic: DOCTYPE in the prolog, entity in the remarks text.
    ('<?xml version="1.0"?>' + XXE_DTD).encode() + cot("XXE-remarks",
                                                       detail="<remarks>&xxe;</remarks>"),
    # The same entity in an attribute (the callsign) and in the uid.
    XXE_DTD.encode() + cot("XXE-attribute",
                           detail='<contact callsign="&xxe;" endpoint="*:-1:stcp"/>'),
    XXE_DTD.encode() + cot("XXE-uid-&xxe;"),
    # A parameter entity, expanded inside the DTD itself.
    XXE_PE_DTD.encode() + cot("XXE-parameter", detail="<remarks>&xxe;</remarks>"),
    # No DOCTYPE: an undefined entity in text and in an attribute.
    cot("XXE-bare", detail='<remarks>&xxe;</remarks><contact callsign="&xxe;"/>'),
    # The DOCTYPE inside the event element.
    cot("XXE-inside", detail="<remarks>&xxe;</remarks>").replace(b"<point", XXE_DTD.encode()
                                                                 + b"<point", 1),
]


async def _check_no_leak(post: CommandPost, *received: bytes | bytearray) -> None:
    stored = await post.store.history(limit=10_000)
    everything = [*received, *(s.xml for s in stored), *(i.xml() for i in post.recent),
                  *(i.xml() for i in post.picture.entries.values())]
    for data in everything:
        for marker in PASSWD_MARKERS:
            assert marker not in data, f"/etc/passwd content {marker!r} left the server"
    assert not any(s.uid.startswith("XXE-") for s in stored)


@pytest.mark.parametrize("wire", ["xml", "proto"])
async def test_external_entities(post: CommandPost, good: tuple[GoodClient, GoodClient],
                                 caplog: pytest.LogCaptureFixture, wire: str) -> None:
    a, b = good
    async with attacker_on(post.tcp_port) as attacker:
        # The attacker first joins the good clients' group, so that anything it
        # got through would be broadcast to them (and to itself, via the picture).
        if wire == "xml":
            hello = self_report("ATTACKER", "MALLORY", 10.6, 20.6)
            hostile = XML_XXE
        else:
            hello = proto_event("ATTACKER", callsign="MALLORY", group="Cyan")
            hostile = [
                proto_event("XXE-proto-remarks", xml_detail="<remarks>&xxe;</remarks>"),
                proto_event("XXE-proto-attribute", xml_detail='<contact callsign="&xxe;"/>'),
                proto_event("XXE-proto-doctype",
                            xml_detail=XXE_DTD + "<remarks>&xxe;</remarks>"),
            ]
        await attacker.send(hello)
        await eventually(lambda: any(b'uid="ATTACKER"' in e for e in a.events), CROSS_TIMEOUT)

        async def attack() -> None:
            for message in hostile:
                await attacker.send(message)
                await asyncio.sleep(0.05)

        await under_attack(post, a, b, attack())
        await positions_cross(a, b)
        assert not attacker.closed.is_set()
        await asyncio.sleep(0.1)
        await _check_no_leak(post, a.raw, b.raw, attacker.received)
    assert_nothing_from(b"XXE-", a, b)
    lines = [line for line in fieldc2_warnings(caplog, attacker.port)
             if "dropped a message" in line]
    assert len(lines) >= len(hostile), lines  # at least one per hostile message
    for line in lines:
        assert re.search(r"DOCTYPE|entit|malformed|non-event data", line), line
    for marker in PASSWD_MARKERS:
        assert marker.decode() not in caplog.text


# --- d. random bytes -----------------------------------------------------------


@pytest.mark.parametrize("start", ["raw", "lt", "bf"])
async def test_random_bytes(post: CommandPost, good: tuple[GoodClient, GoodClient],
                            caplog: pytest.LogCaptureFixture, start: str) -> None:
    a, b = good
    noise = os.urandom(1024 * 1024)
    if start == "lt":
        noise = b"<" + noise  # gets past format detection into the XML framer
    elif start == "bf":
        noise = b"\xbf" + noise  # gets past format detection into the TAK v1 framer
    elif noise[:1] in (b"<", b"\xbf", b" ", b"\t", b"\r", b"\n"):
        noise = b"\x00" + noise[1:]
    async with attacker_on(post.tcp_port) as attacker:

        async def attack() -> None:
            await attacker.send(noise, chunk=32 * 1024, pause=0.002)

        await under_attack(post, a, b, attack())
        if start in ("raw", "bf"):
            assert await attacker.wait_closed(3.0), "the server kept a connection sending noise"
    expected = {
        "raw": r"closing: unrecognised protocol",
        "lt": r"dropped a message: no </event> within",
        "bf": r"closing: .*(TAK v1|0x|varint|bad messages)",
    }[start]
    assert_warned(caplog, attacker.port, expected)


# --- e. deep nesting -----------------------------------------------------------


@pytest.mark.parametrize(
    ("levels", "closed", "max_event_size", "expected"),
    [
        # 700 KB: the framer drops it as oversize before any parser sees it.
        (100_000, True, None, r"no </event> within|exceeds the"),
        # The same with a limit that lets it through: the parser stops at MAX_DEPTH.
        (100_000, True, 1024 * 1024, rf"nesting deeper than {MAX_DEPTH}"),
        # Opening tags only, small enough for the default limit.
        (80_000, False, None, rf"nesting deeper than {MAX_DEPTH}"),
    ],
    ids=["100k-oversize", "100k-parsed", "80k-unclosed"],
)
async def test_deep_nesting(tmp_path: Path, caplog: pytest.LogCaptureFixture, levels: int,
                            closed: bool, max_event_size: int | None, expected: str) -> None:
    overrides = {} if max_event_size is None else {"max_event_size": max_event_size}
    body = "<a>" * levels + ("</a>" * levels if closed else "")
    bomb = cot("NEST-1", detail=body)
    async with (CommandPost(make_config(tmp_path, **overrides)) as post, good_pair(post) as (a, b),
                attacker_on(post.tcp_port) as attacker):
        await under_attack(post, a, b, attacker.send(bomb, chunk=16 * 1024, pause=0.002))
        await positions_cross(a, b)
    assert_nothing_from(b"NEST-", a, b)
    assert_warned(caplog, attacker.port, expected)


# --- f. connection churn -------------------------------------------------------

CHURN_CONNECTIONS = 1000
CHURN_WAVE = 100
HALF_EVENT = cot("CHURN-HALF", detail="<remarks>never finished</remarks>")[:150]


async def _churn(port: int) -> list[int]:
    """Open and drop CHURN_CONNECTIONS connections.

    Returns the ports of the connections that sent half an event and then
    closed normally (so the server certainly read those bytes).

    Every fourth connection just connects and closes, every fourth sends half
    an event and closes, every fourth sends a whole self-report (a new uid) and
    closes, and every fourth sends half an event and resets (SO_LINGER 0).
    """
    half_senders: list[int] = []

    async def one(index: int) -> None:
        _reader, writer = await asyncio.open_connection(HOST, port)
        kind = index % 4
        try:
            if kind in (1, 3):
                writer.write(HALF_EVENT)
                if kind == 1:
                    half_senders.append(writer.get_extra_info("sockname")[1])
            elif kind == 2:
                writer.write(self_report(f"CHURN-{index}", f"CHURN{index}", 10.7, 20.7))
            await writer.drain()
            await asyncio.sleep(0.01)
            if kind == 3:
                writer.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    for start in range(0, CHURN_CONNECTIONS, CHURN_WAVE):
        await asyncio.gather(*(one(i) for i in range(start, start + CHURN_WAVE)))
        await asyncio.sleep(0.05)
    return half_senders


async def _churn_attack(post: CommandPost, a: GoodClient, b: GoodClient) -> tuple[set[int],
                                                                                  list[int]]:
    good_ids = {c.id for c in post.clients.values() if c.uid in (a.uid, b.uid)}
    assert len(good_ids) == 2
    connections_before = post.stats.connections
    started = time.monotonic()
    result: list[list[int]] = []

    async def attack() -> None:
        result.append(await _churn(post.tcp_port))

    await under_attack(post, a, b, attack(), during=True)
    elapsed = time.monotonic() - started
    assert elapsed < 10.0, f"{CHURN_CONNECTIONS} connections took {elapsed:.1f} s"
    assert post.stats.connections - connections_before >= CHURN_CONNECTIONS
    await eventually(lambda: set(post.clients) == good_ids, 5.0)
    return good_ids, result[0]


async def test_connection_churn_leaves_only_the_good_clients(
        post: CommandPost, good: tuple[GoodClient, GoodClient]) -> None:
    a, b = good
    good_ids, _ = await _churn_attack(post, a, b)
    router = post.router
    assert set(router.peers) == good_ids
    for key in (router.default_key, frozenset({"Cyan"})):
        assert {p.id for p in router.audience(key)} <= good_ids
    assert {p.id for p in router.audience(frozenset({"Cyan"}))} == good_ids
    for index in (router._by_uid, router._by_callsign):
        referenced = set().union(*index.values()) if index else set()
        assert referenced <= good_ids, f"router still references gone peers {referenced}"
    await positions_cross(a, b)


async def test_connection_churn_does_not_grow_the_router_indexes(
        post: CommandPost, good: tuple[GoodClient, GoodClient]) -> None:
    """Peers that came and went leave nothing behind in the uid/callsign indexes."""
    a, b = good
    await _churn_attack(post, a, b)
    router = post.router
    for name, index in (("_by_uid", router._by_uid), ("_by_callsign", router._by_callsign)):
        stale = sorted(key for key, ids in index.items() if not ids)
        assert not stale, (f"Router.{name} keeps {len(stale)} empty entries for gone peers, "
                           f"e.g. {stale[:3]}: it grows with every uid ever seen")


async def test_connection_churn_logs_dropped_partial_events(
        post: CommandPost, good: tuple[GoodClient, GoodClient],
        caplog: pytest.LogCaptureFixture) -> None:
    """A connection that hangs up in the middle of an event loses it: say so."""
    a, b = good
    _, half_senders = await _churn_attack(post, a, b)
    assert len(half_senders) == CHURN_CONNECTIONS // 4
    silent = [port for port in half_senders if not fieldc2_warnings(caplog, port)]
    assert not silent, (
        f"{len(silent)} of {len(half_senders)} connections closed in the middle of an event "
        "and the unfinished bytes were dropped without a WARNING")
    for port in half_senders[:20]:
        assert_warned(caplog, port, r"unfinished|incomplete|partial|truncated")


# --- g. a flood of framed but invalid events ----------------------------------

_BAD_EVENTS = [
    '<event version="2.0" uid="BAD-{n}"></event>',  # no type, no times
    '<event version="2.0" uid="BAD-{n}" type="a-f-G" time="yesterday" start="x" stale="y">'
    "</event>",
    '<event version="2.0" uid="BAD-{n}" type="a-f-G" time="2024-01-01T00:00:00Z"'
    ' start="2024-01-01T00:00:00Z" stale="2099-01-01T00:00:00Z"><point lat="91" lon="0"/>'
    "</event>",
    '<event version="2.0" uid="BAD-{n}" type="a-f-G" time="2024-01-01T00:00:00Z"'
    ' start="2024-01-01T00:00:00Z" stale="2099-01-01T00:00:00Z"><point lat="nan" lon="0"/>'
    "</event>",
    '<event version="2.0" uid="BAD-{n}" type="a-f-G"><detail><unclosed></detail></event>',
    '<event version="2.0" uid="" type="" time="" start="" stale=""></event>',
    "<notcot>BAD-{n}</notcot></event>",
]


async def test_malformed_event_flood(post: CommandPost, good: tuple[GoodClient, GoodClient],
                                     caplog: pytest.LogCaptureFixture) -> None:
    a, b = good
    count = MAX_REJECTS + 15
    flood = "".join(_BAD_EVENTS[n % len(_BAD_EVENTS)].format(n=n) for n in range(count))
    async with attacker_on(post.tcp_port) as attacker:

        async def attack() -> None:
            await attacker.send(flood.encode(), chunk=1024, pause=0.001)
            await attacker.wait_closed(3.0)

        await under_attack(post, a, b, attack())
        assert attacker.closed.is_set(), f"{count} bad events in a row did not get it closed"
    assert_nothing_from(b"BAD-", a, b)
    lines = fieldc2_warnings(caplog, attacker.port)
    dropped = [line for line in lines if "dropped a message" in line]
    assert MAX_REJECTS <= len(dropped) <= MAX_REJECTS + 1, lines
    assert_warned(caplog, attacker.port, rf"closing: more than {MAX_REJECTS} bad messages")


# --- h. one event over many tiny reads -----------------------------------------


@pytest.mark.parametrize("split", ["one-byte", "random-1-to-13"])
async def test_event_split_across_tiny_reads(post: CommandPost,
                                             good: tuple[GoodClient, GoodClient],
                                             caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch, split: str) -> None:
    a, b = good
    reads: collections.Counter[int] = collections.Counter()
    original = ClientConnection.data_received

    def counting(self: ClientConnection, data: bytes) -> None:
        reads[self.id] += 1
        original(self, data)

    monkeypatch.setattr(ClientConnection, "data_received", counting)

    report = self_report("GOOD-CHARLIE", "CHARLIE", 10.8, 20.8)
    # A marker whose text holds multi-byte UTF-8 (split mid-character here) and an
    # escaped end tag that must not end the frame.
    marker = cot("SPLIT-MARKER-1", cot_type="b-m-p-s-m",
                 detail='<contact callsign="Grüße ✓ 東京"/>'
                        "<remarks>not the end: &lt;/event&gt; ✓ 東京</remarks>")
    data = report + b"\n" + marker
    rng = random.Random(20240501)
    sizes = [1] * len(data) if split == "one-byte" else [rng.randint(1, 13) for _ in data]
    _reader, writer = await asyncio.open_connection(HOST, post.tcp_port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    port = writer.get_extra_info("sockname")[1]
    try:

        async def trickle() -> None:
            offset = 0
            for size in sizes:
                if offset >= len(data):
                    break
                writer.write(data[offset : offset + size])
                offset += size
                await writer.drain()
                await asyncio.sleep(0.001)

        await under_attack(post, a, b, trickle(), during=split == "one-byte")
        expected_report = report[report.index(b"<event") :]
        for client in (a, b):
            await eventually(lambda c=client: marker in c.events, 3.0)
            assert expected_report in client.events, "the split self-report arrived altered"
            assert client.events.count(marker) == 1
        charlie = next(c for c in post.clients.values() if c.uid == "GOOD-CHARLIE")
        assert charlie.callsign == "CHARLIE"
        assert charlie.stream.rejected_total == 0
        if split == "one-byte":
            assert reads[charlie.id] >= len(data) // 2, "the bytes were not actually split"
        else:
            assert reads[charlie.id] >= 50
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert fieldc2_warnings(caplog, port) == []



# --- extra: forged log lines ---------------------------------------------------


async def test_callsign_cannot_forge_log_lines(post: CommandPost,
                                               good: tuple[GoodClient, GoodClient],
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A callsign is the peer's text: it must not start new lines in the server log."""
    a, b = good
    forged = "FORGED fieldc2.server: operator ADMIN logged in"
    callsign = f"MALLORY&#10;CRITICAL {forged}&#13;&#10;WARNING x" + "&#9;" * 3
    async with attacker_on(post.tcp_port) as attacker:

        async def attack() -> None:
            await attacker.send(self_report("FORGER", callsign, 10.6, 20.6))
            await asyncio.sleep(0.1)
            await attacker.send(b'<event version="2.0" uid="FORGER-bad"></event>')  # logged

        await under_attack(post, a, b, attack())
    lines = fieldc2_warnings(caplog, attacker.port)
    assert lines, "the bad event was not logged"
    for line in lines:
        assert not re.search(r"[\x00-\x1f\x7f]", line), (
            f"a peer-supplied callsign put control characters in the log: {line!r}")
