"""The CoT event as fieldc2 holds it, independent of wire format.

The shape follows TAK protocol v1 (``CotEvent`` and ``Detail``) because that
is the richer of the two formats in typed fields, and XML maps onto it
losslessly: the six detail elements protobuf knows by type live in typed
fields, every other detail element is kept verbatim as XML text in
``Detail.xml``.  Times are integer milliseconds since the Unix epoch, as in
protobuf; XML times are parsed to and written from that.
"""

from __future__ import annotations

import msgspec

#: The value TAK clients send for an unknown circular/linear error or height.
UNKNOWN_ERROR = 9999999.0


class Contact(msgspec.Struct, frozen=True, kw_only=True):
    """``<contact endpoint= callsign=/>``: how to reach the sender and its name."""

    endpoint: str = ""
    callsign: str = ""


class Group(msgspec.Struct, frozen=True, kw_only=True):
    """``<__group name= role=/>``: the team colour and role a client claims."""

    name: str = ""
    role: str = ""


class PrecisionLocation(msgspec.Struct, frozen=True, kw_only=True):
    """``<precisionlocation geopointsrc= altsrc=/>``: where the fix came from."""

    geopointsrc: str = ""
    altsrc: str = ""


class Status(msgspec.Struct, frozen=True, kw_only=True):
    """``<status battery=/>``: device battery percentage."""

    battery: int = 0


class Takv(msgspec.Struct, frozen=True, kw_only=True):
    """``<takv device= platform= os= version=/>``: the client software."""

    device: str = ""
    platform: str = ""
    os: str = ""
    version: str = ""


class Track(msgspec.Struct, frozen=True, kw_only=True):
    """``<track speed= course=/>``: metres per second and degrees true."""

    speed: float = 0.0
    course: float = 0.0


class Detail(msgspec.Struct, frozen=True, kw_only=True):
    """Typed detail elements plus every other element as verbatim XML."""

    contact: Contact | None = None
    group: Group | None = None
    precision_location: PrecisionLocation | None = None
    status: Status | None = None
    takv: Takv | None = None
    track: Track | None = None
    xml: str = ""


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One CoT event: who (uid), what (type), where (point), when (times)."""

    uid: str
    type: str
    how: str = ""
    time: int
    start: int
    stale: int
    lat: float = 0.0
    lon: float = 0.0
    hae: float = UNKNOWN_ERROR
    ce: float = UNKNOWN_ERROR
    le: float = UNKNOWN_ERROR
    access: str = ""
    qos: str = ""
    opex: str = ""
    detail: Detail = Detail()

    @property
    def callsign(self) -> str:
        """The typed contact's callsign, or ``""``.  A contact that protobuf
        cannot hold stays in ``detail.xml``; routing reads the callsign from
        ``EventFacts.callsign``, which covers both cases."""
        contact = self.detail.contact
        return contact.callsign if contact is not None else ""

    def is_stale(self, now_ms: int) -> bool:
        """True once the event's stale time has passed."""
        return self.stale <= now_ms


class EventFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What routing needs from the detail, read once while decoding.

    These are derived from the detail by the decoder so that the
    router never parses XML again: directed-message addressees
    (``<marti><dest callsign= uid=/></marti>``), the items a delete or
    receipt refers to (``<link uid=/>``) and whether an emergency is cancelled.
    """

    dest_callsigns: tuple[str, ...] = ()
    dest_uids: tuple[str, ...] = ()
    link_uids: tuple[str, ...] = ()
    emergency_cancel: bool = False
    callsign: str | None = None
    """``<contact callsign=>``; None when the event has no contact at all.
    Read here whether or not the contact fits the typed field."""
    group: str | None = None
    """``<__group name=>``; None when the event names no group."""
    role: str = ""
    """``<__group role=>``."""

    @property
    def directed(self) -> bool:
        """True when the event names its recipients."""
        return bool(self.dest_callsigns or self.dest_uids)


NO_FACTS = EventFacts()
