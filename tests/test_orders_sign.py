"""The command post's order signature is reproducible on the radio side.

Property: for any order the post can compose (point quantised on the compact
grid, whole-second due time, text up to the order limit), the bytes a node
rebuilds from the compact ``Order`` -- after the post's own CoT
(``orders.cot.order_chat``), the relay's mapping, the radio codec and back --
are the bytes the post signed, so its signature verifies there and nowhere else.
"""

from __future__ import annotations

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldc2.model.radio import Order as RadioOrder
from fieldc2.model.radio import Roster, RosterEntry
from fieldc2.orders import cot
from fieldc2.orders.model import Order
from fieldc2.orders.sign import (
    OrderSigner,
    fields_of,
    fields_of_compact,
    signing_bytes,
    verify,
)
from fieldc2.protocol.compact import ChannelContext, decode, encode
from fieldc2.protocol.compact_cot import from_cot
from fieldc2.protocol.compact_geo import quantise_point

CP = cot.Sender(uid="fieldc2-cp", callsign="CP")
DEVICE = "ANDROID-0d2f5c1b7e3a9f44"
KEY = Ed25519PrivateKey.generate()
SIGNER = OrderSigner(KEY, CP.uid)
EPOCH = 1_800_000_000
ROSTER = Roster([RosterEntry(slot=0, uid="relay-1"),
                 RosterEntry(slot=3, uid=DEVICE, callsign="ALPHA-3"),
                 RosterEntry(slot=200, uid=CP.uid, callsign="CP", public_key=SIGNER.public_key)])

#: Any text: CR LF typed in a web form and characters XML 1.0 cannot carry
#: included (the signature covers the text as CoT carries it).
order_chars = st.one_of(st.characters(codec="utf-8"), st.sampled_from("\r\n\x01"))
texts = st.text(order_chars, min_size=1, max_size=600).filter(
    lambda t: len(t.encode()) <= 2400)
ids = st.from_regex(r"ORD-[0-9A-F]{8}", fullmatch=True)
task_ids = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="<&\""),
                   min_size=1, max_size=20)


@st.composite
def orders(draw: st.DrawFn) -> Order:
    lat, lon = quantise_point(draw(st.floats(-90, 90)), draw(st.floats(-180, 180)))
    return Order(id=draw(ids), task_id=draw(task_ids), team_id="a", text=draw(texts),
                 recipients=(DEVICE,), issued=EPOCH, due=draw(st.integers(EPOCH, EPOCH + 10**6)),
                 lat=lat, lon=lon, precedence="IMMEDIATE", origin=CP.uid)


def over_the_radio(order: Order, signature: str) -> RadioOrder:
    """The post's order chat -> relay (CoT to compact) -> radio -> node."""
    event, facts = cot.order_chat(order, DEVICE, "ALPHA-3", CP, signature, EPOCH * 1000,
                                  EPOCH * 1000 + 3_600_000)
    record = from_cot(event, facts, ROSTER, ChannelContext(EPOCH, 46.95, 7.45))
    assert isinstance(record, RadioOrder)
    received = decode(encode(record, ChannelContext(EPOCH, 46.95, 7.45)),
                      ChannelContext(EPOCH, 46.95, 7.45), now=EPOCH)
    assert isinstance(received, RadioOrder)
    return received


@settings(max_examples=100, deadline=None)
@given(orders())
def test_the_node_rebuilds_the_signed_bytes(order: Order) -> None:
    signature = SIGNER.sign(order, DEVICE)
    received = over_the_radio(order, signature)
    fields = fields_of_compact(received, DEVICE)
    assert fields == fields_of(order, DEVICE)
    assert fields is not None and signing_bytes(fields) == signing_bytes(order, DEVICE)
    assert verify(SIGNER.public_key, CP.uid, fields, DEVICE, received.signature)
    assert received.ref == order.id and received.task_ref == order.task_id


def test_the_signature_binds_device_originator_and_every_field() -> None:
    order = Order(id="ORD-1A2B3C4D", task_id="T1", team_id="a", text="Search sector B",
                  recipients=(DEVICE,), issued=EPOCH, due=EPOCH + 1800, lat=45.01, lon=7.01)
    signature = SIGNER.sign(order, DEVICE)
    fields = fields_of_compact(over_the_radio(order, signature), DEVICE)
    assert fields is not None
    assert verify(SIGNER.public_key, CP.uid, fields, DEVICE, signature)
    assert not verify(SIGNER.public_key, CP.uid, fields, "ANDROID-other", signature)
    assert not verify(SIGNER.public_key, "someone-else", fields, DEVICE, signature)
    other_key = OrderSigner(Ed25519PrivateKey.generate(), CP.uid).public_key
    assert not verify(other_key, CP.uid, fields, DEVICE, signature)
    for change in ({"id": "ORD-1A2B3C4E"}, {"task": "T2"}, {"text": "Search sector C"},
                   {"due": EPOCH + 1801}, {"lat_e5": 4501001}, {"lon_e5": 701001}):
        assert not verify(SIGNER.public_key, CP.uid, msgspec.structs.replace(fields, **change),
                          DEVICE, signature)
    assert not verify(SIGNER.public_key, CP.uid, fields, DEVICE, "not base64!")
    assert not verify(SIGNER.public_key, CP.uid, fields, DEVICE, b"short")
    # a radio order without the post's id, due time or point is not a post order
    bare = RadioOrder(origin=200, order_id=1, to=3, precedence=0, task=0,  # type: ignore[arg-type]
                      text="x", due=EPOCH, lat=1.0, lon=2.0)
    assert fields_of_compact(bare, DEVICE) is None
    assert fields_of_compact(msgspec.structs.replace(bare, ref="ORD-1", due=None), DEVICE) is None
