"""End-to-end interoperability: real, independent TAK clients against a running post.

XML clients are pytak (PyPI): ``pytak.protocol_factory`` opens the TCP stream,
``pytak.TXWorker.send_data`` writes and ``pytak.RXWorker.readcot`` reads up to
each ``</event>``.  TAK protocol v1 clients send frames made by takproto
(``xml2proto(..., TAKProtoVer.STREAM)``), split what they receive with our
``ProtoStreamFramer`` and decode it with takproto's ``TakMessage``.  Nothing
here goes through the server's own encoders on the client side.

The helpers at the top are shared with the other end-to-end test modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import warnings
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from configparser import ConfigParser
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import takproto
from takproto.proto import TakMessage

from fieldc2.protocol.framing import ProtoStreamFramer
from fieldc2.server import CommandPost
from fieldc2.sim.units import chat, self_report

with warnings.catch_warnings():
    # pytak warns at import time that its optional crypto/aiohttp extras are
    # missing; the TCP client used here needs neither.
    warnings.simplefilter("ignore")
    import pytak

#: Longest any single wait may take before the test fails.
TIMEOUT = 3.0
#: Long enough for several fan-out ticks (the test config ticks every 20 ms):
#: whatever was going to be delivered has been by then.
SETTLE = 0.3

# --- messages as a client sees them ----------------------------------------------


@dataclass
class Msg:
    """One received event, whatever wire format it came in."""

    uid: str
    type: str
    lat: float
    detail: ET.Element
    raw: bytes
    time: str = ""
    stale_ms: int = 0

    @property
    def callsign(self) -> str:
        contact = self.detail.find("contact")
        return contact.get("callsign", "") if contact is not None else ""

    def __repr__(self) -> str:
        return f"<Msg {self.type} {self.uid}>"


def parse_xml(data: bytes) -> Msg:
    root = ET.fromstring(data.strip())
    assert root.tag == "event", data[:80]
    point = root.find("point")
    detail = root.find("detail")
    stale = datetime.fromisoformat(root.get("stale", "1970-01-01T00:00:00Z"))
    return Msg(
        uid=root.get("uid", ""), type=root.get("type", ""),
        lat=float(point.get("lat", "0")) if point is not None else 0.0,
        detail=detail if detail is not None else ET.Element("detail"),
        raw=data, time=root.get("time", ""), stale_ms=int(stale.timestamp() * 1000))


def parse_v1(payload: bytes) -> Msg | None:
    """Decode a TakMessage payload with takproto's classes; None for control-only."""
    message = TakMessage.FromString(payload)
    if not message.HasField("cotEvent"):
        return None
    cot = message.cotEvent
    detail = ET.fromstring(f"<detail>{cot.detail.xmlDetail}</detail>")
    if cot.detail.HasField("contact"):
        ET.SubElement(detail, "contact", callsign=cot.detail.contact.callsign,
                      endpoint=cot.detail.contact.endpoint)
    if cot.detail.HasField("group"):
        ET.SubElement(detail, "__group", name=cot.detail.group.name,
                      role=cot.detail.group.role)
    return Msg(uid=cot.uid, type=cot.type, lat=cot.lat, detail=detail, raw=payload,
               stale_ms=cot.staleTime)


# --- events built by independent code (pytak, takproto, our sim helpers) ---------


def iso(offset: float = 0.0) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cot(uid: str, cot_type: str = "a-f-G-U-C", *, lat: float = 10.0, lon: float = 20.0,
        callsign: str | None = None, group: str | None = None, stale: float = 600.0,
        time_offset: float = 0.0, how: str = "m-g",
        children: Iterable[ET.Element] = ()) -> bytes:
    """A CoT event built with pytak's own builders (``pytak.cot_event``)."""
    detail = pytak.cot_detail(*children, flow_tag=False)
    if group is not None:
        ET.SubElement(detail, "__group", name=group, role="Team Member")
    event = pytak.cot_event(lat=lat, lon=lon, uid=uid, cot_type=cot_type, how=how,
                            detail=detail, callsign=callsign, stale=max(1, int(stale)))
    if time_offset:
        event.set("time", iso(time_offset))
        event.set("start", iso(time_offset))
    if stale != int(stale) or stale < 1:
        event.set("stale", iso(stale))
    data: bytes = pytak.serialize_cot(event)
    return data


