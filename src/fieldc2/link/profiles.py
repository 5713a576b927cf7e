"""Link profiles: what one frame costs on each kind of link, and a duty-cycle budget.

A profile answers the questions the link layer and the simulator ask before a
frame leaves: how large may it be (``mtu_up`` from a field node, ``mtu_down``
towards it: Iridium SBD takes 340 B up but only 270 B down), how long does it
occupy the medium (:meth:`LinkProfile.airtime`), how late does it arrive
(``latency``), and how much airtime the regulator allows (``duty_cycle``).

Sizes are in bytes *handed to the link*; the link's own framing (AX.25
addresses and FCS, the Meshtastic header, IP/UDP) is ``overhead_bytes`` and is
added inside :meth:`~LinkProfile.airtime`.  Figures come from
``reference/dil.md`` sections 1-2; LoRa uses Semtech's time-on-air formula with
Meshtastic's PHY settings (16-symbol preamble, explicit header, CRC on,
low-data-rate optimisation from 16 ms symbols), which reproduces the
reference's 354 ms / 682 ms / 2.03 s for 16 / 59 / 237 B on LongFast.

:class:`DutyCycle` is the sans-I/O budget keeper the link layer consults
(``can_send``, ``next_allowed``) and feeds (``record``); time is an argument.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace

from fieldc2.errors import ConfigError, LinkError

#: Meshtastic's cleartext packet header (to, from, id, flags, channel hash,
#: next_hop, relay_node): ``MESHTASTIC_HEADER_LENGTH 16`` in RadioInterface.h.
MESHTASTIC_HEADER_BYTES = 16
#: AX.25 UI frame without digipeaters: 7+7 address bytes, control, PID, 2 B FCS.
AX25_FRAME_BYTES = 18
#: Opening and closing HDLC flag, one byte each.
AX25_FLAG_BYTES = 2
#: HDLC bit stuffing inserts a 0 after five 1s: about 1.6 % for random data,
#: more for the 0x7e-rich fields of APRS.  3 % reproduces the reference's
#: 0.33 s for a 46 B frame at 1200 bd and 0.14 s at 9600 bd.
AX25_BIT_STUFFING = 1.03
#: Direwolf defaults (``src/audio.h``): key-up delay before and tail after a frame.
AX25_TXDELAY_S = 0.30
AX25_TXDELAY_9600_S = 0.10
AX25_TXTAIL_S = 0.10
#: IPv4 (20 B) + UDP (8 B) headers around every datagram on IP links.
IP_UDP_OVERHEAD_BYTES = 28
#: Modem occupancy of one Iridium SBD session.  RockBLOCK/PX4 documentation:
#: "possible to send/receive approximately once every 40 seconds"; one session
#: carries one MO and one MT message, so each direction is charged half.
IRIDIUM_SESSION_S = 20.0
#: EU868 (869.40-869.65 MHz in Meshtastic): 10 % duty cycle over one hour.
EU868_DUTY_CYCLE = 0.10
EU868_DUTY_WINDOW_S = 3600.0


@dataclass(frozen=True)
class LoraModem:
    """LoRa PHY settings that decide time on air (Semtech AN1200.13)."""

    spreading_factor: int
    """SF 7..12: each step doubles the symbol time."""
    bandwidth_hz: float
    """Channel bandwidth, Hz (125 kHz, 250 kHz, ...)."""
    coding_rate: int
    """Denominator of the coding rate 4/5..4/8, so 5..8."""
    preamble_symbols: int = 16
    """Meshtastic uses 16 preamble symbols (Semtech default is 8)."""

    @property
    def symbol_time(self) -> float:
        return float(2**self.spreading_factor) / self.bandwidth_hz

    @property
    def low_data_rate(self) -> bool:
        """Low-data-rate optimisation is on from 16 ms symbols, as in the firmware."""
        return self.symbol_time >= 0.016

    @property
    def bit_rate(self) -> float:
        """Nominal bit rate: SF * BW / 2^SF * 4/CR."""
        return self.spreading_factor / self.symbol_time * 4.0 / self.coding_rate

    @property
    def fixed_cost(self) -> float:
        """Preamble plus the 8 mandatory header symbols, paid by every frame."""
        return (self.preamble_symbols + 4.25 + 8) * self.symbol_time

    def time_on_air(self, phy_bytes: int) -> float:
        """Seconds on air for ``phy_bytes`` of LoRa payload (explicit header, CRC on)."""
        sf = self.spreading_factor
        de = 1 if self.low_data_rate else 0
        numerator = 8 * phy_bytes - 4 * sf + 28 + 16  # +16: CRC on; explicit header
        blocks = max(math.ceil(numerator / (4 * (sf - 2 * de))), 0)
        payload_symbols = 8 + blocks * self.coding_rate
        return (self.preamble_symbols + 4.25 + payload_symbols) * self.symbol_time


@dataclass(frozen=True)
class LinkProfile:
    """The cost model of one kind of link.  Frozen: profiles are shared constants."""

    name: str
    """Name used in configuration and scenario files (``lora-long-fast``)."""
    bit_rate: float
    """Raw bit rate, bit/s."""
    mtu_up: int
    """Largest frame a field node may hand to the link, bytes (Iridium MO: 340)."""
    mtu_down: int
    """Largest frame towards a field node, bytes (Iridium MT: 270)."""
    frame_cost_s: float
    """Fixed seconds every frame costs regardless of size: LoRa preamble and
    header, AX.25 TXDELAY + TXTAIL, an Iridium session."""
    overhead_bytes: int = 0
    """Bytes of the link's own framing added to every frame (not in the MTU)."""
    latency: tuple[float, float] = (0.0, 0.0)
    """One-way latency range after the frame is off the air, seconds (min, max)."""
    duty_cycle: float | None = None
    """Largest fraction of ``duty_window_s`` one transmitter may be on air, or None."""
    duty_window_s: float = EU868_DUTY_WINDOW_S
    """Sliding window over which ``duty_cycle`` is measured, seconds."""
    half_duplex: bool = True
    """One transmission at a time on the medium (radio); False for IP links."""
    bit_stuffing: float = 1.0
    """Multiplier on serialised bits (HDLC bit stuffing on AX.25)."""
    lora: LoraModem | None = field(default=None, repr=False)
    """LoRa PHY settings; when set, :meth:`airtime` uses the exact formula."""

    def __post_init__(self) -> None:
        lo, hi = self.latency
        if self.bit_rate <= 0 or self.mtu_up <= 0 or self.mtu_down <= 0:
            raise ConfigError(f"link profile {self.name!r}: rate and MTUs must be positive")
        if self.frame_cost_s < 0 or self.overhead_bytes < 0 or not 0 <= lo <= hi:
            raise ConfigError(f"link profile {self.name!r}: negative cost or bad latency")
        if self.duty_cycle is not None and not 0 < self.duty_cycle <= 1:
            raise ConfigError(f"link profile {self.name!r}: duty cycle must be in (0, 1]")

    def mtu(self, *, downlink: bool = False) -> int:
        """The MTU in one direction: up (from a field node) unless ``downlink``."""
        return self.mtu_down if downlink else self.mtu_up

    def airtime(self, nbytes: int) -> float:
        """Seconds the medium is occupied by one frame of ``nbytes`` link payload."""
        if nbytes < 0:
            raise LinkError(f"negative frame size {nbytes}")
        total = nbytes + self.overhead_bytes
        if self.lora is not None:
            return self.lora.time_on_air(total)
        return self.frame_cost_s + total * 8 * self.bit_stuffing / self.bit_rate

    def duty_budget(self) -> DutyCycle | None:
        """A fresh tracker for this profile's regulatory budget, if it has one."""
        if self.duty_cycle is None:
            return None
        return DutyCycle(self.duty_cycle, self.duty_window_s)


