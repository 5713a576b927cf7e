"""Configuration: frozen dataclasses, one docstring per field.

This module and the CLI are the only places that read files or the
environment.  Everything else receives a :class:`Config` explicitly.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldc2.errors import ConfigError


def default_data_dir() -> Path:
    """``./fieldc2-data``, or ``$FIELDC2_DATA_DIR`` when set."""
    return Path(os.environ.get("FIELDC2_DATA_DIR", "fieldc2-data"))


@dataclass(frozen=True)
class StreamConfig:
    """CoT streaming listeners and per-client delivery policy."""

    tcp_enabled: bool = True
    """Accept CoT over plain TCP.  Switch off once everyone uses TLS."""
    tcp_port: int = 8087
    """Port for CoT over TCP (ATAK's default streaming port)."""
    tcp_require_auth: bool = False
    """Require an ``<auth>`` login (a user with a password) on plain TCP
    before any event is accepted; its groups then come from the account."""
    offer_tak_v1: bool = True
    """Offer TAK protocol v1 (protobuf) to XML clients with ``t-x-takp-v``."""
    max_event_size: int = 256 * 1024
    """Largest CoT event accepted, bytes.  Larger ones are logged and dropped."""
    flush_interval: float = 0.1
    """Seconds between fan-out ticks.  Events received within one tick are
    written to each recipient in one write: longer ticks cost less CPU and add
    up to this much latency."""
    write_buffer_high: int = 256 * 1024
    """Bytes queued in the kernel-facing buffer of one client before it is
    treated as slow and switched to its latest-only backlog."""
    slow_client_timeout: float = 30.0
    """Seconds a client may stay slow before it is disconnected."""
    max_backlog: int = 1000
    """Non-position events held for a slow client before it is disconnected
    (positions are latest-only per uid and need no limit beyond the uid count)."""
    picture_delay: float = 1.0
    """Seconds after connecting before the current picture is sent to a client
    that has not sent anything yet (its first message triggers it sooner)."""


@dataclass(frozen=True)
class TlsConfig:
    """CoT streaming over mutual TLS, with the built-in certificate authority."""

    enabled: bool = True
    """Serve CoT over TLS.  The CA and the server certificate are created in
    ``<data_dir>/ca`` on first start when they do not exist."""
    port: int = 8089
    """Port for CoT over TLS (ATAK's default SSL streaming port)."""
    hostnames: tuple[str, ...] = ("localhost",)
    """DNS names clients use to reach the server (in its certificate)."""
    ips: tuple[str, ...] = ("127.0.0.1",)
    """IP addresses clients use to reach the server (in its certificate)."""
    key_type: str = "rsa2048"
    """Key type for a new CA and its certificates: ``rsa2048`` or ``p256``."""


@dataclass(frozen=True)
class HttpConfig:
    """The Marti HTTP API that TAK clients call."""

    enabled: bool = True
    """Serve the Marti API."""
    port: int = 8443
    """Port for the Marti API: HTTPS requiring a client certificate from the
    built-in CA when ``[tls]`` is enabled; otherwise plain HTTP, open to all
    (closed to all if ``stream.tcp_require_auth``: nobody can be identified)."""


@dataclass(frozen=True)
class EnrollmentConfig:
    """Certificate enrollment: TAK clients trade a user name and password
    (``fieldc2 user add``) for a client certificate from the built-in CA."""

    enabled: bool = True
    """Serve enrollment over HTTPS (needs ``[tls]`` enabled, for the CA)."""
    port: int = 8446
    """Port for enrollment (the TAK clients' default)."""
    cert_days: int = 365
    """Validity of the certificates enrollment issues, days."""


@dataclass(frozen=True)
class MulticastConfig:
    """Mesh SA: TAK protocol v1 and XML over UDP multicast."""

    enabled: bool = False
    """Bridge the multicast mesh to the server.  Off: it leaves the host."""
    group: str = "239.2.3.1"
    """Multicast group TAK clients use for SA."""
    port: int = 6969
    """Multicast port TAK clients use for SA."""
    interface: str = "0.0.0.0"
    """Address of the local interface to join and send on."""
    ttl: int = 1
    """Multicast TTL: 1 keeps it on the local network."""
    send: bool = True
    """Forward server events to the mesh."""
    format: str = "proto"
    """What the server sends to the mesh: ``proto`` (TAK v1 mesh, what ATAK
    sends by default) or ``xml`` (for legacy peers).  Both are received."""


@dataclass(frozen=True)
class GroupConfig:
    """Who shares a picture with whom."""

    default: str = "__ANON__"
    """Group of a client that names none and is not listed in ``members``."""
    from_cot: bool = True
    """Take a client's group from the ``__group`` name in its self-report."""
    members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Server-side groups by client uid or callsign; these override ``__group``."""


@dataclass(frozen=True)
class StoreConfig:
    """Persistence of the picture and the event history."""

    backend: str = "sqlite"
    """``sqlite`` (default, a file in the data dir), ``memory`` or ``postgres``."""
    url: str = ""
    """Connection URL for a server database backend."""
    history_retention: float = 7 * 24 * 3600.0
    """Seconds of event history kept."""


@dataclass(frozen=True)
class BusConfig:
    """The message bus between server instances."""

    backend: str = "memory"
    """``memory`` (one process, default) or ``nats``."""
    url: str = ""
    """Connection URL for a networked bus."""


@dataclass(frozen=True)
class OrdersConfig:
    """Orders sent to teams when a plan is published, and their tracking."""

    ack_timeout: float = 300.0
    """Seconds a device may take to acknowledge an order before the command
    post is alerted."""
    check_interval: float = 5.0
    """Seconds between checks for overdue acknowledgements."""
    signing_key: str = ""
    """Ed25519 key (PEM) orders are signed with; made on first start.
    Empty: ``<data_dir>/orders/signing.key``."""
    origin_uid: str = ""
    """CoT uid of the command post as the author of orders.  Empty:
    ``fieldc2-<server_name>``."""
    callsign: str = "COMMAND POST"
    """Name the command post has in the teams' chat."""
    alert_groups: tuple[str, ...] = ()
    """Groups that receive overdue alerts.  Empty: the default group."""
    solve_time_limit: float = 10.0
    """Default solver time for ``POST /api/plan/solve``, seconds."""
    max_solve_time: float = 300.0
    """Longest solver time an API request may ask for, seconds."""


@dataclass(frozen=True)
class Config:
    """A whole command post."""

    bind: str = "127.0.0.1"
    """Address to listen on.  Loopback by default: nothing is exposed until asked."""
    data_dir: Path = field(default_factory=default_data_dir)
    """Where the database and keys live."""
    server_name: str = "fieldc2"
    """Name reported to clients by the Marti API."""
    stream: StreamConfig = StreamConfig()
    tls: TlsConfig = TlsConfig()
    http: HttpConfig = HttpConfig()
    enrollment: EnrollmentConfig = EnrollmentConfig()
    multicast: MulticastConfig = MulticastConfig()
    groups: GroupConfig = GroupConfig()
    store: StoreConfig = StoreConfig()
    bus: BusConfig = BusConfig()
    orders: OrdersConfig = OrdersConfig()


_SECTIONS: dict[str, type[Any]] = {
    "stream": StreamConfig,
    "tls": TlsConfig,
    "http": HttpConfig,
    "enrollment": EnrollmentConfig,
    "multicast": MulticastConfig,
    "groups": GroupConfig,
    "store": StoreConfig,
    "bus": BusConfig,
    "orders": OrdersConfig,
}


def _section(cls: type[Any], name: str, values: Mapping[str, Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"[{name}] has unknown keys {unknown}; known: {sorted(known)}")
    kwargs = dict(values)
    if cls is GroupConfig and "members" in kwargs:
        kwargs["members"] = {k: tuple(v) for k, v in kwargs["members"].items()}
    for key, value in kwargs.items():
        default = getattr(cls(), key)
        if isinstance(default, tuple):
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"[{name}] {key} = {value!r}: expected a list of strings")
            kwargs[key] = tuple(value)
            continue
        if isinstance(default, bool) != isinstance(value, bool) or (
            isinstance(default, int | float | str) and not isinstance(value, type(default))
            and not (isinstance(default, float) and isinstance(value, int))
        ):
            raise ConfigError(f"[{name}] {key} = {value!r}: expected {type(default).__name__}")
    return cls(**kwargs)


def load_config(path: Path | None = None, **overrides: Any) -> Config:
    """Read a TOML file (optional), then apply command-line overrides.

    Overrides use dotted section names, e.g. ``{"stream.tcp_port": 9000}``
    passed as ``**{"stream.tcp_port": 9000}``; ``None`` values are ignored.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(
                f"config file {path} not found; create one with `fieldc2 init`") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        (raw.setdefault(section, {}) if section else raw)[name] = value
    top: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table")
            top[key] = _section(_SECTIONS[key], key, value)
        elif key == "data_dir":
            top[key] = Path(value)
        elif key in ("bind", "server_name"):
            top[key] = str(value)
        else:
            raise ConfigError(f"unknown top-level key {key!r} in the configuration")
    return Config(**top)


DEFAULT_TOML = '''\
# fieldc2 command post configuration.  Every value shown is the default;
# delete what you do not change.  `fieldc2 serve --config THIS_FILE`.

# Address to listen on. Loopback by default; "0.0.0.0" serves the network.
bind = "127.0.0.1"
# Database, keys and logs live here.
data_dir = "fieldc2-data"
# Name reported to TAK clients by the Marti API.
server_name = "fieldc2"

[stream]
# CoT over plain TCP (ATAK "TCP" connections).
tcp_enabled = true
tcp_port = 8087
# Require an <auth> login (see `fieldc2 user add`) on plain TCP.
tcp_require_auth = false
# Offer TAK protocol v1 (protobuf, ~2.5x smaller) to clients that ask for it.
offer_tak_v1 = true
# Largest CoT event accepted, in bytes.
max_event_size = 262144
# Seconds between fan-out ticks: events are batched per recipient per tick.
flush_interval = 0.1
# A client whose unsent data exceeds this many bytes is "slow": it gets only
# the latest position per uid until it catches up...
write_buffer_high = 262144
# ...and is disconnected if it stays slow this many seconds,
slow_client_timeout = 30.0
# or if more than this many non-position events pile up for it.
max_backlog = 1000
# Seconds before a silent new client is sent the current picture.
picture_delay = 1.0

[tls]
# CoT over mutual TLS (ATAK "SSL" connections). The certificate authority and
# the server certificate are made in <data_dir>/ca on first start.
enabled = true
port = 8089
# Names and addresses clients use to reach this server (go in its certificate).
hostnames = ["localhost"]
ips = ["127.0.0.1"]
# rsa2048 (what every TAK client imports) or p256.
key_type = "rsa2048"

[http]
# Marti API for TAK clients: HTTPS with client certificates from the built-in
# CA when [tls] is enabled (plain HTTP, open to all, when it is not).
enabled = true
port = 8443

[enrollment]
# Certificate enrollment (HTTPS, user name and password from `fieldc2 user
# add`): TAK clients get their certificate here. Needs [tls] enabled.
enabled = true
port = 8446
# Validity of the certificates it issues, days.
cert_days = 365

[multicast]
# Mesh SA bridge on 239.2.3.1:6969. Off by default: it leaves the host.
enabled = false
group = "239.2.3.1"
port = 6969
interface = "0.0.0.0"
ttl = 1
send = true
# Send TAK v1 ("proto") or CoT XML ("xml") to the mesh; both are received.
format = "proto"

[groups]
# Clients share events only with clients in a common group.
default = "__ANON__"
# Take a client's group from the __group name (team colour) it reports.
from_cot = true
# Server-side groups by uid or callsign override __group, e.g.
# members = { "ANDROID-abc" = ["Cyan", "Command"], "BRAVO" = ["Red"] }

[store]
# sqlite (default), memory, or postgres (pip install 'fieldc2[postgres]').
backend = "sqlite"
url = ""
# Seconds of event history kept (7 days).
history_retention = 604800.0

[bus]
# memory (one process) or nats (pip install 'fieldc2[nats]').
backend = "memory"
url = ""

[orders]
# Seconds a device may take to acknowledge an order before the command post
# is alerted, and how often that is checked.
ack_timeout = 300.0
check_interval = 5.0
# Ed25519 key orders are signed with ("" = <data_dir>/orders/signing.key).
signing_key = ""
# The command post as the author of orders ("" = fieldc2-<server_name>).
origin_uid = ""
callsign = "COMMAND POST"
# Groups told about overdue acknowledgements ([] = the default group).
alert_groups = []
# Solver seconds for the REST API: default and the most a request may ask.
solve_time_limit = 10.0
max_solve_time = 300.0
'''
