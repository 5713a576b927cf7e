"""The command post's radio channel keys, and handing them out over TLS.

A radio channel's group key must reach every relay and field node before it
goes out on the air, and a passphrase typed into twenty devices leaks.  The
command post therefore keeps each channel's keys in ``<data_dir>/radio/`` and
hands the current ones to any enrolled device over mutual TLS
(``GET /api/radio/channels/<name>``, see :mod:`fieldc2.api.radio_api`): the
client certificate the built-in CA issued is the credential, and every
hand-out is written to the audit log.

Each channel file holds one export line per epoch
(``fieldc2-chan:v1:<name>:<epoch>:<b64key>``), newest last, mode 0600.
Rotation appends a new epoch and keeps :data:`KEPT_EPOCHS` so devices that
fetched before the rotation and devices that fetched after can both talk
during the overlap (the opener accepts the previous epoch for its grace
period): a key rotation without a flag day.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import msgspec

from fieldc2.crypto.radio_keys import ChannelKey, key_document, key_from_document
from fieldc2.errors import ConfigError, LinkError
from fieldc2.fileio import write_atomic

#: Epochs kept per channel file: the current one and the one before it,
#: which receivers still accept during the rotation grace period.
KEPT_EPOCHS = 2
#: Largest channel file read; each line is under 120 bytes.
MAX_CHANNEL_FILE = 4096
#: Largest key response a client accepts from the server.
MAX_KEY_RESPONSE = 16 * 1024


class ChannelKeys(msgspec.Struct, frozen=True):
    """What the server hands out: the channel's keys, current last."""

    channel: str
    keys: list[msgspec.Raw]

    def decoded(self) -> list[ChannelKey]:
        return [key_from_document(bytes(raw)) for raw in self.keys]


class ChannelDirectory:
    """The channel key files in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        ChannelKey.generate(name)  # validates the name before it touches a path
        return self.directory / f"{name}.chan"

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.chan"))

    def keys(self, name: str) -> list[ChannelKey]:
        """Every kept epoch of a channel, oldest first."""
        path = self._path(name)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_CHANNEL_FILE + 1)
        except FileNotFoundError:
            raise ConfigError(
                f"no radio channel {name!r}: create it with `fieldc2 radio new {name}`"
            ) from None
        if len(data) > MAX_CHANNEL_FILE:
            raise ConfigError(f"{path} is larger than {MAX_CHANNEL_FILE} bytes")
        lines = [line for line in data.decode("ascii", "replace").splitlines() if line.strip()]
        keys = [ChannelKey.from_export(line.strip()) for line in lines]
        if not keys or any(k.name != name for k in keys):
            raise ConfigError(f"{path} does not hold keys of channel {name!r}")
        return sorted(keys, key=lambda k: k.epoch)

    def current(self, name: str) -> ChannelKey:
        return self.keys(name)[-1]

    def create(self, name: str, passphrase: str | None = None) -> ChannelKey:
        """A new channel with a random key (or one from a passphrase)."""
        path = self._path(name)
        if path.exists():
            raise ConfigError(f"radio channel {name!r} exists; rotate its key instead")
        if passphrase is None:
            key = ChannelKey.generate(name)
        else:
            key = ChannelKey.from_passphrase(name, passphrase)
        self._write(name, [key])
        return key

    def rotate(self, name: str) -> ChannelKey:
        """Append a fresh random key under the next epoch."""
        keys = self.keys(name)
        new = ChannelKey.generate(name, keys[-1].epoch + 1)
        self._write(name, [*keys, new][-KEPT_EPOCHS:])
        return new

    def _write(self, name: str, keys: list[ChannelKey]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self._path(name), "".join(k.export() + "\n" for k in keys).encode())

    def document(self, name: str) -> bytes:
        """The JSON the server sends: ``{"channel": name, "keys": [...]}``."""
        docs = [json.loads(key_document(k)) for k in self.keys(name)]
        return json.dumps({"channel": name, "keys": docs}).encode()


def fetch_channel_keys(url: str, *, cert: Path, key: Path, ca: Path,
                       timeout: float = 15.0) -> list[ChannelKey]:
    """Fetch a channel's keys from a command post over mutual TLS.

    ``url`` is ``https://host:8443/api/radio/channels/<name>``; ``cert`` and
    ``key`` are the device's enrolled client credentials, ``ca`` the command
    post's CA certificate.
    """
    context = ssl.create_default_context(cafile=str(ca))
    try:
        context.load_cert_chain(str(cert), str(key))
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
            body = response.read(MAX_KEY_RESPONSE + 1)
    except urllib.error.HTTPError as exc:
        detail = exc.read(512).decode("utf-8", "replace").strip()
        raise LinkError(f"the command post refused the channel key ({exc.code}): {detail}") from exc
    except (OSError, ssl.SSLError) as exc:
        raise LinkError(f"cannot fetch the channel key from {url}: {exc}") from exc
    if len(body) > MAX_KEY_RESPONSE:
        raise LinkError(f"channel key response from {url} is too large")
    try:
        return msgspec.json.decode(body, type=ChannelKeys).decoded()
    except (msgspec.DecodeError, ConfigError) as exc:
        raise LinkError(f"the command post sent an unreadable channel key: {exc}") from exc
