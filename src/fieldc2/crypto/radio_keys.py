"""Channel keys and per-sender counters for the compact radio link.

A radio channel has one group key per *epoch*.  The key comes either from a
passphrase typed into every device (scrypt, so a captured frame does not make
guessing cheap) or from 16 random bytes the server hands out over TLS, as the
line ``fieldc2-chan:v1:<name>:<epoch>:<b64key>`` or the JSON document
``{"channel": ..., "epoch": ..., "key": ...}`` (:func:`key_document`).

Derivation (all HKDF is HKDF-SHA256 with salt ``b"fieldc2-radio/v1"``)::

    master     = 16 random bytes, or
                 scrypt(passphrase, salt=b"fieldc2-radio/v1|" + name,
                        n=2**15, r=8, p=1, length=16)
    aead key   = HKDF(master, info=b"aead|" + name + b"|" + epoch as u32, 16 bytes)
    channel id = HKDF(name,   info=b"channel-id", 2 bytes)

The channel id is derived from the *name*, not the key, so it stays the same
across key rotations: an order signed for the channel (see
:mod:`fieldc2.crypto.signing`) and still waiting in store-and-forward must
verify after the key changed.  It is public (a nonce component and a signature
domain), never a secret.  Binding name and epoch into the AEAD key means two
channels, or two epochs, never share a key even if an operator reuses a
passphrase or a random key.

The counter is the other half of the nonce.  A counter value must never be
used twice with one key, including after a crash, so :class:`FileCounterStore`
reserves ahead: it persists ``next + COUNTER_RESERVE`` (write temp, fsync,
``os.replace``, fsync the directory) *before* handing out the values below it,
and a restart continues from the persisted value.  A crash skips at most
``COUNTER_RESERVE`` values, which receivers absorb (the counter only has to
stay within their look-ahead, see :mod:`fieldc2.crypto.radio`).  One process
per counter file and sender id: two processes sharing either would hand out
the same values, and nothing here can detect that.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from fieldc2.errors import ConfigError, LinkError
from fieldc2.fileio import write_atomic

#: AES-128: the key size LoRaWAN and Bluetooth Mesh use; 128-bit security.
KEY_BYTES = 16
#: The counter is 48 bits: at the 10 % duty limit a node sends about 10^7
#: minimal frames a year, so 2^48 lasts far beyond any device's life.
MAX_COUNTER = (1 << 48) - 1
#: Epochs are u32 in the key derivation and the nonce; the header carries mod 4.
MAX_EPOCH = (1 << 32) - 1
#: scrypt cost: N=2^15, r=8 (32 MiB, ~0.1 s on a laptop, ~1 s on a Raspberry
#: Pi Zero) - RFC 7914's interactive setting, paid once per channel join.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1
#: Shortest passphrase accepted: one captured frame allows offline guessing
#: (a 4-byte tag plus a second frame confirms a guess), so short ones fall.
MIN_PASSPHRASE = 12
#: Counter values reserved per write of the counter file.  A crash skips at
#: most this many, well inside a receiver's look-ahead (2048 values); one
#: write per 256 frames is one flash write per ~15 min at the duty-cycle limit.
COUNTER_RESERVE = 256
#: Largest counter file read; a real one is about 20 bytes.
MAX_COUNTER_FILE = 256

EXPORT_PREFIX = "fieldc2-chan:v1"
_SALT = b"fieldc2-radio/v1"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _hkdf(ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=info).derive(ikm)


def channel_id_of(name: str) -> int:
    """The 2-byte channel id of a channel name (stable across epochs)."""
    return int.from_bytes(_hkdf(name.encode(), b"channel-id", 2), "big")


@dataclass(frozen=True)
class ChannelKey:
    """The group key of one channel in one epoch.  ``repr`` hides the secret."""

    name: str
    """Channel name: 1-64 characters from ``[A-Za-z0-9._-]`` (it sits in the export line)."""
    epoch: int
    """Key generation, 0..2^32-1; the header carries ``epoch % 4``."""
    master: bytes = field(repr=False)
    """16 secret bytes from which the AEAD key is derived."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"channel name {self.name!r} must match {_NAME.pattern}")
        if not 0 <= self.epoch <= MAX_EPOCH:
            raise ConfigError(f"key epoch {self.epoch} outside 0..{MAX_EPOCH}")
        if len(self.master) != KEY_BYTES:
            raise ConfigError(f"a channel key has {KEY_BYTES} bytes, not {len(self.master)}")

    @classmethod
    def generate(cls, name: str, epoch: int = 0) -> ChannelKey:
        """A fresh random key, for the server to distribute over TLS."""
        return cls(name, epoch, os.urandom(KEY_BYTES))

    @classmethod
    def from_passphrase(cls, name: str, passphrase: str, epoch: int = 0) -> ChannelKey:
        """The key every device derives from the same channel name and passphrase."""
        if len(passphrase) < MIN_PASSPHRASE:
            raise ConfigError(f"a channel passphrase needs at least {MIN_PASSPHRASE} characters")
        kdf = Scrypt(salt=_SALT + b"|" + name.encode(), length=KEY_BYTES,
                     n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
        return cls(name, epoch, kdf.derive(passphrase.encode()))

    @property
    def aead_key(self) -> bytes:
        """The AES-128-CCM key, bound to channel name and epoch."""
        info = b"aead|" + self.name.encode() + b"|" + self.epoch.to_bytes(4, "big")
        return _hkdf(self.master, info, KEY_BYTES)

    @property
    def channel_id(self) -> int:
        return channel_id_of(self.name)

    def export(self) -> str:
        """``fieldc2-chan:v1:<name>:<epoch>:<b64key>``: one line to copy or hand out."""
        encoded = base64.b64encode(self.master).decode()
        return f"{EXPORT_PREFIX}:{self.name}:{self.epoch}:{encoded}"

    @classmethod
    def from_export(cls, line: str) -> ChannelKey:
        parts = line.strip().split(":")
        if len(parts) != 5 or f"{parts[0]}:{parts[1]}" != EXPORT_PREFIX:
            raise ConfigError(f"not a {EXPORT_PREFIX} key line")
        return cls(parts[2], _parse_epoch(parts[3]), _parse_key(parts[4]))


def _parse_epoch(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", text):
        raise ConfigError(f"key epoch {text!r} is not a number")
    return int(text)


def _parse_key(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("channel key is not valid base64") from exc


class KeyDocument(msgspec.Struct, frozen=True):
    """What the server's key endpoint returns (over TLS only)."""

    channel: str
    epoch: int
    key: str
    """The 16 master bytes, standard base64."""


def key_document(key: ChannelKey) -> bytes:
    """The JSON document ``{"channel": ..., "epoch": ..., "key": ...}``."""
    encoded = base64.b64encode(key.master).decode()
    return msgspec.json.encode(KeyDocument(key.name, key.epoch, encoded))


def key_from_document(data: bytes) -> ChannelKey:
    try:
        doc = msgspec.json.decode(data, type=KeyDocument)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"bad channel key document: {exc}") from exc
    return ChannelKey(doc.channel, doc.epoch, _parse_key(doc.key))


class CounterStore(Protocol):
    """Source of a sender's counter values; never yields a value twice."""

    def take(self) -> int:
        """The next unused counter value (may exceed MAX_COUNTER; the sealer checks)."""
        ...

    def close(self) -> None:
        """Persist the exact position, if persistent; no value is taken afterwards."""
        ...


class MemoryCounterStore:
    """Counters for simulation: lost with the process, like a device without flash."""

    def __init__(self, start: int = 0) -> None:
        self.next = start

    def take(self) -> int:
        value, self.next = self.next, self.next + 1
        return value

    def close(self) -> None:
        pass


class CounterRecord(msgspec.Struct, frozen=True):
    """The counter file: every value below ``next`` may have been used."""

    v: int
    next: int


class FileCounterStore:
    """Counters persisted with write-ahead reservation (see the module docstring)."""

    def __init__(self, path: Path, reserve: int = COUNTER_RESERVE) -> None:
        if reserve < 1:
            raise ConfigError("counter reservation must be at least 1")
        self.path = path
        self.reserve = reserve
        self.next = self._read()
        self._limit = self.next  # values below this are covered by the file

    def take(self) -> int:
        if self.next >= self._limit:
            self._limit = self.next + self.reserve
            self._write(self._limit)
        value, self.next = self.next, self.next + 1
        return value

    def close(self) -> None:
        """Shrink the reservation to what was used, so a clean restart skips nothing."""
        self._write(self.next)
        self._limit = self.next

    def _read(self) -> int:
        try:
            data = self.path.read_bytes()[: MAX_COUNTER_FILE + 1]
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise LinkError(f"cannot read counter file {self.path}: {exc}") from exc
        try:
            record = msgspec.json.decode(data, type=CounterRecord)
        except msgspec.DecodeError as exc:
            # Guessing here could reuse a nonce; a person must decide.
            raise LinkError(f"counter file {self.path} is corrupt; refusing to guess") from exc
        if record.v != 1 or record.next < 0:
            raise LinkError(f"counter file {self.path} has an unknown format")
        return record.next

    def _write(self, value: int) -> None:
        data = msgspec.json.encode(CounterRecord(1, value))
        try:
            write_atomic(self.path, data)
        except OSError as exc:
            raise LinkError(f"cannot persist counter file {self.path}: {exc}") from exc

