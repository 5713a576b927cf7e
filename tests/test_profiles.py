"""Link profiles against the reference figures (reference/dil.md 1-2) and the duty-cycle budget."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldc2.errors import ConfigError, LinkError
from fieldc2.link.profiles import (
    AX25_TXTAIL_S,
    IRIDIUM_SBD,
    LAN,
    LORA_LONG_FAST,
    LORA_LONG_SLOW,
    MESHTASTIC_LONG_FAST,
    PROFILES,
    SATELLITE_IP,
    VHF_AX25_1200,
    VHF_AX25_9600,
    DutyCycle,
    LinkProfile,
    profile,
)

# (preset, payload bytes on the LoRa PHY, reference airtime in seconds): dil.md section 2.
LORA_TABLE = [
    ("lora-short-fast", 16, 0.030), ("lora-short-fast", 59, 0.061),
    ("lora-short-fast", 237, 0.191),
    ("lora-medium-fast", 16, 0.099), ("lora-medium-fast", 59, 0.201),
    ("lora-medium-fast", 237, 0.601),
    ("lora-medium-slow", 59, 0.362),
    ("lora-long-fast", 16, 0.354), ("lora-long-fast", 59, 0.682),
    ("lora-long-fast", 237, 2.03),
    ("lora-long-moderate", 59, 2.30),
    ("lora-long-slow", 16, 1.97), ("lora-long-slow", 59, 4.07), ("lora-long-slow", 237, 13.5),
    ("lora-long-fast", 12, 0.354),  # section 1: "A 12 B frame takes 354 ms"
    ("lora-long-fast", 40, 0.559),  # minimal Meshtastic position
    ("lora-long-fast", 90, 0.928),  # ATAK plugin PLI
]
# 59 B reports per hour at 10 % duty, one node: the table's last column.
REPORTS_PER_HOUR = {"lora-short-fast": 5946, "lora-medium-fast": 1789,
                    "lora-medium-slow": 995, "lora-long-fast": 527,
                    "lora-long-moderate": 156, "lora-long-slow": 88}
BIT_RATES = {"lora-short-fast": 10_900, "lora-medium-fast": 3_500, "lora-medium-slow": 1_950,
             "lora-long-fast": 1_070, "lora-long-moderate": 340, "lora-long-slow": 180}


@pytest.mark.parametrize(("name", "nbytes", "seconds"), LORA_TABLE)
def test_lora_airtime_matches_reference(name: str, nbytes: int, seconds: float) -> None:
    assert profile(name).airtime(nbytes) == pytest.approx(seconds, rel=0.03)


@pytest.mark.parametrize(("name", "per_hour"), sorted(REPORTS_PER_HOUR.items()))
def test_reports_per_hour_at_duty_cycle(name: str, per_hour: int) -> None:
    p = profile(name)
    assert p.duty_cycle == 0.10 and p.duty_window_s == 3600.0
    assert 360.0 / p.airtime(59) == pytest.approx(per_hour, rel=0.03)


@pytest.mark.parametrize(("name", "rate"), sorted(BIT_RATES.items()))
def test_lora_bit_rates(name: str, rate: float) -> None:
    assert profile(name).bit_rate == pytest.approx(rate, rel=0.03)


def test_lora_fixed_cost_and_low_data_rate() -> None:
    # "the preamble alone takes ~166 ms, and ~231 ms once the 8 header symbols are added"
    assert LORA_LONG_FAST.frame_cost_s == pytest.approx(0.231, rel=0.01)
    assert LORA_LONG_FAST.lora is not None and not LORA_LONG_FAST.lora.low_data_rate
    assert LORA_LONG_SLOW.lora is not None and LORA_LONG_SLOW.lora.low_data_rate
    assert LORA_LONG_FAST.mtu_up == LORA_LONG_FAST.mtu_down == 237
    # Airtime grows in steps of whole symbol blocks, never shrinks with size.
    times = [LORA_LONG_FAST.airtime(n) for n in range(238)]
    assert times == sorted(times)


def test_meshtastic_header_is_counted() -> None:
    # A 37 B Position + 6 B Data wrapper = 43 B handed to Meshtastic = 59 B on air.
    assert MESHTASTIC_LONG_FAST.airtime(43) == pytest.approx(0.682, rel=0.03)
    assert MESHTASTIC_LONG_FAST.airtime(43) == LORA_LONG_FAST.airtime(59)
    assert MESHTASTIC_LONG_FAST.mtu_up == 237 - 16
    assert MESHTASTIC_LONG_FAST.name == "meshtastic-long-fast"


def test_ax25_frame_times() -> None:
    # Compressed APRS with WIDE1-1,WIDE2-1: 14 B info + 14 B path = 46 B frame with the
    # 18 B of addresses/ctrl/PID/FCS. Reference: 0.33 s + 0.30 s TXDELAY = 0.63 s (no tail).
    assert VHF_AX25_1200.airtime(28) - AX25_TXTAIL_S == pytest.approx(0.63, rel=0.03)
    assert VHF_AX25_9600.airtime(28) - AX25_TXTAIL_S == pytest.approx(0.14, rel=0.03)
    # Uncompressed with course/speed, 59 B frame: about 0.7 s.
    assert VHF_AX25_1200.airtime(59 - 18) - AX25_TXTAIL_S == pytest.approx(0.7, rel=0.05)
    assert VHF_AX25_1200.duty_cycle is None and VHF_AX25_1200.half_duplex


def test_iridium_is_asymmetric_and_slow() -> None:
    assert (IRIDIUM_SBD.mtu_up, IRIDIUM_SBD.mtu_down) == (340, 270)
    assert IRIDIUM_SBD.mtu() == 340 and IRIDIUM_SBD.mtu(downlink=True) == 270
    assert IRIDIUM_SBD.latency == (5.0, 20.0)
    # A session dominates: one byte costs nearly as much as a full message.
    assert IRIDIUM_SBD.airtime(340) < 1.1 * IRIDIUM_SBD.airtime(1)


def test_ip_links_are_bytes_over_rate() -> None:
    assert SATELLITE_IP.airtime(1000) == pytest.approx((1000 + 28) * 8 / 400_000)
    assert sum(SATELLITE_IP.latency) == pytest.approx(1.1, rel=0.05)  # RTT ~1.1 s
    assert LAN.latency[0] <= 0.001 <= LAN.latency[1]
    assert not SATELLITE_IP.half_duplex and not LAN.half_duplex


def test_profile_lookup() -> None:
    assert profile("lora-long-fast") is LORA_LONG_FAST
    assert all(profile(name).name == name for name in PROFILES)
    with pytest.raises(ConfigError, match="lora-long-fast") as info:
        profile("lora-longfast")
    assert "iridium-sbd" in str(info.value)


def test_profile_validation() -> None:
    with pytest.raises(ConfigError):
        LinkProfile("bad", bit_rate=0, mtu_up=10, mtu_down=10, frame_cost_s=0)
    with pytest.raises(ConfigError):
        LinkProfile("bad", bit_rate=1, mtu_up=10, mtu_down=10, frame_cost_s=0,
                    latency=(2.0, 1.0))
    with pytest.raises(ConfigError):
        LinkProfile("bad", bit_rate=1, mtu_up=10, mtu_down=10, frame_cost_s=0,
                    duty_cycle=1.5)
    with pytest.raises(LinkError):
        LAN.airtime(-1)


def _max_window_airtime(sent: list[tuple[float, float]], window: float) -> float:
    """Largest airtime inside any window; the worst windows start at a start or end at an end."""
    edges = [s for s, _ in sent] + [s + a - window for s, a in sent]
    best = 0.0
    for lo in edges:
        hi = lo + window
        best = max(best, sum(max(0.0, min(s + a, hi) - max(s, lo)) for s, a in sent))
    return best


@settings(max_examples=150, deadline=None)
@given(airtimes=st.lists(st.floats(0.01, 40.0), min_size=1, max_size=60),
       gaps=st.lists(st.floats(0.0, 200.0), min_size=60, max_size=60),
       history=st.sampled_from([2, 3, 8, 4096]))
def test_greedy_sender_never_exceeds_budget(airtimes: list[float], gaps: list[float],
                                            history: int) -> None:
    duty = DutyCycle(0.10, 600.0, max_history=history)  # budget 60 s per 600 s
    t = 0.0
    sent: list[tuple[float, float]] = []
    for airtime, gap in zip(airtimes, gaps, strict=False):
        wanted, t = t, duty.next_allowed(airtime, t)
        if t - 1e-6 > wanted:  # held back: a moment earlier must have been refused
            assert not duty.can_send(airtime, wanted)
            assert not duty.can_send(airtime, t - 1e-6)
        assert duty.can_send(airtime, t)
        duty.record(airtime, t)
        sent.append((t, airtime))
        t += airtime + (gap if gap > 150.0 else 0.0)  # mostly back-to-back, sometimes idle
    assert _max_window_airtime(sent, 600.0) <= 60.0 + 1e-6


def test_greedy_sender_uses_the_budget() -> None:
    duty = DutyCycle(0.10, 3600.0)
    t, sent = 0.0, []
    while t < 4 * 3600.0:
        t = duty.next_allowed(0.682, t)
        duty.record(0.682, t)
        sent.append((t, 0.682))
        t += 0.682
    first_hour = [s for s in sent if s[0] < 3600.0]
    assert len(first_hour) == 527  # floor(360 / 0.682)
    assert len(sent) >= 4 * 527 - 4
    assert _max_window_airtime(sent[-600:], 3600.0) <= 360.0 + 1e-6


def test_next_allowed_is_the_earliest_moment() -> None:
    duty = DutyCycle(0.5, 10.0)  # 5 s per 10 s
    duty.record(2.0, 0.0)
    duty.record(3.0, 2.0)  # budget spent until the first frame leaves the window
    assert duty.used(5.0) == pytest.approx(5.0)
    assert not duty.can_send(1.0, 5.0)
    assert duty.next_allowed(1.0, 5.0) == pytest.approx(11.0)  # first ends at 2: 2 + 10 - 1
    assert not duty.can_send(1.0, 10.9)
    assert duty.can_send(1.0, 11.0)
    assert duty.next_allowed(6.0, 20.0) == math.inf


def test_duty_cycle_rejects_time_going_backwards() -> None:
    duty = DutyCycle(0.1, 100.0)
    duty.record(1.0, 50.0)
    with pytest.raises(LinkError):
        duty.can_send(1.0, 10.0)
    with pytest.raises(ConfigError):
        DutyCycle(0.0, 100.0)


def test_profile_gives_a_budget_only_when_regulated() -> None:
    budget = LORA_LONG_FAST.duty_budget()
    assert budget is not None and budget.budget == pytest.approx(360.0)
    assert LAN.duty_budget() is None
