"""GNSS fixes from NMEA 0183, sans-I/O: bytes in, :class:`Fix` values out.

Any receiver speaks NMEA 0183, whatever its constellations: the talker says
which system computed a sentence (``GP`` GPS, ``GL`` GLONASS, ``GA`` Galileo,
``GB``/``BD`` BeiDou, ``GN`` a combined solution).  A position needs two
sentences: ``GGA`` carries altitude, fix quality, satellites and HDOP but no
date; ``RMC`` carries the date, speed and course but no altitude.  A receiver
sends both for every epoch, so the decoder joins the two that share a UTC time
of day and emits one fix per epoch.

An epoch is complete when it holds every sentence type the two previous
epochs held (both, at first), so a receiver configured to send only RMC still gets a
fix per sentence after the first epochs, without waiting a second.  A partial
epoch is emitted when the next one starts or on :meth:`NmeaDecoder.flush`.

Serial lines carry noise: a sentence that fails its checksum, does not parse
or is too long is counted in :attr:`NmeaDecoder.stats` and skipped.  Nothing
a receiver sends can make the decoder raise; :class:`~fieldc2.errors.NmeaError`
is used inside and for :func:`parse_sentence`, which callers may use directly.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from dataclasses import dataclass

import msgspec
import pynmea2

from fieldc2.errors import NmeaError

#: Longest line kept.  NMEA 0183 caps a sentence at 82 characters; proprietary
#: sentences (u-blox ``PUBX``) run longer, so leave room, but a line without an
#: end in sight is noise and must not grow the buffer.
MAX_LINE = 256
#: Fixes decoded but not yet taken.  A file read in one go yields many; the
#: shells drain after every read, so this only bounds a careless caller (the
#: oldest fix is dropped: a newer position supersedes it).
MAX_PENDING_FIXES = 1024
#: Epochs whose sentence types make up the expected set.  Two, so that one
#: sentence lost to line noise does not teach the decoder to stop waiting for
#: its type (and then emit that epoch twice, once per sentence).
EXPECTATION_EPOCHS = 2
#: Talkers accepted for position sentences.
TALKERS = frozenset({"GP", "GL", "GA", "GB", "BD", "GN", "GQ", "GI"})
KNOTS = 1852.0 / 3600.0
_HALF_DAY = 43_200.0


class Fix(msgspec.Struct, frozen=True, kw_only=True):
    """One position epoch from a GNSS receiver."""

    time_of_day: float
    """UTC seconds since midnight (every sentence has it)."""
    time: float | None
    """Unix seconds UTC; None until an RMC sentence has told the date."""
    lat: float
    lon: float
    alt: float | None = None
    """Metres above mean sea level (GGA); None when the receiver did not say."""
    speed: float | None = None
    """Metres per second over ground (RMC, from knots)."""
    course: float | None = None
    """Degrees true (RMC); None when the receiver does not know (standing still)."""
    quality: int = 1
    """GGA fix quality: 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 dead reckoning..."""
    satellites: int | None = None
    hdop: float | None = None
    talker: str = ""
    """Talker of the first sentence of the epoch: GP, GL, GA, GB, BD or GN."""


@dataclass
class NmeaStats:
    """What the decoder saw; the GNSS health shown to the operator."""

    sentences: int = 0
    fixes: int = 0
    bad_checksum: int = 0
    malformed: int = 0
    oversize: int = 0
    no_fix: int = 0
    """Epochs in which the receiver said it had no position."""
    late: int = 0
    """Sentences of an epoch already emitted (its partner came too late)."""
    ignored: int = 0
    """Valid sentences of other types (GSV, GSA, VTG...) or talkers."""


@dataclass
class _Epoch:
    time_of_day: float
    talker: str
    gga: pynmea2.GGA | None = None
    rmc: pynmea2.RMC | None = None

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(k for k, s in (("GGA", self.gga), ("RMC", self.rmc)) if s is not None)


def parse_sentence(line: str) -> pynmea2.TalkerSentence:
    """Parse and checksum-verify one sentence; NmeaError when it is unusable."""
    if not line.startswith("$") or "*" not in line:
        raise NmeaError(f"not a checksummed NMEA sentence: {line[:40]!r}")
    try:
        return pynmea2.parse(line, check=True)
    except pynmea2.ChecksumError as exc:
        raise NmeaError(f"checksum mismatch: {line[:40]!r}") from exc
    except (pynmea2.ParseError, ValueError, TypeError, AttributeError) as exc:
        raise NmeaError(f"malformed sentence: {line[:40]!r}") from exc


def _seconds(value: dt.time) -> float:
    return value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6


def _field(sentence: pynmea2.TalkerSentence, index: int) -> str:
    """A raw field; a short sentence simply lacks the optional tail fields."""
    data = sentence.data
    return str(data[index]) if index < len(data) else ""


def _number(text: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise NmeaError(f"bad number {text[:20]!r}") from exc
    if not math.isfinite(value):
        raise NmeaError(f"bad number {text[:20]!r}")
    return value


def _position(sentence: pynmea2.TalkerSentence) -> tuple[float, float]:
    if not getattr(sentence, "lat", "") or not getattr(sentence, "lon", ""):
        raise NmeaError("a fix without coordinates")
    try:
        lat, lon = float(sentence.latitude), float(sentence.longitude)
    except (ValueError, TypeError, AttributeError) as exc:
        raise NmeaError("bad coordinates") from exc
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0) or not math.isfinite(lat + lon):
        raise NmeaError(f"coordinates out of range: {lat}, {lon}")
    return lat, lon


class NmeaDecoder:
    """Sans-I/O NMEA 0183 decoder: ``receive_data`` then ``next_fix`` until None."""

    def __init__(self) -> None:
        self.stats = NmeaStats()
        self._buffer = bytearray()
        self._discarding = False
        self._fixes: deque[Fix] = deque(maxlen=MAX_PENDING_FIXES)
        self._epoch: _Epoch | None = None
        self._recent_kinds: deque[frozenset[str]] = deque(
            [frozenset({"GGA", "RMC"})], maxlen=EXPECTATION_EPOCHS)
        self._closed_tod: float | None = None
        self._date: dt.date | None = None
        self._last_tod: float | None = None

    def receive_data(self, data: bytes) -> None:
        """Feed bytes as they come from a serial port, file or datagram."""
        for chunk in data.splitlines(keepends=True):
            if self._discarding:
                self._discarding = not chunk.endswith((b"\n", b"\r"))
                continue
            self._buffer += chunk
            if chunk.endswith((b"\n", b"\r")):
                line = bytes(self._buffer).strip()
                self._buffer.clear()
                if line:
                    self.receive_line(line)
            elif len(self._buffer) > MAX_LINE:
                self.stats.oversize += 1
                self._buffer.clear()
                self._discarding = True

    def receive_line(self, raw: bytes | str) -> None:
        """Feed one complete line (from a UDP datagram or a file)."""
        if len(raw) > MAX_LINE:
            self.stats.oversize += 1
            return
        line = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
        line = line.strip()
        try:
            sentence = parse_sentence(line)
        except NmeaError as exc:
            if str(exc).startswith("checksum"):
                self.stats.bad_checksum += 1
            else:
                self.stats.malformed += 1
            return
        self.stats.sentences += 1
        kind = getattr(sentence, "sentence_type", "")
        if kind not in ("GGA", "RMC") or getattr(sentence, "talker", "") not in TALKERS:
            self.stats.ignored += 1
            return
        try:
            self._take(sentence, kind)
        except NmeaError:
            self.stats.malformed += 1

    def _take(self, sentence: pynmea2.TalkerSentence, kind: str) -> None:
        stamp = sentence.timestamp
        if not isinstance(stamp, dt.time):
            raise NmeaError("sentence without a time")
        tod = _seconds(stamp)
        if tod == self._closed_tod:
            self.stats.late += 1  # its epoch is already out; a fix is not revised
            return
        if self._epoch is not None and self._epoch.time_of_day != tod:
            self._close_epoch()
        if self._epoch is None:
            self._epoch = _Epoch(tod, sentence.talker)
        if kind == "GGA":
            self._epoch.gga = self._epoch.gga or sentence
        else:
            self._epoch.rmc = self._epoch.rmc or sentence
        if self._epoch.kinds >= frozenset().union(*self._recent_kinds):
            self._close_epoch()

    def flush(self) -> None:
        """End of input: emit the epoch still waiting for its other sentence."""
        if self._epoch is not None:
            self._close_epoch()

    def next_fix(self) -> Fix | None:
        """The oldest decoded fix, or None when more data is needed."""
        return self._fixes.popleft() if self._fixes else None

    def _close_epoch(self) -> None:
        epoch, self._epoch = self._epoch, None
        if epoch is None:
            return
        self._recent_kinds.append(epoch.kinds)
        self._closed_tod = epoch.time_of_day
        try:
            fix = self._fix(epoch)
        except NmeaError:
            self.stats.malformed += 1
            return
        if fix is None:
            self.stats.no_fix += 1
            return
        self.stats.fixes += 1
        self._fixes.append(fix)

    def _fix(self, epoch: _Epoch) -> Fix | None:
        gga, rmc = epoch.gga, epoch.rmc
        if gga is not None and int(_number(_field(gga, 5)) or 0) == 0:
            return None
        if rmc is not None and gga is None and rmc.status != "A":
            return None
        source = gga if gga is not None else rmc
        assert source is not None
        lat, lon = _position(source)
        speed = course = None
        if rmc is not None:
            knots = _number(_field(rmc, 6))
            speed = None if knots is None else knots * KNOTS
            course = _number(_field(rmc, 7))
            self._learn_date(rmc)
        return Fix(
            time_of_day=epoch.time_of_day, time=self._unix(epoch.time_of_day), lat=lat, lon=lon,
            alt=_number(_field(gga, 8)) if gga is not None else None,
            speed=speed, course=course,
            quality=int(_number(_field(gga, 5)) or 0) if gga is not None else 1,
            satellites=int(_number(_field(gga, 6)) or 0) if gga is not None else None,
            hdop=_number(_field(gga, 7)) if gga is not None else None,
            talker=epoch.talker)

    def _learn_date(self, rmc: pynmea2.RMC) -> None:
        try:
            date = rmc.datestamp
        except (ValueError, TypeError) as exc:
            raise NmeaError("bad date") from exc
        if isinstance(date, dt.date):
            self._date = date
            self._last_tod = None

    def _unix(self, tod: float) -> float | None:
        if self._date is None:
            return None
        if self._last_tod is not None and self._last_tod - tod > _HALF_DAY:
            self._date += dt.timedelta(days=1)  # GGA-only epochs crossing midnight
        self._last_tod = tod
        midnight = dt.datetime.combine(self._date, dt.time(), tzinfo=dt.UTC)
        return midnight.timestamp() + tod
