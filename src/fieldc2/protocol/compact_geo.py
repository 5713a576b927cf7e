"""Positions on the compact radio link: the grid, quantisation and the fix codec.

Grid.  Every position lives on one global grid of 1e-5 degree in latitude
and longitude (integers ``lat_i = round(lat * 1e5)``): 1.11 m north-south and
at most 1.11 m east-west, so the worst quantisation error is
``0.5 * 1.11 * sqrt(2) = 0.79 m`` anywhere on Earth.  One grid for all forms
makes re-encoding a decoded fix exact whatever form the encoder picks.

Forms of one fix (after ``slot:8 fix_no:4 motion:1 hae:1``):

- ``0`` delta: ``base:4 class:2 dlat:w dlon:w dt:EG5`` with ``w`` from
  :data:`DELTA_WIDTHS`, offsets in grid steps from the base fix, ``dt`` seconds after it.
- ``10`` box: ``lat:17s lon:18s t:14`` offsets from the channel origin
  (+-72 km north-south, +-145 km * cos(lat) east-west).
- ``11`` global: ``lat:25 lon:26 t:14`` (any point on Earth).

Then, when the motion flag is set, course (5 degree steps) and speed (0.5 m/s
steps): absolute forms ``course:7 speed:EG3``; a delta codes the change from
the base's codes (0, 0 if it has none), the course turn folded to +-180 degrees,
as zigzag ``EG2`` and ``EG1`` (a steady walker: 4 bits instead of 11).  Then
the height when the hae flag is set: in a delta, the zigzag difference in
metres from the base's height (0 if it has none) as ``EG2``; otherwise
``hae + 1000`` in 15 bits (-1000..31767 m).  A fix's length never depends
on its base, so a receiver that lacks one base still reads the rest of a batch.

Time.  Absolute forms carry the time as seconds since the channel epoch
modulo :data:`TIME_WINDOW` (4.5 h); the receiver picks the candidate nearest
its own clock, so a fix decodes correctly while it is less than 2.27 h old
(or ahead of the receiver's clock by as much).
Deltas carry the time as seconds after the base fix.

History (kept in :mod:`fieldc2.protocol.compact_context`).  The sender
remembers its last ``HISTORY_PER_TRACK`` (8) fixes per track and the fix
number each receiver acknowledged (the relay's digest); it deltas only
against an acknowledged fix it still holds that is at most ``MAX_DELTA_AGE``
(1800 s) older.  Fix numbers wrap at 16, so an ack names a fix by its
number *and* its time modulo 4096 s (the relay's digest carries both, see
``link/body.py``); the sender accepts it only when both match a fix in its
history, so a stale digest after a long partition can never make it delta
against a fix the receiver does not hold.
"""

from __future__ import annotations

import math

from fieldc2.errors import LinkError, RadioFrameError
from fieldc2.model.radio import MAX_SLOTS, Fix
from fieldc2.protocol.compact_bits import BitReader, BitWriter, unzigzag, zigzag
from fieldc2.protocol.compact_context import (
    SCALE,
    Origin,
    PositionContext,
    grid,
)

#: Signed widths of a delta's two offsets, chosen by a 2-bit class: +-64 grid
#: steps (~70 m: a walker over 30 s), +-512 (a vehicle at 15 m/s over 30 s),
#: +-4096, +-32768 (~36 km); anything further is sent absolute.
DELTA_WIDTHS = (7, 10, 13, 16)
TIME_BITS = 14
TIME_WINDOW = 1 << TIME_BITS
BOX_LAT_BITS, BOX_LON_BITS = 17, 18
GLOBAL_LAT_BITS, GLOBAL_LON_BITS = 25, 26
COURSE_STEP, COURSE_CODES = 5.0, 72
SPEED_STEP = 0.5
#: Speeds from 0 to 2048 m/s: anything that flies in a search, with margin.
MAX_SPEED_CODE = 4096
HAE_OFFSET, HAE_BITS = 1000, 15
#: Fewest bits a fix can take (a 7-bit delta, dt 0); a shorter tail is padding.
MIN_FIX_BITS = 8 + 4 + 2 + 1 + 4 + 2 + 2 * DELTA_WIDTHS[0] + 6