def lora_profile(name: str, bandwidth_khz: float, sf: int, cr: int, *,
                 mtu: int = 237) -> LinkProfile:
    """A raw LoRa profile (no Meshtastic header) for EU868 with its 10 % duty cycle."""
    modem = LoraModem(sf, bandwidth_khz * 1000.0, cr)
    return LinkProfile(name=name, bit_rate=modem.bit_rate, mtu_up=mtu, mtu_down=mtu,
                       frame_cost_s=modem.fixed_cost, duty_cycle=EU868_DUTY_CYCLE,
                       lora=modem)


def over_meshtastic(base: LinkProfile) -> LinkProfile:
    """``base`` carried inside Meshtastic packets: +16 B header, MTU shrinks by as much."""
    return replace(base, name=base.name.replace("lora-", "meshtastic-", 1),
                   overhead_bytes=base.overhead_bytes + MESHTASTIC_HEADER_BYTES,
                   mtu_up=base.mtu_up - MESHTASTIC_HEADER_BYTES,
                   mtu_down=base.mtu_down - MESHTASTIC_HEADER_BYTES)


# Meshtastic presets (firmware src/mesh/MeshRadio.h): bandwidth kHz, SF, CR.
LORA_SHORT_FAST = lora_profile("lora-short-fast", 250, 7, 5)
LORA_MEDIUM_FAST = lora_profile("lora-medium-fast", 250, 9, 5)
LORA_MEDIUM_SLOW = lora_profile("lora-medium-slow", 250, 10, 5)
LORA_LONG_FAST = lora_profile("lora-long-fast", 250, 11, 5)
LORA_LONG_MODERATE = lora_profile("lora-long-moderate", 125, 11, 8)
LORA_LONG_SLOW = lora_profile("lora-long-slow", 125, 12, 8)
MESHTASTIC_LONG_FAST = over_meshtastic(LORA_LONG_FAST)

VHF_AX25_1200 = LinkProfile(
    name="vhf-ax25-1200", bit_rate=1200.0, mtu_up=256, mtu_down=256,
    frame_cost_s=AX25_TXDELAY_S + AX25_TXTAIL_S,
    overhead_bytes=AX25_FRAME_BYTES + AX25_FLAG_BYTES, bit_stuffing=AX25_BIT_STUFFING)
VHF_AX25_9600 = replace(VHF_AX25_1200, name="vhf-ax25-9600", bit_rate=9600.0,
                        frame_cost_s=AX25_TXDELAY_9600_S + AX25_TXTAIL_S)