def link(uid: str, **attrs: str) -> ET.Element:
    return ET.Element("link", uid=uid, **attrs)


def delete_event(target_uid: str) -> bytes:
    """What ATAK sends when a marker is deleted: ``t-x-d-d`` linking to it."""
    return cot(f"delete-{uuid.uuid4().hex[:8]}", "t-x-d-d", lat=0.0, lon=0.0, stale=20,
               how="h-g-i-g-o",
               children=[link(target_uid, relation="none", type="none"),
                         ET.Element("__forcedelete")])


def emergency(uid: str, sender_uid: str, callsign: str, *, cancel: bool = False,
              stale: float = 600.0) -> bytes:
    """A 911 alert (``b-a-o-tbl``) or its cancellation (``b-a-o-can``)."""
    alarm = ET.Element("emergency")
    if cancel:
        alarm.set("cancel", "true")
    else:
        alarm.set("type", "911 Alert")
    alarm.text = callsign
    return cot(uid, "b-a-o-can" if cancel else "b-a-o-tbl", callsign=f"{callsign}-Alert",
               stale=stale, children=[link(sender_uid, type="a-f-G-U-C", relation="p-p"), alarm])


def takp_request(version: int = 1) -> bytes:
    control = ET.Element("TakControl")
    ET.SubElement(control, "TakRequest", version=str(version))
    return cot("protouid", "t-x-takp-q", lat=0.0, lon=0.0, stale=60, children=[control])


# --- clients ---------------------------------------------------------------------


@dataclass
class Client:
    """What every test client has: a name, what it sent and what it received."""

    name: str
    uid: str = ""
    received: list[Msg] = field(default_factory=list)
    sent_uids: set[str] = field(default_factory=set)
    _pump: asyncio.Task[None] | None = None
    _writer: asyncio.StreamWriter | None = None

    def uids(self) -> set[str]:
        return {m.uid for m in self.received}

    def of(self, uid: str) -> list[Msg]:
        return [m for m in self.received if m.uid == uid]

    def types(self, cot_type: str) -> list[Msg]:
        return [m for m in self.received if m.type == cot_type]

    async def expect(self, check: Callable[[Msg], bool], what: str = "",
                     timeout: float = TIMEOUT) -> Msg:
        """The first received message matching ``check``, waiting up to ``timeout``."""
        async def until() -> Msg:
            while True:
                for message in self.received:
                    if check(message):
                        return message
                await asyncio.sleep(0.01)
        try:
            return await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.name} did not receive {what or check} within {timeout} s; "
                f"got {self.received}") from None

    async def expect_uid(self, uid: str, cot_type: str | None = None,
                         timeout: float = TIMEOUT) -> Msg:
        return await self.expect(
            lambda m: m.uid == uid and (cot_type is None or m.type == cot_type),
            f"{cot_type or 'an event'} uid={uid}", timeout)

    def _note(self, message: Msg | None) -> None:
        if message is not None:
            self.received.append(message)

    def _note_sent(self, data: bytes) -> None:
        with contextlib.suppress(ET.ParseError):
            self.sent_uids.add(parse_xml(data).uid)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(self._writer.wait_closed(), TIMEOUT)