def quantise_point(lat: float, lon: float) -> tuple[float, float]:
    """A point as the wire delivers it (the 1e-5 degree grid).

    The command post quantises an order's point with this before signing, so
    a node rebuilds the signed bytes from the decoded record exactly."""
    return grid(lat) / SCALE, grid(lon) / SCALE


def quantise_fix(fix: Fix) -> Fix:
    """The fix as the wire will deliver it (what the receiver decodes)."""
    if (fix.course is None) != (fix.speed is None):
        raise LinkError("a fix carries course and speed together or neither")
    course = speed = None
    if fix.course is not None and fix.speed is not None:
        course = (round(fix.course / COURSE_STEP) % COURSE_CODES) * COURSE_STEP
        speed = round(fix.speed / SPEED_STEP) * SPEED_STEP
    lat, lon = quantise_point(fix.lat, fix.lon)
    return Fix(track=fix.track, fix_no=fix.fix_no, time=fix.time, lat=lat, lon=lon,
               hae=None if fix.hae is None else float(round(fix.hae)),
               course=course, speed=speed)


def _fits(value: int, width: int) -> bool:
    return -(1 << (width - 1)) <= value < (1 << (width - 1))


def write_fix(out: BitWriter, fix: Fix, base: Fix | None, origin: Origin) -> None:
    """Append one quantised fix, delta-coded when ``base`` is given and close enough."""
    if not (0 <= fix.track < MAX_SLOTS and 0 <= fix.fix_no < 16):
        raise LinkError(f"fix track {fix.track} / number {fix.fix_no} out of range")
    numbers = (fix.lat, fix.lon, fix.hae or 0.0, fix.course or 0.0, fix.speed or 0.0)
    if not all(math.isfinite(n) for n in numbers):
        raise LinkError("a fix holds a value that is not finite")
    lat_i, lon_i = grid(fix.lat), grid(fix.lon)
    if not (-90 * SCALE <= lat_i <= 90 * SCALE and -180 * SCALE <= lon_i <= 180 * SCALE):
        raise LinkError(f"fix {fix.lat},{fix.lon} is off the globe")
    out.write(fix.track, 8)
    out.write(fix.fix_no, 4)
    out.write_flag(fix.course is not None)
    out.write_flag(fix.hae is not None)
    width = None
    if base is not None:
        dlat, dlon = lat_i - grid(base.lat), lon_i - grid(base.lon)
        width = next((w for w in DELTA_WIDTHS if _fits(dlat, w) and _fits(dlon, w)), None)
    if base is not None and width is not None:
        out.write(0, 1)
        out.write(base.fix_no, 4)
        out.write(DELTA_WIDTHS.index(width), 2)
        out.write_signed(dlat, width)
        out.write_signed(dlon, width)
        out.write_eg(fix.time - base.time, 5)
    else:
        base = None
        out.write(1, 1)
        write_absolute(out, lat_i, lon_i, origin)
        out.write((fix.time - origin.epoch) % TIME_WINDOW, TIME_BITS)
    _write_extras(out, fix, base)


def write_absolute(out: BitWriter, lat_i: int, lon_i: int, origin: Origin) -> None:
    """``0`` + box offsets when the point is in the box, else ``1`` + global grid."""
    dlat, dlon = lat_i - origin.lat0_i, lon_i - origin.lon0_i
    if _fits(dlat, BOX_LAT_BITS) and _fits(dlon, BOX_LON_BITS):
        out.write(0, 1)
        out.write_signed(dlat, BOX_LAT_BITS)
        out.write_signed(dlon, BOX_LON_BITS)
    else:
        out.write(1, 1)
        out.write(lat_i + 90 * SCALE, GLOBAL_LAT_BITS)
        out.write(lon_i + 180 * SCALE, GLOBAL_LON_BITS)


def _motion_codes(fix: Fix) -> tuple[int, int] | None:
    """(course, speed) as wire codes, or None without motion."""
    if fix.course is None or fix.speed is None:
        return None
    speed = round(fix.speed / SPEED_STEP)
    if not 0 <= speed < MAX_SPEED_CODE:
        raise LinkError(f"speed {fix.speed} m/s outside the encodable range")
    return round(fix.course / COURSE_STEP) % COURSE_CODES, speed


