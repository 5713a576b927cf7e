"""Ed25519 signatures on orders and FLASH messages, verified end to end.

The radio tag (:mod:`fieldc2.crypto.radio`) proves only that a frame came from
*some* holder of the channel key.  An order must prove who issued it, across
relays, store-and-forward and the server, so its originator signs it (64 bytes,
which is why positions are not signed).

**What is signed**, exactly::

    b"fieldc2-sig/v1\\x00"             domain: these bytes mean nothing elsewhere
    channel id                        2 bytes, big-endian (radio_keys.channel_id_of)
    len(originator uid)               1 byte
    originator uid                    UTF-8, 1..255 bytes
    message                           the content, e.g. compact.order_signing_bytes(...)

``Signer`` and ``KeyRing`` are each bound to one channel id and add this
prefix themselves, so a signature cannot be moved to another channel, nor be
presented as another originator's even if two originators shared a key.  It
cannot be moved to another order because the message carries the order's id
(and recipient, text, due time, point); callers must sign canonical bytes
that contain everything the recipient acts on.  The channel id comes from the
channel *name*, so signatures outlive key rotations.  Replaying the *same*
signed order is harmless to the signature and caught by order-id dedup.

Key files: private keys are written 0600 and refused if group- or
world-readable (as ssh does); PEM (PKCS#8 / SubjectPublicKeyInfo) or the raw
32 bytes, recognised on load.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from fieldc2.errors import ConfigError, FrameRejected

SIGNATURE_BYTES = 64
KEY_BYTES = 32
DOMAIN = b"fieldc2-sig/v1\x00"
#: The originator's length is one byte in the signed bytes.
MAX_UID_BYTES = 255
#: Originators one ring holds: a channel has 255 radio slots, and the server
#: side adds dispatchers; more would be a misconfiguration, not an incident.
MAX_ORIGINATORS = 4096
#: Largest key file read; a PEM Ed25519 key is about 120 bytes.
MAX_KEY_FILE = 4096


def signed_bytes(channel_id: int, originator: str, message: bytes) -> bytes:
    """The exact bytes an Ed25519 signature covers (see the module docstring)."""
    uid = originator.encode()
    if not 1 <= len(uid) <= MAX_UID_BYTES:
        raise ConfigError(f"originator uid must be 1..{MAX_UID_BYTES} bytes of UTF-8")
    if not 0 <= channel_id <= 0xFFFF:
        raise ConfigError(f"channel id {channel_id} is not 16 bits")
    return DOMAIN + channel_id.to_bytes(2, "big") + bytes((len(uid),)) + uid + message


class Signer:
    """An originator's private key, bound to its uid and one channel."""

    def __init__(self, private_key: Ed25519PrivateKey, *, channel_id: int,
                 originator: str) -> None:
        signed_bytes(channel_id, originator, b"")  # validates both now, not at first use
        self._key = private_key
        self.channel_id = channel_id
        self.originator = originator

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, message: bytes) -> bytes:
        """64 bytes over ``signed_bytes(channel_id, originator, message)``."""
        return self._key.sign(signed_bytes(self.channel_id, self.originator, message))


@dataclass(frozen=True)
class Originator:
    uid: str
    public_key: Ed25519PublicKey
    sender: int | None = None
    """The radio slot (1-byte sender id) this originator transmits from, if any."""


class KeyRing:
    """Public keys of the originators allowed to sign on one channel."""

    def __init__(self, channel_id: int) -> None:
        signed_bytes(channel_id, "-", b"")
        self.channel_id = channel_id
        self._by_uid: dict[str, Originator] = {}
        self._by_sender: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._by_uid)

    def add(self, uid: str, public_key: Ed25519PublicKey | bytes,
            sender: int | None = None) -> None:
        """Trust ``public_key`` for ``uid``; a slot given to a new uid leaves the old one."""
        if isinstance(public_key, bytes):
            public_key = public_key_from_bytes(public_key)
        if sender is not None and not 0 <= sender <= 254:
            raise ConfigError(f"sender id {sender} outside 0..254")
        if uid not in self._by_uid and len(self._by_uid) >= MAX_ORIGINATORS:
            raise ConfigError(f"key ring full ({MAX_ORIGINATORS} originators)")
        signed_bytes(self.channel_id, uid, b"")
        self.remove(uid)
        if sender is not None:
            previous = self._by_sender.pop(sender, None)
            if previous is not None:
                old = self._by_uid[previous]
                self._by_uid[previous] = Originator(old.uid, old.public_key, None)
            self._by_sender[sender] = uid
        self._by_uid[uid] = Originator(uid, public_key, sender)

    def remove(self, uid: str) -> None:
        gone = self._by_uid.pop(uid, None)
        if gone is not None and gone.sender is not None:
            self._by_sender.pop(gone.sender, None)

    def lookup(self, origin: str | int) -> Originator:
        """The originator by uid or by radio sender id."""
        uid = self._by_sender.get(origin) if isinstance(origin, int) else origin
        found = self._by_uid.get(uid) if uid is not None else None
        if found is None:
            raise FrameRejected("signature", f"no public key for originator {origin!r}")
        return found

    def verify(self, origin: str | int, message: bytes, signature: bytes) -> Originator:
        """Check ``signature``; return the originator, or raise FrameRejected("signature")."""
        found = self.lookup(origin)
        if len(signature) != SIGNATURE_BYTES:
            raise FrameRejected("signature", f"signature of {len(signature)} bytes")
        try:
            found.public_key.verify(signature,
                                    signed_bytes(self.channel_id, found.uid, message))
        except InvalidSignature as exc:
            raise FrameRejected("signature", f"bad signature from {found.uid!r}") from exc
        return found


def public_key_from_bytes(raw: bytes) -> Ed25519PublicKey:
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"an Ed25519 public key has {KEY_BYTES} bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes, as the roster and Announce records carry them."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def save_private_key(path: Path, key: Ed25519PrivateKey, *, raw: bool = False) -> None:
    """Write ``key`` 0600 (PEM PKCS#8 unless ``raw``), atomically."""
    if raw:
        data = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    else:
        data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    _write(path, data, 0o600)


def save_public_key(path: Path, key: Ed25519PublicKey, *, raw: bool = False) -> None:
    data = (public_key_bytes(key) if raw else
            key.public_bytes(serialization.Encoding.PEM,
                             serialization.PublicFormat.SubjectPublicKeyInfo))
    _write(path, data, 0o644)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = _read(path, private=True)
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
        elif len(data) == KEY_BYTES:
            key = Ed25519PrivateKey.from_private_bytes(data)
        else:
            raise ConfigError(f"{path} is neither PEM nor a raw 32-byte key")
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path}: unreadable private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = _read(path, private=False)
    if not data.startswith(b"-----BEGIN"):
        return public_key_from_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path}: unreadable public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def _read(path: Path, *, private: bool) -> bytes:
    try:
        if private and os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{path} is accessible to others; chmod 600 it")
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc}") from exc
    if len(data) > MAX_KEY_FILE:
        raise ConfigError(f"{path} is too large to be a key file")
    return data


def _write(path: Path, data: bytes, mode: int) -> None:
    temp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)  # O_CREAT's mode is masked by umask, and ignored if it exists
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write key file {path}: {exc}") from exc
