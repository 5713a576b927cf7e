"""Records that cross a radio channel, and the roster that names its slots.

These are the application records of the low-bandwidth link (see
``docs/dil.md``): frozen value types in one tagged union,
encoded bit-packed by :mod:`fieldc2.protocol.compact` and mapped to and from
CoT by :mod:`fieldc2.protocol.compact_cot`.  Participants are 1-byte slots,
not CoT uids, because a uid costs 20-40 bytes and a slot costs one; the
:class:`Roster` is the table between the two.

Units are the ones the wire can hold exactly once quantised: times are whole
Unix seconds, positions degrees (on the 1e-5 degree grid after a round trip),
heights metres, courses degrees true, speeds metres per second.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import msgspec

from fieldc2.errors import ConfigError
from fieldc2.model.precedence import Precedence

#: Slot ids are one byte; 255 is "everyone", so 255 slots remain for people.
BROADCAST = 255
MAX_SLOTS = 255
#: The relay is slot 0 by convention; server-side items enter radio under it.
RELAY_SLOT = 0
#: CoT type a participant gets when neither the roster file nor its Announce says.
DEFAULT_COT_TYPE = "a-f-G-U-C"


class ReportKind(enum.IntEnum):
    """What a field report is about.  The values are the 3-bit wire code."""

    SPOT = 0
    CLUE = 1
    CASUALTY = 2
    HAZARD = 3
    SITREP = 4
    NEED = 5


class TaskKind(enum.IntEnum):
    """What an order asks a team to do.  The values are the 4-bit wire code."""

    OTHER = 0
    SEARCH = 1
    RESCUE = 2
    MOVE = 3
    SUPPLY = 4
    EVACUATE = 5
    HOLD = 6
    REPORT = 7
    RETURN = 8


class OrderState(enum.IntEnum):
    """Where a recipient is with an order.  The values are the 3-bit wire code."""

    RECEIVED = 0
    ACKNOWLEDGED = 1
    IN_PROGRESS = 2
    DONE = 3
    FAILED = 4


class Fix(msgspec.Struct, frozen=True, kw_only=True):
    """One position of one track.  ``course`` and ``speed`` come as a pair
    (CoT's ``<track>`` holds both or neither)."""

    track: int
    """Slot of the tracked participant, 0..254."""
    fix_no: int
    """Per-track sequence number modulo 16; names the fix in acks and deltas."""
    time: int
    lat: float
    lon: float
    hae: float | None = None
    course: float | None = None
    speed: float | None = None


class PositionBatch(msgspec.Struct, frozen=True, tag=True):
    """Fixes of one or more tracks in one record (one frame, one header, one tag)."""

    fixes: tuple[Fix, ...]


class Text(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A chat line.  ``room`` names a chat room or team; "" is the default room.

    A FLASH text (``flash``) goes first on the link and carries the sender's
    Ed25519 ``signature`` over :func:`fieldc2.orders.sign.flash_signing_bytes`;
    ``time`` (whole Unix seconds, FLASH only) makes a replay recognisable."""

    sender: int
    to: int = BROADCAST
    text: str
    room: str = ""
    flash: bool = False
    time: int | None = None
    signature: bytes = b""


class Report(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A field report that becomes a map marker."""

    sender: int
    report_id: int
    """16-bit, unique per sender."""
    kind: ReportKind
    time: int
    lat: float
    lon: float
    text: str = ""
    count: int | None = None
    severity: int | None = None
    """0..7, higher is worse."""
    flash: bool = False
    """Sent FLASH; then ``signature`` is the sender's Ed25519 signature."""
    signature: bytes = b""


class Order(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A signed tasking from an originator to a slot (or everyone)."""

    origin: int
    order_id: int
    """16-bit, unique per origin."""
    to: int
    precedence: Precedence
    task: TaskKind
    text: str = ""
    due: int | None = None
    lat: float | None = None
    lon: float | None = None
    signature: bytes = b""
    """Ed25519, 64 bytes or empty: over :func:`fieldc2.orders.sign.signing_bytes` when
    ``ref`` is set (an order of the command post), else over
    :func:`fieldc2.protocol.compact.order_signing_bytes` (an order made on the radio)."""
    ref: str = ""
    """The command post's order id (``ORD-1A2B3C4D``); "" for an order made on the radio."""
    task_ref: str = ""
    """The command post's task id the order is about, or ""."""


class OrderStatus(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A recipient's progress on an order."""

    sender: int
    order_id: int
    state: OrderState
    time: int


class Announce(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Binds a slot to a CoT identity; how receivers learn the roster."""

    slot: int
    uid: str
    callsign: str = ""
    team: str = ""
    role: str = ""
    public_key: bytes = b""
    """Ed25519 public key (32 bytes) of an order originator, or empty."""
    cot_type: str = DEFAULT_COT_TYPE


Record = PositionBatch | Text | Report | Order | OrderStatus | Announce


class RosterEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One participant of a channel."""

    slot: int
    uid: str
    callsign: str = ""
    team: str = ""
    role: str = ""
    cot_type: str = DEFAULT_COT_TYPE
    public_key: bytes = b""

    def announce(self) -> Announce:
        """The record that teaches this entry to other nodes."""
        return Announce(slot=self.slot, uid=self.uid, callsign=self.callsign, team=self.team,
                        role=self.role, public_key=self.public_key, cot_type=self.cot_type)


class Roster:
    """Slot <-> identity table of one channel, bounded by the 1-byte slot space.

    A uid holds one slot; learning an Announce for a slot replaces what the
    slot held and frees the uid's previous slot, so the table stays a bijection.
    """

    def __init__(self, entries: Iterable[RosterEntry] = ()) -> None:
        self._by_slot: dict[int, RosterEntry] = {}
        self._by_uid: dict[str, RosterEntry] = {}
        for entry in entries:
            self.add(entry)

    def __len__(self) -> int:
        return len(self._by_slot)

    def __iter__(self) -> Iterator[RosterEntry]:
        return iter(sorted(self._by_slot.values(), key=lambda e: e.slot))

    def by_slot(self, slot: int) -> RosterEntry | None:
        return self._by_slot.get(slot)

    def by_uid(self, uid: str) -> RosterEntry | None:
        return self._by_uid.get(uid)

    def by_callsign(self, callsign: str) -> RosterEntry | None:
        """First entry with this callsign (callsigns should be unique; not enforced)."""
        return next((e for e in self if e.callsign == callsign), None)

    def add(self, entry: RosterEntry) -> None:
        """Put an entry in its slot, replacing whatever held that slot or uid."""
        if not 0 <= entry.slot < MAX_SLOTS:
            raise ConfigError(f"roster slot {entry.slot} outside 0..{MAX_SLOTS - 1}")
        if not entry.uid:
            raise ConfigError(f"roster slot {entry.slot} has an empty uid")
        if entry.public_key and len(entry.public_key) != 32:
            raise ConfigError(f"roster slot {entry.slot}: public key must be 32 bytes")
        old = self._by_slot.pop(entry.slot, None)
        if old is not None:
            self._by_uid.pop(old.uid, None)
        previous = self._by_uid.pop(entry.uid, None)
        if previous is not None:
            self._by_slot.pop(previous.slot, None)
        self._by_slot[entry.slot] = entry
        self._by_uid[entry.uid] = entry

    def learn(self, announce: Announce) -> RosterEntry:
        """Take an Announce heard on the channel into the table."""
        entry = RosterEntry(slot=announce.slot, uid=announce.uid, callsign=announce.callsign,
                            team=announce.team, role=announce.role,
                            cot_type=announce.cot_type, public_key=announce.public_key)
        self.add(entry)
        return entry

    def allocate(self, uid: str, **fields: Any) -> RosterEntry:
        """The uid's entry, giving it the lowest free slot above the relay's if new.

        The caller announces the returned entry so receivers learn it."""
        existing = self._by_uid.get(uid)
        if existing is not None:
            return existing
        free = next((s for s in range(RELAY_SLOT + 1, MAX_SLOTS) if s not in self._by_slot), None)
        if free is None:
            raise ConfigError(f"roster full: all {MAX_SLOTS} slots are taken")
        entry = RosterEntry(slot=free, uid=uid, **fields)
        self.add(entry)
        return entry

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Roster:
        """Build from ``{"member": [{"slot": 1, "uid": "...", ...}, ...]}``.

        ``public_key`` is hex.  Used for TOML and JSON alike."""
        members = data.get("member", [])
        if not isinstance(members, list):
            raise ConfigError("roster: 'member' must be a list of tables")
        entries = []
        for item in members:
            try:
                item = dict(item)
                item["public_key"] = bytes.fromhex(item.get("public_key", ""))
                entries.append(msgspec.convert(item, RosterEntry))
            except (TypeError, ValueError, msgspec.ValidationError) as exc:
                raise ConfigError(f"roster member {item!r}: {exc}") from exc
        return cls(entries)

    @classmethod
    def from_toml(cls, text: str) -> Roster:
        """Parse a roster file's text (``[[member]]`` tables); config.py reads the file."""
        try:
            return cls.from_mapping(tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"roster: {exc}") from exc
