"""Signatures of orders (the command post) and FLASH messages (field nodes).

One signature per order, made by the command post and verified by the
device that acts on it, wherever the order travelled (CoT stream, relay,
radio): relays pass it through and never re-sign.

Keys and the signed-bytes framing come from :mod:`fieldc2.crypto.signing`
(domain ``fieldc2-sig/v1``, channel id 0 = "not bound to one radio channel",
the originator uid, then the message).  The message of an order is
:func:`signing_bytes`: canonical JSON (keys sorted, no whitespace) of what
the recipient acts on::

    {"due":  whole Unix seconds,     "id":     the server's order id (ORD-...),
     "lat_e5", "lon_e5": the point on the compact 1e-5 degree grid (integers),
     "recipient": the device uid,    "task":   the server's task id,
     "text": the order text as CoT carries it (carried_text), exact UTF-8}

Every field survives the radio exactly: the command post quantises the point
with :func:`fieldc2.protocol.compact_geo.quantise_point` before composing
and signing, due is whole seconds, and the compact ``Order`` carries ``ref``
(id), ``task_ref`` and the whole text.  So :func:`fields_of_compact` rebuilds
the same bytes on a node, with the recipient its own uid from the roster and
the originator the roster uid of the order's origin slot.

Orders made on the radio side (no ``ref``) are signed over
:func:`fieldc2.protocol.compact.order_signing_bytes` with the radio channel id.

FLASH texts and reports are signed by the sending node's own key over
:func:`flash_signing_bytes` (also channel id 0, so any hop holding the
roster can check them); the relay verifies before forwarding.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldc2.crypto.signing import (
    KeyRing,
    Signer,
    load_private_key,
    public_key_bytes,
    save_private_key,
)
from fieldc2.errors import ConfigError, FrameRejected
from fieldc2.model import radio
from fieldc2.orders.model import Order
from fieldc2.protocol.compact_context import grid
from fieldc2.protocol.cot_xml import XML_INVALID

#: Channel id of signatures that are not bound to one radio channel: orders of
#: the command post and FLASH messages, checked at every hop that has the key.
STREAM_CHANNEL_ID = 0


class SignedOrder(msgspec.Struct, frozen=True, kw_only=True):
    """Exactly what an order signature covers (field names are the JSON keys)."""

    id: str
    task: str
    recipient: str
    text: str
    due: int
    lat_e5: int
    lon_e5: int


def carried_text(text: str) -> str:
    """The text as CoT XML delivers it: characters XML 1.0 cannot hold removed
    (``cot_xml`` drops them) and line ends as LF (XML parsers turn CR LF and CR
    into LF).  Signed this way on both ends, so typed CR LF does not break it."""
    return XML_INVALID.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def fields_of(order: Order, recipient: str) -> SignedOrder:
    """The signed fields of a published order to one device."""
    return SignedOrder(id=order.id, task=order.task_id, recipient=recipient,
                       text=carried_text(order.text), due=order.due, lat_e5=grid(order.lat),
                       lon_e5=grid(order.lon))


def fields_of_compact(order: radio.Order, recipient: str) -> SignedOrder | None:
    """The signed fields rebuilt from a decoded compact order; None when it is
    not a command-post order (no ``ref``, due time or point)."""
    if not order.ref or order.due is None or order.lat is None or order.lon is None:
        return None
    return SignedOrder(id=order.ref, task=order.task_ref, recipient=recipient,
                       text=carried_text(order.text), due=order.due, lat_e5=grid(order.lat),
                       lon_e5=grid(order.lon))


def signing_bytes(order: Order | SignedOrder, recipient: str = "") -> bytes:
    """Canonical bytes one order to one device is signed over."""
    fields = fields_of(order, recipient) if isinstance(order, Order) else order
    return msgspec.json.encode(fields, order="sorted")


class OrderSigner:
    """The command post's order-signing key (PEM file, 0600, made on first use)."""

    def __init__(self, key: Ed25519PrivateKey, originator: str) -> None:
        self._signer = Signer(key, channel_id=STREAM_CHANNEL_ID, originator=originator)

    @classmethod
    def load_or_create(cls, path: Path, originator: str) -> OrderSigner:
        return cls(load_or_create_key(path), originator)

    @property
    def originator(self) -> str:
        return self._signer.originator

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key (what a roster or key ring carries)."""
        return public_key_bytes(self._signer.public_key)

    def sign(self, order: Order, recipient: str) -> str:
        """Base64 signature of one order to one device."""
        return base64.b64encode(self._signer.sign(signing_bytes(order, recipient))).decode()


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in ``path``, generated (0600) when the file is missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_private_key(path, Ed25519PrivateKey.generate())
    return load_private_key(path)


def verify_signed(public_key: bytes, originator: str, message: bytes,
                  signature: bytes) -> bool:
    """True when ``signature`` is ``originator``'s (channel id 0) over ``message``."""
    ring = KeyRing(STREAM_CHANNEL_ID)
    try:
        ring.add(originator, public_key)
        ring.verify(originator, message, signature)
    except (FrameRejected, ConfigError, ValueError):
        return False
    return True


def verify(public_key: bytes, originator: str, order: Order | SignedOrder, recipient: str,
           signature: str | bytes) -> bool:
    """True when ``signature`` (base64 text or raw) is ``originator``'s over this
    order to device ``recipient``; both the command post's tests and the nodes
    call this.  ``recipient`` wins over the one inside a :class:`SignedOrder`."""
    if isinstance(order, SignedOrder):
        order = msgspec.structs.replace(order, recipient=recipient)
    if isinstance(signature, str):
        try:
            signature = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            return False
    return verify_signed(public_key, originator, signing_bytes(order, recipient), signature)


# --- FLASH messages ------------------------------------------------------------------

def flash_signing_bytes(record: radio.Text | radio.Report) -> bytes:
    """Canonical bytes of a FLASH text or report (the sender is the originator uid).

    Slots (``to``) are the channel's: the relay of that channel verifies."""
    fields: dict[str, object]
    if isinstance(record, radio.Text):
        fields = {"kind": "text", "room": record.room, "text": record.text,
                  "time": record.time, "to": record.to}
    else:
        fields = {"count": record.count, "id": record.report_id, "kind": "report",
                  "lat_e5": grid(record.lat), "lon_e5": grid(record.lon),
                  "report": record.kind.name.lower(), "severity": record.severity,
                  "text": record.text, "time": record.time}
    return msgspec.json.encode(fields, order="sorted")


def sign_flash(signer: Signer, record: radio.Text | radio.Report) -> bytes:
    """The 64-byte signature a node puts in its FLASH record."""
    if signer.channel_id != STREAM_CHANNEL_ID:
        raise ConfigError("FLASH messages are signed with channel id 0")
    return signer.sign(flash_signing_bytes(record))
