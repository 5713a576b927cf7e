"""Signing orders with the command post's Ed25519 key.

Keys and the signed-bytes framing come from :mod:`fieldc2.crypto.signing`
(domain ``fieldc2-sig/v1``, a channel id, the originator uid, then the
message).  The message is :func:`signing_bytes`: a canonical JSON (keys
sorted, no whitespace) of what the recipient acts on -- order id, task,
recipient, text, due time and point -- so a verifier rebuilds it from the
``__fieldc2_order`` detail, the chat text and its own uid.

Why not ``protocol.compact.order_signing_bytes``: that layout identifies
originator, recipient, order and task by one- and two-byte radio slots,
which a CoT order on the server does not have (it has string ids and device
uids).  A relay that carries an order onto the radio needs the server to
sign the compact bytes too, once the slots are known (see
``/work/patches/orders-requests.md``).
"""

from __future__ import annotations

import base64
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
from fieldc2.errors import FrameRejected
from fieldc2.orders.model import Order

#: Channel id of orders on the CoT stream (radio channels derive theirs from
#: the channel name; 0 stands for "not on a radio channel").
STREAM_CHANNEL_ID = 0


def signing_bytes(order: Order, recipient: str) -> bytes:
    """Canonical bytes one order to one device is signed over."""
    fields = {"due": order.due, "id": order.id, "lat": round(order.lat, 7),
              "lon": round(order.lon, 7), "recipient": recipient, "task": order.task_id,
              "text": order.text}
    return msgspec.json.encode(fields, order="sorted")


class OrderSigner:
    """The command post's order-signing key (PEM file, 0600, made on first use)."""

    def __init__(self, key: Ed25519PrivateKey, originator: str) -> None:
        self._signer = Signer(key, channel_id=STREAM_CHANNEL_ID, originator=originator)

    @classmethod
    def load_or_create(cls, path: Path, originator: str) -> OrderSigner:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_private_key(path, Ed25519PrivateKey.generate())
        return cls(load_private_key(path), originator)

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


def verify(public_key: bytes, originator: str, order: Order, recipient: str,
           signature: str) -> bool:
    """True when ``signature`` is ``originator``'s over this order and device."""
    ring = KeyRing(STREAM_CHANNEL_ID)
    ring.add(originator, public_key)
    try:
        ring.verify(originator, signing_bytes(order, recipient),
                    base64.b64decode(signature, validate=True))
    except (FrameRejected, ValueError):
        return False
    return True
