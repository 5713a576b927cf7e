"""``fieldc2 relay`` and ``fieldc2 node``: configuration (TOML file + flags) and start-up.

Both read one TOML file; flags override it.  Example::

    [channel]
    name = "sar-north"
    key_file = "sar-north.chan"   # or passphrase_file = "...", or $FIELDC2_CHANNEL_PASSPHRASE
    profile = "lora-long-fast"
    epoch = 1767225600            # the channel's time origin (exercise start), Unix s
    lat0 = 46.95                  # operations-area origin
    lon0 = 7.45
    roster = "roster.toml"        # [[member]] slot, uid, callsign, team, role, public_key (hex)

    [radio]
    adapter = "udp://0.0.0.0:7700?peer=10.0.0.2:7700"

    [relay]
    server = "127.0.0.1:8087"     # 8089 with tls_cert, tls_key and tls_ca
    state_dir = "relay-state"
    uid = "relay-north"
    callsign = "RELAY-N"
    team = "Cyan"

    [node]
    slot = 3
    gnss = "serial:///dev/ttyACM0?baud=9600"
    state_dir = "node-state"      # holds node.key, this node's FLASH signing key
    report_interval = 60

A node makes its Ed25519 key (``state_dir/node.key``, 0600) on first run and
prints the public key: put it in the roster as that slot's ``public_key`` so
the relay verifies the node's FLASH messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tomllib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fieldc2.crypto.radio_keys import ChannelKey, key_from_document
from fieldc2.errors import ConfigError, FieldC2Error, LinkError
from fieldc2.fileio import write_atomic
from fieldc2.link.profiles import PROFILES, LinkProfile, profile
from fieldc2.model.radio import RELAY_SLOT, Roster
from fieldc2.node import NODE_KEY_FILE, Node, NodeCore, NodeSettings, node_signer, stdin_lines
from fieldc2.protocol.compact import ChannelContext
from fieldc2.radio_channels import fetch_channel_keys
from fieldc2.relay import Relay, RelaySettings
from fieldc2.transport.gnss import open_gnss
from fieldc2.transport.radio import open_adapter
from fieldc2.transport.radio_station import RadioStation, RecordSink

log = logging.getLogger("fieldc2.relay")
PASSPHRASE_ENV = "FIELDC2_CHANNEL_PASSPHRASE"
#: Largest configuration, roster or key file read.
MAX_FILE = 1024 * 1024


@dataclass(frozen=True)
class ChannelSettings:
    """Everything the devices of one channel share."""

    keys: tuple[ChannelKey, ...]
    """The channel's keys, oldest epoch first; the last one seals."""
    profile: LinkProfile
    epoch: int
    lat0: float
    lon0: float
    roster: Roster
    adapter: str

    def context(self) -> ChannelContext:
        return ChannelContext(self.epoch, self.lat0, self.lon0)


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc}") from exc
    if len(data) > MAX_FILE:
        raise ConfigError(f"the {what} {path} is larger than {MAX_FILE} bytes")
    return data


