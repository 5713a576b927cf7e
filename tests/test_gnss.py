"""NMEA 0183 decoding and the GNSS sources (file, UDP, serial over a pty)."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
import operator
import os
import socket
import time
import tty
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldc2.errors import ConfigError, NmeaError
from fieldc2.gnss import KNOTS, MAX_LINE, Fix, NmeaDecoder, parse_sentence
from fieldc2.transport.gnss import file_fixes, open_gnss, serial_fixes, udp_fixes

FIXTURES = Path(__file__).parent / "fixtures" / "nmea"


def sentence(body: str) -> bytes:
    checksum = functools.reduce(operator.xor, body.encode(), 0)
    return f"${body}*{checksum:02X}\r\n".encode()


def decode(data: bytes, *, flush: bool = True) -> tuple[list[Fix], NmeaDecoder]:
    decoder = NmeaDecoder()
    decoder.receive_data(data)
    if flush:
        decoder.flush()
    fixes = []
    while (fix := decoder.next_fix()) is not None:
        fixes.append(fix)
    return fixes, decoder


GGA = "GNGGA,092750.00,5321.6802,N,00630.3372,W,1,08,1.03,61.7,M,55.2,M,,"
RMC = "GNRMC,092750.00,A,5321.6802,N,00630.3372,W,0.02,31.66,280511,,,A"


def test_gga_and_rmc_of_one_epoch_make_one_fix() -> None:
    fixes, decoder = decode(sentence(GGA) + sentence(RMC), flush=False)
    assert len(fixes) == 1  # complete without waiting for the next epoch
    fix = fixes[0]
    assert fix.lat == pytest.approx(53.361337, abs=1e-6)
    assert fix.lon == pytest.approx(-6.50562, abs=1e-6)
    assert fix.alt == 61.7 and fix.satellites == 8 and fix.hdop == 1.03 and fix.quality == 1
    assert fix.speed == pytest.approx(0.02 * KNOTS) and fix.course == 31.66
    assert fix.time == dt.datetime(2011, 5, 28, 9, 27, 50, tzinfo=dt.UTC).timestamp()
    assert fix.talker == "GN"
    assert decoder.stats.sentences == 2 and decoder.stats.fixes == 1


def test_ublox_multi_gnss_recording() -> None:
    fixes, decoder = decode((FIXTURES / "ublox_m8_gn_walk.nmea").read_bytes())
    assert len(fixes) == 60 and decoder.stats.fixes == 60
    assert decoder.stats.ignored > 0 and decoder.stats.bad_checksum == 0  # GSV, GSA, VTG, GLL
    assert [f.time_of_day for f in fixes] == [34200.0 + i for i in range(60)]
    assert all(f.satellites == 14 and f.alt is not None for f in fixes)
    assert fixes[0].lat == pytest.approx(46.94809, abs=1e-5)
    assert fixes[0].lon == pytest.approx(7.44744, abs=5e-5)
    # walking 1.4 m/s east-ish: 19 s later about 26 m further east
    east = (fixes[19].lon - fixes[0].lon) * 111_320 * 0.683
    assert 20 < east < 30


def test_every_talker_and_midnight() -> None:
    fixes, decoder = decode((FIXTURES / "talkers_vehicle.nmea").read_bytes())
    assert [f.talker for f in fixes[:6]] == ["GP", "GL", "GA", "GB", "BD", "GN"]
    assert decoder.stats.malformed == 0
    times = [f.time or 0.0 for f in fixes]
    assert all(f.time is not None for f in fixes)
    assert all(b - a == 2.0 for a, b in itertools.pairwise(times))  # across midnight
    assert fixes[0].lat < 0 and fixes[0].quality == 2  # DGPS in the southern hemisphere


def test_cold_start_and_line_noise_are_counted_not_raised() -> None:
    fixes, decoder = decode((FIXTURES / "gps_cold_start_noisy.nmea").read_bytes())
    stats = decoder.stats
    assert stats.no_fix == 4  # quality 0 and status V before the first fix
    assert stats.bad_checksum == 1 and stats.malformed == 2  # *00, UBX binary, overrun
    assert len(fixes) == 10  # one per epoch, even those that lost a sentence
    assert len({f.time_of_day for f in fixes}) == 10
    lost_gga = next(f for f in fixes if f.time_of_day == 43206.0)
    assert lost_gga.alt is None and lost_gga.speed == 0.0  # from RMC alone
    assert fixes[0].course is None  # standing still: empty course field


def test_rmc_only_receiver_gets_a_fix_per_sentence_once_learned() -> None:
    rmcs = [sentence(RMC.replace("092750", f"0927{50 + i}")) for i in range(5)]
    decoder = NmeaDecoder()
    out: list[Fix] = []
    counts = []
    for data in rmcs:
        decoder.receive_data(data)
        while (fix := decoder.next_fix()) is not None:
            out.append(fix)
        counts.append(len(out))
    # two epochs to learn that GGA never comes, then a fix as each sentence lands
    assert counts == [0, 1, 3, 4, 5]
    assert [f.time_of_day for f in out] == [34070.0 + i for i in range(5)]
    assert all(f.alt is None and f.time is not None for f in out)


def test_byte_at_a_time_equals_whole() -> None:
    data = (FIXTURES / "ublox_m8_gn_walk.nmea").read_bytes()[:4000]
    whole, _ = decode(data)
    decoder = NmeaDecoder()
    for i in range(len(data)):
        decoder.receive_data(data[i:i + 1])
    decoder.flush()
    pieces = []
    while (fix := decoder.next_fix()) is not None:
        pieces.append(fix)
    assert pieces == whole and whole


def test_overlong_line_is_dropped_and_the_next_one_decodes() -> None:
    fixes, decoder = decode(b"$GPTXT," + b"x" * (MAX_LINE * 3) + b"\r\n"
                            + sentence(GGA) + sentence(RMC))
    assert decoder.stats.oversize == 1 and len(fixes) == 1


def test_parse_sentence_raises_nmea_error() -> None:
    with pytest.raises(NmeaError, match="checksum"):
        parse_sentence("$" + GGA + "*00")
    with pytest.raises(NmeaError):
        parse_sentence("hello")
    with pytest.raises(NmeaError):
        parse_sentence("$GPGGA,1*")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=120),
    st.sampled_from([sentence(GGA), sentence(RMC), b"\r\n", b"$", b"*", b"$GNGGA,"]),
    st.text(alphabet="$GNPRMCA,.*0123456789NSEW\r\n", max_size=90).map(str.encode),
    st.builds(lambda s: sentence(s), st.text(alphabet="GPNRMCA,.0123456789NSEWV", max_size=80)),
), max_size=20))
def test_fuzz_never_raises(chunks: list[bytes]) -> None:
    decoder = NmeaDecoder()
    for chunk in chunks:
        decoder.receive_data(chunk)
    decoder.flush()
    while (fix := decoder.next_fix()) is not None:
        assert -90 <= fix.lat <= 90 and -180 <= fix.lon <= 180


async def test_file_replay_as_fast_as_possible_and_paced() -> None:
    path = FIXTURES / "talkers_vehicle.nmea"
    fast = [f async for f in file_fixes(path, pace=0)]
    assert len(fast) == 12
    start = time.monotonic()
    paced = [f async for f in file_fixes(path, pace=100)]  # 22 s of recording
    elapsed = time.monotonic() - start
    assert paced == fast
    assert 0.2 <= elapsed < 2.0


async def test_udp_source() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = udp_fixes("127.0.0.1", port)
    first = asyncio.ensure_future(anext(source))
    await asyncio.sleep(0.05)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"garbage\r\n" + sentence(GGA), ("127.0.0.1", port))
        sender.sendto(sentence(RMC).rstrip(), ("127.0.0.1", port))  # no line end
    fix = await asyncio.wait_for(first, 2)
    assert fix.alt == 61.7 and fix.course == 31.66
    await source.aclose()


async def test_serial_source_over_a_pty() -> None:
    controller, device = os.openpty()
    tty.setraw(device)
    try:
        source = serial_fixes(os.ttyname(device), baud=4800)
        first = asyncio.ensure_future(anext(source))
        await asyncio.sleep(0.05)
        data = (FIXTURES / "ublox_m8_gn_walk.nmea").read_bytes()[:1200]
        for i in range(0, len(data), 37):  # a UART delivers in small pieces
            os.write(controller, data[i:i + 37])
        fix = await asyncio.wait_for(first, 2)
        assert fix.time_of_day == 34200.0 and fix.satellites == 14
        await source.aclose()
    finally:
        os.close(controller)
        os.close(device)


async def test_open_gnss_urls() -> None:
    path = FIXTURES / "talkers_vehicle.nmea"
    fixes = [f async for f in open_gnss(f"file://{path}?pace=0")]
    assert len(fixes) == 12
    with pytest.raises(ConfigError):
        open_gnss("gopher://x")
    with pytest.raises(ConfigError):
        open_gnss(f"file://{path}?pace=fast")
    with pytest.raises(ConfigError):
        await anext(open_gnss("file:///nonexistent.nmea"))