@dataclass
class XmlClient(Client):
    """pytak over TCP, CoT XML both ways."""

    tx: pytak.TXWorker | None = None
    rx: pytak.RXWorker | None = None

    @classmethod
    async def connect(cls, port: int, name: str, uid: str = "") -> XmlClient:
        parser = ConfigParser()
        parser[name] = {"COT_URL": f"tcp://127.0.0.1:{port}"}
        config = parser[name]
        reader, writer = await asyncio.wait_for(pytak.protocol_factory(config), TIMEOUT)
        client = cls(name, uid or f"{name}-{uuid.uuid4().hex[:8]}", _writer=writer)
        client.tx = pytak.TXWorker(asyncio.Queue(), config, writer)
        client.rx = pytak.RXWorker(asyncio.Queue(), config, reader)
        client._pump = asyncio.create_task(client._read())
        return client

    async def _read(self) -> None:
        assert self.rx is not None
        while (data := await self.rx.readcot()) is not None:
            self._note(parse_xml(data))

    async def send(self, data: bytes) -> None:
        assert self.tx is not None
        self._note_sent(data)
        await asyncio.wait_for(self.tx.send_data(data), TIMEOUT)

    async def report(self, callsign: str | None = None, group: str | None = "Cyan",
                     lat: float = 45.0, lon: float = 7.0) -> None:
        """An ATAK-shaped self-report; without ``group`` a pytak one with no team."""
        if group is None:
            await self.send(cot(self.uid, callsign=callsign or self.name, lat=lat, lon=lon))
        else:
            await self.send(self_report(self.uid, callsign or self.name, lat, lon, group=group))