def load_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return tomllib.loads(_read(path, "configuration").decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def fetch_keys(name: str, url: str, tls: tuple[Path, Path, Path] | None,
               cache: Path) -> list[ChannelKey]:
    """Fetch the channel keys from the command post over mutual TLS and cache them.

    Devices are provisioned where they reach the command post (its Wi-Fi, a
    cable); in the field they start from the cached ``.chan`` file (0600), so
    a lost network never stops a relay or node that was provisioned before.
    """
    if tls is None:
        raise ConfigError("--key-url needs the device's enrolled credentials: "
                          "--tls-cert, --tls-key and --tls-ca")
    keys = fetch_channel_keys(url, cert=tls[0], key=tls[1], ca=tls[2])
    if not keys or any(k.name != name for k in keys):
        raise ConfigError(f"{url} did not return keys of channel {name!r}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(cache, "".join(k.export() + "\n" for k in keys).encode())
    log.info("channel %s: fetched epochs %s from %s; cached in %s", name,
             ", ".join(str(k.epoch) for k in keys), url, cache)
    return keys


def load_keys(name: str, *, key_file: Path | None,
              passphrase_file: Path | None) -> list[ChannelKey]:
    """The channel keys from a ``.chan``/JSON key file, a passphrase file or the environment."""
    if key_file is not None:
        text = _read(key_file, "key file").decode("utf-8", "replace").strip()
        if text.startswith("{"):
            return [key_from_document(text.encode())]
        keys = [ChannelKey.from_export(line) for line in text.splitlines() if line.strip()]
        if not keys:
            raise ConfigError(f"{key_file} holds no channel key")
        return keys
    if passphrase_file is not None:
        phrase = _read(passphrase_file, "passphrase file").decode("utf-8").strip()
    else:
        phrase = os.environ.get(PASSPHRASE_ENV, "")
    if not phrase:
        raise ConfigError(f"no channel key: give --key-file, --passphrase-file or set "
                          f"{PASSPHRASE_ENV}")
    return [ChannelKey.from_passphrase(name, phrase)]


def _pick(args: argparse.Namespace, flag: str, table: dict[str, Any], key: str,
          default: Any = None) -> Any:
    value = getattr(args, flag, None)
    return value if value is not None else table.get(key, default)


def _path(value: Any, base: Path) -> Path | None:
    return None if value in (None, "") else (base / str(value)).expanduser()


def _tls_files(args: argparse.Namespace, data: dict[str, Any], base: Path
               ) -> tuple[Path, Path, Path] | None:
    """The device's enrolled client credentials, from flags or ``[relay]``/``[node]``."""
    table = data.get(args.command, {})
    files = [_path(_pick(args, flag, table, flag), base)
             for flag in ("tls_cert", "tls_key", "tls_ca")]
    if any(files) and not all(files):
        raise ConfigError("TLS needs all three of tls_cert, tls_key and tls_ca")
    return (files[0], files[1], files[2]) if files[0] and files[1] and files[2] else None


def channel_settings(args: argparse.Namespace, data: dict[str, Any], base: Path,
                     state_dir: Path | None = None) -> ChannelSettings:
    channel, radio = data.get("channel", {}), data.get("radio", {})
    name = _pick(args, "channel", channel, "name")
    adapter = _pick(args, "adapter", radio, "adapter")
    if not name or not adapter:
        raise ConfigError("a channel name and a radio adapter are required "
                          "(--channel/--adapter or [channel] name / [radio] adapter)")
    key_url = _pick(args, "key_url", channel, "key_url")
    key_file = _path(_pick(args, "key_file", channel, "key_file"), base)
    cache = (state_dir or base) / f"{name}.chan"
    if key_url:
        try:
            keys = fetch_keys(name, str(key_url), _tls_files(args, data, base), cache)
        except LinkError as exc:
            if not cache.exists():
                raise
            log.warning("%s; using the keys cached in %s", exc, cache)
            keys = load_keys(name, key_file=cache, passphrase_file=None)
    else:
        keys = load_keys(name, key_file=key_file,
                         passphrase_file=_path(_pick(args, "passphrase_file", channel,
                                                     "passphrase_file"), base))
    roster_file = _path(_pick(args, "roster", channel, "roster"), base)
    roster = (Roster.from_toml(_read(roster_file, "roster").decode("utf-8")) if roster_file
              else Roster.from_mapping(channel.get("roster", {})))
    try:
        return ChannelSettings(
            keys=tuple(keys), profile=profile(_pick(args, "profile", channel, "profile",
                                                    "lora-long-fast")),
            epoch=int(channel.get("epoch", 0)), lat0=float(channel.get("lat0", 0.0)),
            lon0=float(channel.get("lon0", 0.0)), roster=roster, adapter=str(adapter))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[channel]: {exc}") from exc


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fieldc2 relay`` and ``fieldc2 node``."""
    relay = sub.add_parser(
        "relay", help="bridge a radio channel to a command post",
        description="Bridge a radio channel (UDP, KISS TNC or Meshtastic) to a command post: "
                    "radio positions, reports, chat and order status go up as CoT; orders, "
                    "chat and other teams' positions come down. Queues survive restarts.")
    node = sub.add_parser(
        "node", help="a field device on a radio channel",
        description="A field device: reports its GNSS position, shows orders (signature "
                    "checked), and reads commands on stdin: ack ID | status ID "
                    "in_progress|done|failed | say [@CALLSIGN] TEXT | report KIND TEXT.")
    for one in (relay, node):
        one.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration")
        one.add_argument("--channel", metavar="NAME", help="channel name ([channel] name)")
        one.add_argument("--key-file", type=Path, metavar="FILE",
                         help="channel key: a .chan file from `fieldc2 radio` or a JSON key")
        one.add_argument("--passphrase-file", type=Path, metavar="FILE",
                         help=f"channel passphrase in a file (or set {PASSPHRASE_ENV})")
        one.add_argument("--key-url", metavar="URL",
                         help="fetch the channel keys from the command post over mutual TLS "
                              "(https://HOST:8443/api/radio/channels/NAME, with --tls-*) and "
                              "cache them in the state directory for use off the network")
        one.add_argument("--tls-cert", type=Path, metavar="PEM",
                         help="this device's client certificate (from `fieldc2 cert issue`)")
        one.add_argument("--tls-key", type=Path, metavar="PEM", help="its private key")
        one.add_argument("--tls-ca", type=Path, metavar="PEM", help="the post's CA certificate")
        one.add_argument("--profile", choices=sorted(PROFILES), metavar="NAME",
                         help="link profile (default lora-long-fast): "
                              + ", ".join(sorted(PROFILES)))
        one.add_argument("--adapter", metavar="URL",
                         help="udp://HOST:PORT?peer=H:P | kiss+tcp://127.0.0.1:8001 | "
                              "kiss+serial:///dev/ttyUSB0?baud=9600 | "
                              "meshtastic+serial:///dev/ttyACM0")
        one.add_argument("--roster", type=Path, metavar="FILE", help="roster TOML file")
        one.add_argument("--state-dir", type=Path, metavar="DIR",
                         help="where queues and counters persist across restarts")
        one.add_argument("--log-level", default="info",
                         choices=["debug", "info", "warning", "error"], help="default: info")
    relay.add_argument("--server", metavar="HOST:PORT",
                       help="command post CoT port (default 127.0.0.1:8087)")
    node.add_argument("--slot", type=int, help="this device's slot in the roster")
    node.add_argument("--gnss", metavar="URL",
                      help="serial:///dev/ttyACM0?baud=9600 | file:///track.nmea?pace=1 | "
                           "udp://0.0.0.0:10110")


def run(args: argparse.Namespace) -> int:
    """Run ``fieldc2 relay`` or ``fieldc2 node`` until Ctrl+C."""
    data = load_toml(args.config)
    base = args.config.parent if args.config else Path.cwd()
    table = data.get(args.command, {})
    state_dir = _path(_pick(args, "state_dir", table, "state_dir", f"{args.command}-state"),
                      base)
    channel = channel_settings(args, data, base, state_dir)
    if args.command == "relay":
        main = run_relay(channel, relay_settings(args, table, base), state_dir)
    else:
        main = run_node(args, channel, data.get("node", {}), base)
    asyncio.run(_until_signal(main))
    return 0


async def _until_signal(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main``; SIGINT or SIGTERM cancels it, and its ``async with`` blocks
    persist state and close the radio on the way out."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await main


def relay_settings(args: argparse.Namespace, table: dict[str, Any], base: Path) -> RelaySettings:
    server = str(_pick(args, "server", table, "server", "127.0.0.1:8087"))
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"server {server!r} is not HOST:PORT")
    tls = _tls_files(args, {args.command: table}, base)
    try:
        return RelaySettings(
            host=host.strip("[]") or "127.0.0.1", port=int(port), tls=tls,
            **{k: type(getattr(RelaySettings, k))(table[k]) for k in _RELAY_KEYS if k in table})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[relay]: {exc}") from exc


_RELAY_KEYS = ("uid", "callsign", "team", "role", "lat", "lon", "position_interval",
               "positions_down")


async def run_relay(channel: ChannelSettings, settings: RelaySettings,
                    state_dir: Path | None) -> None:
    holder: list[RadioStation] = []
    adapter = await open_adapter(channel.adapter)

    def factory(on_record: RecordSink, app_state: Callable[[], bytes]) -> RadioStation:
        station = RadioStation(adapter, keys=list(channel.keys), slot=RELAY_SLOT,
                               profile=channel.profile, context=channel.context(),
                               on_record=on_record, state_dir=state_dir, app_state=app_state)
        holder.append(station)
        return station

    async with Relay(settings, channel.roster, factory):
        log.info("relay up: radio %s, post %s:%d", channel.adapter, settings.host, settings.port)
        await asyncio.Event().wait()


async def run_node(args: argparse.Namespace, channel: ChannelSettings, table: dict[str, Any],
                   base: Path) -> None:
    slot = _pick(args, "slot", table, "slot")
    if slot is None or channel.roster.by_slot(int(slot)) is None:
        raise ConfigError("--slot must name this device's entry in the roster")
    state_dir = _path(_pick(args, "state_dir", table, "state_dir", "node-state"), base)
    try:
        settings = NodeSettings(slot=int(slot), channel_id=channel.keys[-1].channel_id,
                                **{k: float(table[k]) for k in _NODE_KEYS if k in table})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[node]: {exc}") from exc
    adapter = await open_adapter(channel.adapter)

    def factory(on_record: RecordSink) -> RadioStation:
        return RadioStation(adapter, keys=list(channel.keys), slot=settings.slot,
                            profile=channel.profile, context=channel.context(),
                            on_record=on_record, state_dir=state_dir)

    me = channel.roster.by_slot(settings.slot)
    assert me is not None  # checked above
    signer, public = node_signer((state_dir or base) / NODE_KEY_FILE, me.uid)
    print(f"node key (roster public_key of slot {settings.slot}): {public.hex()}", flush=True)
    gnss_url = _pick(args, "gnss", table, "gnss")
    async with Node(NodeCore(settings, channel.roster, signer), factory,
                    show=lambda line: print(line, flush=True)) as node:
        if gnss_url:
            node.follow_gnss(open_gnss(str(gnss_url)))
        node.follow_commands(stdin_lines())
        print(f"node {settings.slot} on {channel.adapter}; type help", flush=True)
        await asyncio.Event().wait()


_NODE_KEYS = ("report_interval", "move_threshold", "min_interval")


def main(argv: list[str] | None = None) -> int:
    """``python -m fieldc2.relay_cli relay|node ...``: the commands without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="fieldc2")
    add_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        return run(args)
    except FieldC2Error as exc:
        print(f"fieldc2: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
