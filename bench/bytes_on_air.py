#!/usr/bin/env python3
"""Bytes on air for one position report: CoT XML, TAK v1, Meshtastic and compact.

Prints a markdown table.  The sample is the reference fix of
``reference/dil.md`` section 1 (46.94809 N, 7.44744 E, 540 m, 1.4 m/s, 87
degrees) carried by an ATAK-style PLI built like ``tests/corpus/atak_self_report.xml``.

- CoT XML and TAK protocol v1 (mesh header ``bf 01 bf``) are produced by
  fieldc2's own codecs from that event; they ride UDP/IP (no LoRa airtime).
- Meshtastic: a ``Position`` protobuf with the firmware-default fields (flags
  811: altitude, PDOP, satellites, speed, track) in a ``Data`` wrapper, plus
  the 16 B cleartext header.
- Compact: the record from :mod:`fieldc2.protocol.compact`, plus 1 B of
  link-layer record header (``link/body.py``: the last record of a body has a
  kind byte and no length) and 7 B of frame security (3 B header + 4 B tag,
  ``crypto/radio.py``).  "Delta" means against the receiver's acknowledged
  previous fix, 30 s earlier; walkers move 1.5 m/s, vehicles 15 m/s.
  A batch is one record: one frame, one header and tag for every track.

Airtime is LoRa LongFast (SF11, 250 kHz, CR 4/5, 16-symbol preamble) from
``fieldc2.link.profiles``.  Run: ``.venv/bin/python bench/bytes_on_air.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from meshtastic.protobuf import mesh_pb2, portnums_pb2

from fieldc2.crypto.radio import OVERHEAD as FRAME_OVERHEAD
from fieldc2.link.profiles import LORA_LONG_FAST, MESHTASTIC_HEADER_BYTES
from fieldc2.model.cot import Contact, Detail, Event, Group, PrecisionLocation, Status, Takv, Track
from fieldc2.model.radio import Fix, PositionBatch
from fieldc2.protocol.compact import ChannelContext, decode, encode
from fieldc2.protocol.cot_xml import serialize_event
from fieldc2.protocol.tak_v1 import event_to_payload, mesh_frame

LAT, LON, HAE, SPEED, COURSE = 46.94809, 7.44744, 540.0, 1.4, 87.0
TIME = 1_714_564_800
EPOCH = TIME - 3 * 3600
LINK_RECORD_BYTES = 1
XML_DECLARATION = b"<?xml version='1.0' encoding='UTF-8' standalone='yes'?>"


def atak_pli() -> Event:
    """A PLI as ATAK sends it (takv, contact, uid, precision, group, status, track)."""
    ms = TIME * 1000 + 123
    return Event(
        uid="ANDROID-589520ccfcd20f01", type="a-f-G-U-C", how="m-g", time=ms, start=ms,
        stale=ms + 375_000, lat=LAT, lon=LON, hae=HAE, ce=4.9, le=9999999.0,
        access="Undefined",
        detail=Detail(
            takv=Takv(os="34", version="5.1.0.10 (2bd1f7e6).1714489520-CIV",
                      device="SAMSUNG SM-G998U", platform="ATAK-CIV"),
            contact=Contact(endpoint="*:-1:stcp", callsign="VIPER"),
            precision_location=PrecisionLocation(altsrc="GPS", geopointsrc="GPS"),
            group=Group(role="Team Member", name="Cyan"),
            status=Status(battery=88),
            track=Track(course=COURSE, speed=SPEED),
            xml="<uid Droid='VIPER'/>",
        ),
    )


def meshtastic_position() -> int:
    """Bytes of a default Meshtastic position packet: header + Data(Position)."""
    position = mesh_pb2.Position(
        latitude_i=round(LAT * 1e7), longitude_i=round(LON * 1e7), altitude=round(HAE),
        time=TIME, location_source=mesh_pb2.Position.LOC_INTERNAL, precision_bits=32,
        PDOP=150, sats_in_view=9, ground_speed=round(SPEED), ground_track=round(COURSE * 1e5))
    data = mesh_pb2.Data(portnum=portnums_pb2.POSITION_APP,
                         payload=position.SerializeToString())
    if "bitfield" in mesh_pb2.Data.DESCRIPTOR.fields_by_name:
        data.bitfield = 1  # firmware 2.5+: "ok to MQTT" flag, always set
    return len(data.SerializeToString()) + MESHTASTIC_HEADER_BYTES


def mover(track: int, fix_no: int, speed: float, motion: bool, turn: float = 0.0) -> Fix:
    """A track moving north-east at ``speed``, one fix every 30 s."""
    metres = speed * 30 * fix_no
    lat = LAT + 0.002 * track + metres * 0.6 / 111_320
    lon = LON + metres * 0.8 / (111_320 * math.cos(math.radians(LAT)))
    return Fix(track=track, fix_no=fix_no, time=TIME + 30 * fix_no, lat=lat, lon=lon,
               course=COURSE + turn * fix_no if motion else None,
               speed=speed + 0.5 * (turn != 0) * fix_no if motion else None)


def compact_record(tracks: int, *, delta: bool, speed: float = 1.5,
                   motion: bool = False, turn: float = 0.0) -> int:
    """Bytes of one PositionBatch record of ``tracks`` fixes."""
    tx, rx = ChannelContext(EPOCH, LAT, LON), ChannelContext(EPOCH, LAT, LON)
    first = tuple(mover(t, 0, speed, motion) for t in range(tracks))
    data = encode(PositionBatch(first), tx)
    if not delta:
        return len(data)
    decode(data, rx, now=TIME)
    for track in range(tracks):
        tx.positions.acknowledge(track, 0)
    data = encode(PositionBatch(tuple(mover(t, 1, speed, motion, turn)
                                      for t in range(tracks))), tx)
    decode(data, rx, now=TIME)  # proves the receiver can read it
    return len(data)


def rows() -> Iterator[tuple[str, int, int, str]]:
    """(encoding, application bytes, overhead bytes, note)."""
    event = atak_pli()
    xml = serialize_event(event)
    yield "CoT XML (ATAK PLI, with declaration)", len(XML_DECLARATION + xml), 0, "UDP/IP"
    yield "TAK protocol v1 mesh (bf 01 bf)", len(mesh_frame(event_to_payload(event))), 0, \
        "UDP/IP"
    mesh = meshtastic_position()
    yield "Meshtastic POSITION_APP (default flags)", mesh - MESHTASTIC_HEADER_BYTES, \
        MESHTASTIC_HEADER_BYTES, "reference: 59 B"
    overhead = FRAME_OVERHEAD + LINK_RECORD_BYTES
    yield "compact, absolute fix (in ops box)", compact_record(1, delta=False), overhead, ""
    yield "compact, absolute fix + course/speed", \
        compact_record(1, delta=False, motion=True), overhead, ""
    yield "compact, delta fix (walker)", compact_record(1, delta=True), overhead, ""
    yield "compact, delta fix + course/speed", compact_record(1, delta=True, motion=True), \
        overhead, "steady course and speed"
    yield "compact, delta fix + course/speed, turning", \
        compact_record(1, delta=True, motion=True, turn=30), overhead, \
        "course +30 deg, speed +0.5 m/s"
    yield "compact, delta fix (vehicle 15 m/s)", compact_record(1, delta=True, speed=15), \
        overhead, ""
    for count in (2, 5, 10, 20):
        size = compact_record(count, delta=True)
        one = compact_record(1, delta=True)
        per = (size - one) / (count - 1)
        yield f"compact, batch of {count} walkers (delta)", size, overhead, \
            f"{per:.2f} B per extra track"
    for count in (5, 20):
        size = compact_record(count, delta=False)
        per = (size - compact_record(1, delta=False)) / (count - 1)
        yield f"compact, batch of {count} (absolute)", size, overhead, \
            f"{per:.2f} B per extra track"


def main() -> None:
    print("| encoding | application B | framing B | on air B | LongFast airtime | note |")
    print("|---|---:|---:|---:|---:|---|")
    for name, payload, overhead, note in rows():
        total = payload + overhead
        airtime = "" if note == "UDP/IP" else f"{LORA_LONG_FAST.airtime(total) * 1000:.0f} ms"
        print(f"| {name} | {payload} | {overhead} | {total} | {airtime} | {note} |")
    print()
    print(f"Compact framing = {FRAME_OVERHEAD} B frame security (3 B header + 4 B tag) + "
          f"{LINK_RECORD_BYTES} B link record header; airtime is raw LoRa LongFast "
          "(the Meshtastic row includes its 16 B header).")


if __name__ == "__main__":
    main()