@dataclass
class V1Client(Client):
    """A TAK protocol v1 stream client (what pytak does with ``TAK_PROTO=1``)."""

    reader: asyncio.StreamReader | None = None
    framer: ProtoStreamFramer = field(default_factory=ProtoStreamFramer)
    switched: bool = False

    @classmethod
    async def connect(cls, port: int, name: str, uid: str = "", *,
                      negotiate: bool = False, first_xml: bytes = b"") -> V1Client:
        """Straight into v1 (first byte 0xbf), or XML first then ``t-x-takp`` negotiation."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        client = cls(name, uid or f"{name}-{uuid.uuid4().hex[:8]}", _writer=writer,
                     reader=reader)
        try:
            if negotiate:
                await client._negotiate(first_xml)
            else:
                # pytak TAK_PROTO=1 opens with its takPing hello, already in v1.
                await client.send(pytak.hello_event(f"{client.uid}-hello"))
        except BaseException:
            await client.close()
            raise
        client.switched = True
        client._pump = asyncio.create_task(client._read())
        return client

    async def _read_xml(self) -> Msg:
        assert self.reader is not None
        data = await asyncio.wait_for(self.reader.readuntil(b"</event>"), TIMEOUT)
        message = parse_xml(data)
        self._note(message)
        return message

    async def _negotiate(self, first_xml: bytes) -> None:
        assert self._writer is not None
        first = first_xml or self_report(self.uid, self.name, 45.0, 7.0)
        self._note_sent(first)
        self._writer.write(first)
        while (offer := await self._read_xml()).type != "t-x-takp-v":
            pass
        support = offer.detail.find("TakControl/TakProtocolSupport")
        assert support is not None and support.get("version") == "1", offer.raw
        self._writer.write(takp_request(1))
        while (answer := await self._read_xml()).type != "t-x-takp-r":
            pass
        response = answer.detail.find("TakControl/TakResponse")
        assert response is not None and response.get("status") == "true", answer.raw

    async def _read(self) -> None:
        assert self.reader is not None
        while data := await self.reader.read(65536):
            self.framer.feed(data)
            while (payload := self.framer.next_frame()) is not None:
                self._note(parse_v1(payload))

    async def send(self, xml: bytes) -> None:
        assert self._writer is not None
        frame = bytes(takproto.xml2proto(xml, takproto.TAKProtoVer.STREAM))
        assert frame[0] == 0xBF
        self._note_sent(xml)
        self._writer.write(frame)
        await asyncio.wait_for(self._writer.drain(), TIMEOUT)

    async def report(self, callsign: str | None = None, group: str | None = "Cyan",
                     lat: float = 45.0, lon: float = 7.0) -> None:
        await self.send(self_report(self.uid, callsign or self.name, lat, lon,
                                    group=group or "Cyan"))


Connect = Callable[..., Awaitable[Client]]


@contextlib.asynccontextmanager
async def clients_of(post: CommandPost) -> AsyncIterator[Connect]:
    """A factory for clients of ``post``; every client is closed on the way out."""
    made: list[Client] = []

    async def connect(name: str, kind: str = "xml", **kwargs: object) -> Client:
        client: Client
        if kind == "xml":
            client = await XmlClient.connect(post.tcp_port, name, **kwargs)
        else:
            client = await V1Client.connect(post.tcp_port, name, **kwargs)
        made.append(client)
        return client

    try:
        yield connect
    finally:
        for client in made:
            await client.close()


@pytest.fixture
async def connect(post: CommandPost) -> AsyncIterator[Connect]:
    async with clients_of(post) as factory:
        yield factory


def never_own(*clients: Client) -> None:
    for client in clients:
        echoed = client.uids() & client.sent_uids
        assert not echoed, f"{client.name} received its own events back: {echoed}"


# --- 1. mixed fleet ---------------------------------------------------------------


async def test_xml_and_direct_v1_clients_see_each_other(connect: Connect) -> None:
    alpha = await connect("ALPHA")
    bravo = await connect("BRAVO")
    charlie = await connect("CHARLIE", kind="v1")
    fleet = (alpha, bravo, charlie)
    for client in fleet:
        await client.report(lat=45.1)
    for client in fleet:
        await client.report(lat=45.2)  # a second position, as a moving unit sends
    for client in fleet:
        for other in fleet:
            if other is not client:
                await client.expect(lambda m, o=other: m.uid == o.uid and m.lat == 45.2,
                                    f"the latest position of {other.name}")
    # XML from pytak reached the v1 client with its typed contact; v1 reached XML.
    assert charlie.of(alpha.uid)[-1].callsign == "ALPHA"
    assert alpha.of(charlie.uid)[-1].callsign == "CHARLIE"
    group = alpha.of(charlie.uid)[-1].detail.find("__group")
    assert group is not None and group.get("name") == "Cyan"
    await asyncio.sleep(SETTLE)
    never_own(*fleet)


# --- 2. negotiated v1 -------------------------------------------------------------


def _custom_children(callsign: str) -> list[ET.Element]:
    custom = ET.Element("fieldc2test", foo="bar")
    ET.SubElement(custom, "x")
    return [ET.Element("uid", Droid=callsign), custom]


def _assert_custom_detail(message: Msg, callsign: str) -> None:
    droid = message.detail.find("uid")
    assert droid is not None and droid.get("Droid") == callsign, message.raw
    custom = message.detail.find("fieldc2test")
    assert custom is not None and custom.get("foo") == "bar", message.raw
    assert [child.tag for child in custom] == ["x"], message.raw


async def test_negotiated_v1_exchanges_with_xml_both_ways(connect: Connect) -> None:
    xml = await connect("XRAY")
    v1 = await connect("VICTOR", kind="v1", negotiate=True)
    # The handshake itself is checked inside V1Client._negotiate: takp-v offered,
    # takp-q sent, takp-r status="true" received.
    assert [m.type for m in v1.received if m.type.startswith("t-x-takp")] == [
        "t-x-takp-v", "t-x-takp-r"]
    await xml.send(cot(xml.uid, callsign="XRAY", group="Cyan", lat=46.5,
                       children=_custom_children("XRAY")))
    from_xml = await v1.expect_uid(xml.uid)  # arrived as a v1 frame
    assert from_xml.callsign == "XRAY" and from_xml.lat == 46.5
    _assert_custom_detail(from_xml, "XRAY")

    await v1.send(cot(v1.uid, callsign="VICTOR", group="Cyan", lat=47.5,
                      children=_custom_children("VICTOR")))
    from_v1 = await xml.expect(lambda m: m.uid == v1.uid and m.lat == 47.5,
                               "VICTOR's v1 report")  # arrived as XML
    assert from_v1.callsign == "VICTOR" and from_v1.lat == 47.5
    _assert_custom_detail(from_v1, "VICTOR")
    await asyncio.sleep(SETTLE)
    never_own(xml, v1)


# --- 3. chat ----------------------------------------------------------------------


def chat_to_uid(sender: Client, text: str, to_uid: str) -> bytes:
    return chat(sender.uid, sender.name, text, to_callsign="X").replace(
        b'<dest callsign="X"/>', f'<dest uid="{to_uid}"/>'.encode())


def read_receipt(reader: Client, chat_uid: str, to_uid: str) -> bytes:
    """ATAK's ``b-t-f-r`` for the chat ``chat_uid``, directed back to its sender.

    As in ATAK, the receipt's uid is the chat's message id (the last part of
    ``GeoChat.<sender>.<room>.<message id>``), not the chat event's uid.
    """
    original_uid = chat_uid.rsplit(".", 1)[-1]
    chat_el = ET.Element("__chat", id=to_uid, chatroom=reader.name,
                         senderCallsign=reader.name, groupOwner="false", messageId=original_uid)
    ET.SubElement(chat_el, "chatgrp", id=to_uid, uid0=reader.uid, uid1=to_uid)
    marti = ET.Element("marti")
    ET.SubElement(marti, "dest", uid=to_uid)
    return cot(original_uid, "b-t-f-r", how="h-g-i-g-o", stale=86400,
               children=[chat_el, link(reader.uid, type="a-f-G-U-C", relation="p-p"), marti])


async def test_directed_all_chat_and_receipts(connect: Connect) -> None:
    alpha, bravo, charlie = [await connect(n) for n in ("ALPHA", "BRAVO", "CHARLIE")]
    trio = (alpha, bravo, charlie)
    for client in trio:
        await client.report()
    for client in trio:
        for other in trio:
            if other is not client:
                await client.expect_uid(other.uid)

    async def barrier() -> None:
        """A broadcast after a directed message: once it arrived, so did the latter."""
        beacon = f"beacon-{uuid.uuid4().hex[:8]}"
        await alpha.send(cot(beacon, "a-u-G"))
        for client in (bravo, charlie):
            await client.expect_uid(beacon)

    to_bravo = chat(alpha.uid, "ALPHA", "to bravo", to_callsign="BRAVO")
    await alpha.send(to_bravo)
    direct = await bravo.expect(lambda m: m.type == "b-t-f", "the chat to BRAVO")
    remarks = direct.detail.find("remarks")
    assert remarks is not None and remarks.text == "to bravo"
    await barrier()
    assert not charlie.types("b-t-f"), "a chat for BRAVO reached CHARLIE"

    await alpha.send(chat_to_uid(alpha, "to charlie by uid", charlie.uid))
    by_uid = await charlie.expect(lambda m: m.type == "b-t-f", "the chat to CHARLIE's uid")
    assert by_uid.detail.findtext("remarks") == "to charlie by uid"
    await barrier()
    assert len(bravo.types("b-t-f")) == 1, "a chat for CHARLIE's uid reached BRAVO"

    everyone = chat(alpha.uid, "ALPHA", "all chat")
    everyone_uid = parse_xml(everyone).uid
    await alpha.send(everyone)
    for client in (bravo, charlie):
        await client.expect_uid(everyone_uid, "b-t-f")

    receipt = read_receipt(bravo, parse_xml(to_bravo).uid, alpha.uid)
    await bravo.send(receipt)
    await alpha.expect(lambda m: m.type == "b-t-f-r", "BRAVO's read receipt")
    await barrier()
    assert not charlie.types("b-t-f-r"), "BRAVO's read receipt for ALPHA reached CHARLIE"
    await asyncio.sleep(SETTLE)
    never_own(*trio)


# --- 4. the picture for late joiners and deletes ----------------------------------


async def test_late_joiner_gets_current_picture_and_deletes_apply(
        post: CommandPost, connect: Connect) -> None:
    sender = await connect("SIERRA")
    observer = await connect("OSCAR")  # silent, in the default group like the sender
    await sender.report(group=None)  # a pytak self-report: no team, the default group
    await sender.send(cot("marker-M", "a-h-G", lat=1.0))
    await sender.send(cot("marker-M", "a-h-G", lat=2.0))  # newer state of the same uid
    await sender.send(cot("marker-N", "a-n-G", lat=3.0))
    await sender.send(cot("marker-N", "a-n-G", lat=4.0, time_offset=-60))  # older, late
    await sender.send(cot("marker-S", "a-u-G", lat=5.0, stale=0.5))  # goes stale soon
    await sender.send(cot("marker-gone", "a-u-G", lat=6.0, stale=-5))  # stale on arrival
    all_chat = chat(sender.uid, "SIERRA", "hello all")
    await sender.send(all_chat)
    await observer.expect_uid(parse_xml(all_chat).uid)
    await asyncio.sleep(0.6)  # marker-S (stale after 0.5 s) is stale by now

    delay = post.config.stream.picture_delay
    started = time.monotonic()
    joiner = await connect("JULIET")  # sends nothing at all
    await joiner.expect_uid("marker-M")
    await joiner.expect_uid("marker-N")
    await joiner.expect_uid(sender.uid)
    assert time.monotonic() - started < delay + 1.0
    await asyncio.sleep(SETTLE)
    assert [m.lat for m in joiner.of("marker-M")] == [2.0], "not only the latest marker-M"
    assert [m.lat for m in joiner.of("marker-N")] == [3.0], "an older report won"
    unwanted = joiner.uids() & {"marker-S", "marker-gone", parse_xml(all_chat).uid}
    assert not unwanted, f"the picture held stale items or chat: {unwanted}"

    await sender.send(delete_event("marker-M"))
    for client in (observer, joiner):
        deleted = await client.expect(lambda m: m.type == "t-x-d-d", "the delete")
        target = deleted.detail.find("link")
        assert target is not None and target.get("uid") == "marker-M"
    later = await connect("KILO")
    await later.expect_uid("marker-N")
    await asyncio.sleep(SETTLE)
    assert not later.of("marker-M"), "a deleted marker came back in the picture"
    never_own(sender)


# --- 5. ping ----------------------------------------------------------------------


async def test_ping_answered_to_sender_only(connect: Connect) -> None:
    alpha = await connect("ALPHA")
    bravo = await connect("BRAVO")
    await alpha.report()
    await bravo.report()
    await bravo.expect_uid(alpha.uid)
    await alpha.send(cot(f"{alpha.uid}-ping", "t-x-c-t", lat=0.0, lon=0.0, stale=20,
                         how="h-g-i-g-o"))
    pong = await alpha.expect(lambda m: m.type == "t-x-c-t-r", "a pong")
    assert pong.uid == "takPong"
    await alpha.send(cot("after-ping", "a-u-G"))
    await bravo.expect_uid("after-ping")
    await asyncio.sleep(SETTLE)
    assert not [m for m in bravo.received if m.type.startswith("t-x-c-t")], bravo.received


# --- 6. emergency -----------------------------------------------------------------


async def test_emergency_replayed_until_cancelled(connect: Connect) -> None:
    caller = await connect("VIPER")
    mate = await connect("JENNY")
    outsider = await connect("ROOK")
    for client, group in ((caller, "Cyan"), (mate, "Cyan"), (outsider, "Red")):
        await client.report(group=group)
    await mate.expect_uid(caller.uid)
    alert_uid = f"{caller.uid}-9-1-1"
    await caller.send(emergency(alert_uid, caller.uid, "VIPER", stale=1))
    alert = await mate.expect_uid(alert_uid, "b-a-o-tbl")
    kind = alert.detail.find("emergency")
    assert kind is not None and kind.get("type") == "911 Alert"

    await asyncio.sleep(1.2)  # the alert's stale time has passed
    first = await connect("FIRST")
    await first.report()
    await first.expect_uid(alert_uid, "b-a-o-tbl")

    await caller.send(emergency(alert_uid, caller.uid, "VIPER", cancel=True))
    cancelled = await mate.expect_uid(alert_uid, "b-a-o-can")
    flag = cancelled.detail.find("emergency")
    assert flag is not None and flag.get("cancel") == "true"
    await first.expect_uid(alert_uid, "b-a-o-can")

    second = await connect("SECOND")
    await second.report()
    await second.expect_uid(caller.uid)
    await asyncio.sleep(SETTLE)
    assert not second.of(alert_uid), "a cancelled alert was replayed"
    assert not outsider.of(alert_uid), "the alert left its group"


# --- 7. groups --------------------------------------------------------------------


async def test_groups_do_not_see_each_other(connect: Connect) -> None:
    cyan = await connect("CYAN1")
    red = await connect("RED1")
    cyan_mate = await connect("CYAN2")
    await cyan.report(group="Cyan")
    await red.report(group="Red")
    await cyan_mate.report(group="Cyan")
    await cyan.send(cot("cyan-marker", "a-h-G", lat=11.0))
    await red.send(cot("red-marker", "a-h-G", lat=12.0))
    await red.send(chat(red.uid, "RED1", "red all chat"))
    await cyan_mate.expect_uid("cyan-marker")

    cyan_late = await connect("CYAN3")
    red_late = await connect("RED2")
    await cyan_late.report(group="Cyan")
    await red_late.report(group="Red")
    await cyan_late.expect_uid("cyan-marker")
    await red_late.expect_uid("red-marker")
    await red_late.expect_uid(red.uid)
    await asyncio.sleep(SETTLE)

    cyan_side = {cyan.uid, cyan_mate.uid, cyan_late.uid, "cyan-marker"}
    red_side = {red.uid, red_late.uid, "red-marker"}
    for client in (cyan, cyan_mate, cyan_late):
        leaked = client.uids() & red_side
        assert not leaked and not client.types("b-t-f"), f"{client.name} saw Red: {leaked}"
    for client in (red, red_late):
        leaked = client.uids() & cyan_side
        assert not leaked, f"{client.name} saw Cyan: {leaked}"


async def test_delete_or_cancel_from_another_group_leaves_the_item(connect: Connect) -> None:
    """A Red client cannot remove a Cyan item or a Cyan alert from the Cyan picture."""
    cyan = await connect("CYAN1")
    red = await connect("RED1")
    await cyan.report(group="Cyan")
    await red.report(group="Red")
    alert_uid = f"{cyan.uid}-9-1-1"
    await cyan.send(cot("cyan-asset", "a-f-G", lat=13.0))
    await cyan.send(emergency(alert_uid, cyan.uid, "CYAN1"))
    watcher = await connect("CYAN2")
    await watcher.report(group="Cyan")
    await watcher.expect_uid("cyan-asset")
    await watcher.expect_uid(alert_uid, "b-a-o-tbl")

    await red.send(delete_event("cyan-asset"))
    await red.send(emergency(alert_uid, red.uid, "RED1", cancel=True))
    await red.send(cot("red-after", "a-h-G"))
    red_mate = await connect("RED2")
    await red_mate.report(group="Red")
    await red_mate.expect_uid("red-after")  # the delete and cancel have been processed
    await asyncio.sleep(SETTLE)
    assert not watcher.types("t-x-d-d"), "a Red delete reached Cyan"
    assert not watcher.types("b-a-o-can"), "a Red cancel reached Cyan"

    late = await connect("CYAN3")
    await late.report(group="Cyan")
    await late.expect_uid(cyan.uid)
    await asyncio.sleep(SETTLE)
    missing = {"cyan-asset", alert_uid} - late.uids()
    assert not missing, (
        f"a Red client's t-x-d-d / b-a-o-can removed {missing} from the Cyan picture, "
        "although no Cyan client was told")