IRIDIUM_SBD = LinkProfile(
    name="iridium-sbd", bit_rate=2400.0, mtu_up=340, mtu_down=270,
    frame_cost_s=IRIDIUM_SESSION_S, latency=(5.0, 20.0))
#: Inmarsat BGAN standard IP: ~400 kbit/s background class, RTT ~1.1 s.
SATELLITE_IP = LinkProfile(
    name="satellite-ip", bit_rate=400_000.0, mtu_up=1472, mtu_down=1472, frame_cost_s=0.0,
    overhead_bytes=IP_UDP_OVERHEAD_BYTES, latency=(0.50, 0.60), half_duplex=False)
LAN = LinkProfile(
    name="lan", bit_rate=100_000_000.0, mtu_up=1472, mtu_down=1472, frame_cost_s=0.0,
    overhead_bytes=IP_UDP_OVERHEAD_BYTES, latency=(0.0005, 0.0015), half_duplex=False)

PROFILES: dict[str, LinkProfile] = {p.name: p for p in (
    LORA_SHORT_FAST, LORA_MEDIUM_FAST, LORA_MEDIUM_SLOW, LORA_LONG_FAST, LORA_LONG_MODERATE,
    LORA_LONG_SLOW, MESHTASTIC_LONG_FAST, VHF_AX25_1200, VHF_AX25_9600, IRIDIUM_SBD,
    SATELLITE_IP, LAN)}


def profile(name: str) -> LinkProfile:
    """The profile called ``name``; ConfigError naming the valid ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        valid = ", ".join(sorted(PROFILES))
        raise ConfigError(f"unknown link profile {name!r}; valid: {valid}") from None


#: Transmissions remembered per tracker.  An hour at 10 % is 360 s of airtime,
#: i.e. ~12 000 of the shortest LoRa frames; past this the two oldest records
#: are merged, which over-counts (stays within budget) and never forgets.
MAX_DUTY_HISTORY = 4096


class DutyCycle:
    """Airtime budget of one transmitter over a sliding window, sans-I/O.

    Invariant: in every window of ``window`` seconds, the airtime of recorded
    transmissions falling inside it never exceeds ``limit * window``, provided
    every transmission was admitted by :meth:`can_send` and transmissions of
    one transmitter do not overlap.  The check is conservative: a transmission
    counts in full while any part of it lies in the window ending where the
    new one would end.  Time must not go backwards (LinkError).
    """

    def __init__(self, limit: float, window: float, *,
                 max_history: int = MAX_DUTY_HISTORY) -> None:
        if not 0 < limit <= 1 or window <= 0 or max_history < 2:
            raise ConfigError("duty cycle needs 0 < limit <= 1, window > 0, history >= 2")
        self.limit = limit
        self.window = window
        self.budget = limit * window
        self._max_history = max_history
        self._history: deque[tuple[float, float]] = deque()  # (end, airtime), in order
        self._used = 0.0  # sum of airtime in _history
        self._latest = -math.inf

    def _advance(self, now: float) -> None:
        if now < self._latest:
            raise LinkError(f"duty cycle: time went backwards ({now} < {self._latest})")
        self._latest = now
        horizon = now - self.window
        while self._history and self._history[0][0] <= horizon:
            self._used -= self._history.popleft()[1]
        if not self._history:
            self._used = 0.0  # drop accumulated rounding error

    def _counted(self, airtime: float, start: float) -> float:
        """Airtime that counts against a transmission of ``airtime`` at ``start``."""
        cutoff = start + airtime - self.window
        used = self._used
        for end, spent in self._history:
            if end > cutoff:
                break
            used -= spent
        return used

    def used(self, now: float) -> float:
        """Airtime counted in the window ending at ``now``."""
        self._advance(now)
        return self._counted(0.0, now)

    def _fits(self, airtime: float, start: float) -> bool:
        return self._counted(airtime, start) + airtime <= self.budget

    def can_send(self, airtime: float, now: float) -> bool:
        """Whether a transmission of ``airtime`` seconds may start at ``now``."""
        self._advance(now)
        return self._fits(airtime, now)

    def next_allowed(self, airtime: float, now: float) -> float:
        """Earliest time >= ``now`` at which ``airtime`` fits; ``inf`` if it never can."""
        if airtime > self.budget:
            return math.inf
        self._advance(now)
        t = now
        need = self._used + airtime - self.budget
        for end, spent in self._history:
            if need <= 0:
                break
            t = max(t, end + self.window - airtime)
            need -= spent
        while not self._fits(airtime, t):  # float rounding: step to the next double
            t = math.nextafter(t, math.inf)
        return t

    def record(self, airtime: float, now: float) -> None:
        """Note a transmission of ``airtime`` seconds that started at ``now``."""
        if airtime < 0:
            raise LinkError(f"negative airtime {airtime}")
        self._advance(now)
        if len(self._history) >= self._max_history:
            _, first = self._history.popleft()
            end, second = self._history.popleft()
            self._history.appendleft((end, first + second))
        self._history.append((now + airtime, airtime))
        self._used += airtime