def _course_turn(change: int) -> int:
    """A course code difference folded to -36..35 (the shorter way round)."""
    return (change + COURSE_CODES // 2) % COURSE_CODES - COURSE_CODES // 2


def _write_extras(out: BitWriter, fix: Fix, base: Fix | None) -> None:
    codes = _motion_codes(fix)
    if codes is not None and base is None:
        out.write(codes[0], 7)
        out.write_eg(codes[1], 3)
    elif codes is not None and base is not None:
        base_course, base_speed = _motion_codes(base) or (0, 0)
        out.write_eg(zigzag(_course_turn(codes[0] - base_course)), 2)
        out.write_eg(zigzag(codes[1] - base_speed), 1)
    if fix.hae is not None:
        hae = round(fix.hae)
        if not 0 <= hae + HAE_OFFSET < (1 << HAE_BITS):
            raise LinkError(f"height {fix.hae} m outside the encodable range")
        if base is not None:
            out.write_eg(zigzag(hae - round(base.hae or 0.0)), 2)
        else:
            out.write(hae + HAE_OFFSET, HAE_BITS)


def read_fix(src: BitReader, ctx: PositionContext, origin: Origin, now: float) -> Fix | None:
    """Read one fix; None when it is a delta against a fix this node lacks.

    The whole fix is read before its base is looked up (its length never
    depends on the base), so the rest of a batch still decodes."""
    track, fix_no = src.read(8), src.read(4)
    if track >= MAX_SLOTS:
        raise RadioFrameError(f"fix for slot {track}, which is broadcast")
    has_motion, has_hae = src.read_flag(), src.read_flag()
    delta: tuple[int, int, int, int] | None = None
    if src.read(1) == 0:
        base_no, width = src.read(4), DELTA_WIDTHS[src.read(2)]
        delta = base_no, src.read_signed(width), src.read_signed(width), src.read_eg(5)
        lat_i = lon_i = time = 0
    else:
        lat_i, lon_i = read_absolute(src, origin)
        time = nearest_time(src.read(TIME_BITS), origin.epoch, now)
    motion: tuple[int, int] | None = None
    if has_motion and delta is None:
        motion = src.read(7), src.read_eg(3)
    elif has_motion:
        motion = unzigzag(src.read_eg(2)), unzigzag(src.read_eg(1))
    hae_code = (unzigzag(src.read_eg(2)) if delta else src.read(HAE_BITS)) if has_hae else 0
    hae = float(hae_code - HAE_OFFSET) if has_hae else None
    if delta is not None:
        base = ctx.received_base(track, delta[0])
        if base is None:
            return None
        lat_i, lon_i = grid(base.lat) + delta[1], grid(base.lon) + delta[2]
        time = base.time + delta[3]
        hae = float(round(base.hae or 0.0) + hae_code) if has_hae else None
        if motion is not None:
            base_course, base_speed = _motion_codes(base) or (0, 0)
            motion = (base_course + motion[0]) % COURSE_CODES, base_speed + motion[1]
    course = speed = None
    if motion is not None:
        if motion[0] >= COURSE_CODES or not 0 <= motion[1] < MAX_SPEED_CODE:
            raise RadioFrameError(f"course/speed codes {motion} out of range")
        course, speed = motion[0] * COURSE_STEP, motion[1] * SPEED_STEP
    if not (-90 * SCALE <= lat_i <= 90 * SCALE and -180 * SCALE <= lon_i <= 180 * SCALE):
        raise RadioFrameError("fix is off the globe")
    return Fix(track=track, fix_no=fix_no, time=time, lat=lat_i / SCALE, lon=lon_i / SCALE,
               hae=hae, course=course, speed=speed)


def read_absolute(src: BitReader, origin: Origin) -> tuple[int, int]:
    if src.read(1) == 0:
        return (origin.lat0_i + src.read_signed(BOX_LAT_BITS),
                origin.lon0_i + src.read_signed(BOX_LON_BITS))
    return src.read(GLOBAL_LAT_BITS) - 90 * SCALE, src.read(GLOBAL_LON_BITS) - 180 * SCALE


def nearest_time(residue: int, epoch: int, now: float) -> int:
    """The Unix second congruent to ``epoch + residue`` (mod the window) nearest ``now``."""
    elapsed = round(now) - epoch
    candidate = elapsed - ((elapsed - residue) % TIME_WINDOW)
    if elapsed - candidate > TIME_WINDOW // 2:
        candidate += TIME_WINDOW
    return epoch + candidate
