#!/usr/bin/env python3
"""Fan-out benchmark: N TCP clients in one group, each reporting at 1 Hz.

For every N given with ``--clients`` a fresh ``fieldc2 serve`` is started as a
separate process (SQLite store in a temporary data dir, free loopback ports),
N clients connect, each sends an ATAK-like self-report and then one position
per period, staggered uniformly across the period.  Every event a client sends
reaches the other N-1 clients, so the ideal delivery rate is N*(N-1)*rate.

Each position carries ``<bench t="<time.time() with 6 decimals>" c="<client>"
n="<sequence>"/>`` inside ``<detail>``; the server forwards the sender's XML
bytes, so the element arrives unchanged.  A few *sampled* clients (``--sample``)
parse every event they receive and compute latency from it; all other clients
only count bytes and ``</event>``.  See docs/benchmarks.md for the method.

With ``--tls`` the same clients connect over mutual TLS instead, to the
server's TLS port, all presenting one client certificate.  Before the server
starts, in both modes, ``fieldc2 ca init``, ``fieldc2 cert issue bench`` and
``fieldc2 user add bench --group Cyan`` prepare its data dir: the server fixes
a TLS client's groups from its certificate's account, so TLS clients are in
the same one group as TCP clients (who name it in their self-reports).  Only
the port and the TLS layer differ, so the two kinds of run are comparable.

Every loop is bounded in count and time, and the server is terminated at the
end of each run whatever happens (Ctrl+C included).  Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import http.client
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fieldc2.sim.units import self_report

HOST = "127.0.0.1"
GROUP = "Cyan"
END = b"</event>"
TAIL = len(END) - 1
MAX_REST = 1024 * 1024
BENCH_OPEN = b'<bench t="'
DETAIL_END = b"</detail></event>"
CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

#: What a run must reach to "hold" N.
HOLD_RATIO = 0.99
HOLD_P99_S = 1.0
#: Counting clients start looking for a window edge in their stream this long
#: before it (nothing sent at or after the edge can arrive before it).
EDGE_LEAD = 0.2
#: Targets from the issue.
TARGET_CPU_US_AT_100 = 3.0
TARGET_HELD_N = 500
TARGET_IDLE_RSS_MB = 80.0
TARGET_RSS_PER_CLIENT_KB = 100.0
#: The security issue's target: TLS fan-out costs at most this much server CPU
#: per delivered event as plain TCP, at N = TARGET_TLS_N.
TARGET_TLS_RATIO = 1.5
TARGET_TLS_N = 500
#: The client certificate every TLS client presents (one identity, one group).
TLS_CLIENT_NAME = "bench"
#: The name the clients check the server certificate against (it is issued for
#: localhost and 127.0.0.1).
TLS_SERVER_NAME = "localhost"
#: Connections opened at once: TLS handshakes cost milliseconds of CPU on both
#: sides, so fewer at a time keeps every one well inside its timeout on 2 cores.
TCP_CONNECT_BATCH = 50
TLS_CONNECT_BATCH = 25

console = Console()
if not console.is_terminal:
    console = Console(width=max(console.width, 150))  # tables stay whole in logs and pipes


# --- the server process ---------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_command() -> list[str]:
    exe = Path(sys.executable).with_name("fieldc2")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "fieldc2.cli"]


class ServerProcess:
    """``fieldc2 serve`` in its own process group, with /proc readings."""

    def __init__(self, data_dir: Path, log_path: Path, extra: list[str]) -> None:
        self.extra = extra
        self.data_dir = data_dir
        self.log_path = log_path
        self.tcp_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.tcp_port:
            self.http_port = free_port()
        self.tls_port = free_port()
        while self.tls_port in (self.tcp_port, self.http_port):
            self.tls_port = free_port()
        self.enrollment_port = free_port()
        while self.enrollment_port in (self.tcp_port, self.http_port, self.tls_port):
            self.enrollment_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.command: list[str] = []
        self.api_context: ssl.SSLContext | None = None
        """Client context for the Marti API when it wants a client certificate."""
        self._schemes = ("http", "https")
        """Marti API schemes to try; narrowed to the one that answered."""

    def start(self, timeout: float) -> None:
        self.command = [
            *server_command(), "serve", "--tcp-port", str(self.tcp_port),
            "--tls-port", str(self.tls_port), "--http-port", str(self.http_port),
            "--enrollment-port", str(self.enrollment_port), "--data-dir", str(self.data_dir),
            "--log-level", "warning", *self.extra,
        ]
        with open(self.log_path, "wb") as log:
            # Own session: a Ctrl+C in the terminal reaches only the benchmark,
            # which then stops the server itself, in order.
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        accepting = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            if not accepting:
                with contextlib.suppress(OSError), socket.create_connection(
                        (HOST, self.tcp_port), timeout=0.5):
                    accepting = True
            # The server opens TCP, then TLS, then the Marti API: once the API
            # answers, the TLS port listens too.
            if accepting and self.connected_endpoints(timeout=1.0) is not None:
                return
            time.sleep(0.05)
        raise RuntimeError(f"server did not accept on {HOST}:{self.tcp_port} and answer on "
                           f"{HOST}:{self.http_port} within {timeout:.0f} s:\n"
                           f"{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def status_kb(self, key: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {key} in /proc/{self.pid}/status")

    def rss_kb(self) -> int:
        return self.status_kb("VmRSS")

    def cpu(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the whole process, all threads."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK

    def thread_cpu(self) -> dict[int, float]:
        """CPU seconds (user + system) per thread id; the event loop is tid == pid."""
        out: dict[int, float] = {}
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                with contextlib.suppress(OSError), open(
                        f"/proc/{self.pid}/task/{tid}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
                out[int(tid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        return out

    def threads(self) -> int:
        return self.status_kb("Threads")

    def connected_endpoints(self, timeout: float = 5.0) -> int | None:
        """Clients the server reports as connected (Marti clientEndPoints), or None."""
        body: Any = None
        for scheme in self._schemes:
            if scheme == "https" and self.api_context is None:
                continue
            url = f"{scheme}://{HOST}:{self.http_port}/Marti/api/clientEndPoints"
            try:
                with urllib.request.urlopen(url, timeout=timeout,
                                            context=self.api_context) as resp:
                    body = json.load(resp)
            except (OSError, ValueError, http.client.HTTPException):
                continue
            self._schemes = (scheme,)
            break
        else:
            return None
        data = body.get("data", []) if isinstance(body, dict) else []
        return sum(1 for e in data if isinstance(e, dict)
                   and e.get("lastStatus", e.get("status")) == "Connected")

    def stop(self, timeout: float = 15.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        return proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []


@dataclass
class TlsFiles:
    """The CA and the client credentials a TLS run uses."""

    ca: Path
    cert: Path
    key: Path


def make_tls_credentials(data_dir: Path, key_type: str, config: Path | None,
                         timeout: float = 60.0) -> TlsFiles:
    """The CA, the client certificate and its account, in the server's data dir.

    ``fieldc2 ca init``, ``fieldc2 cert issue bench`` and ``fieldc2 user add
    bench --group Cyan --role admin``: the account puts every TLS client in the
    group the TCP clients name in their self-reports, and lets the benchmark's
    Marti query (over HTTPS with this certificate, when the API wants one) list
    every client.  Done for TCP runs too, so that both start the same server.
    """
    extra = ["--config", str(config)] if config else []
    for cmd in (["ca", "init", "--key-type", key_type], ["cert", "issue", TLS_CLIENT_NAME],
                ["user", "add", TLS_CLIENT_NAME, "--group", GROUP, "--role", "admin"]):
        full = [*server_command(), *cmd, "--data-dir", str(data_dir), *extra]
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(full)} exited with {done.returncode}:\n"
                               f"{done.stdout}{done.stderr}")
    ca_dir = data_dir / "ca"
    return TlsFiles(ca_dir / "ca.pem", ca_dir / "clients" / f"{TLS_CLIENT_NAME}.pem",
                    ca_dir / "clients" / f"{TLS_CLIENT_NAME}.key")


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """What a TAK client does: verify the server against the CA, present our certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca))
    context.load_cert_chain(str(files.cert), str(files.key))
    return context


def source_state() -> tuple[str, str]:
    """(git HEAD, digest of src/**/*.py as it is on disk): what the server will import.

    The package is installed editable, so a run measures the working tree, which
    another process may be editing; the digest shows whether two runs ran the same code.
    """
    digest = hashlib.sha256()
    for path in sorted((REPO / "src").rglob("*.py")):
        with contextlib.suppress(OSError):
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    head = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip()
    return head, digest.hexdigest()[:12]


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


def wait_for_quiet(threshold: float, max_wait: float, say: Any = print) -> float:
    """Wait (at most ``max_wait`` s) until the machine's load over one second is
    below ``threshold`` % of one core; return the last reading."""
    deadline = time.monotonic() + max_wait
    cpus = os.cpu_count() or 1
    load = math.inf
    for _ in range(int(max_wait) + 1):
        busy0 = machine_busy()
        time.sleep(1.0)
        busy1 = machine_busy()
        total = busy1[1] - busy0[1]
        load = 100 * cpus * (busy1[0] - busy0[0]) / total if total else 0.0
        if load < threshold or time.monotonic() >= deadline:
            break
        if _ == 0:
            say(f"the machine is busy ({load:.0f}% of one core used by others); waiting up "
                f"to {max_wait:.0f} s for it to drop below {threshold:.0f}%")
    return load


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the clients ---------------------------------------------------------------


@dataclass
class Window:
    """The measured window, in wall-clock time (what ``<bench t>`` carries)."""

    start: float = math.inf
    end: float = math.inf
    open: bool = False
    """True while the loop's clock is inside the window (receive-side counting)."""


class Client(asyncio.Protocol):
    """A counting client: sends positions on schedule, counts what it receives.

    It counts ``</event>`` with ``bytes.count`` and never parses, except while
    it searches for a window edge in its stream: from just before the edge until
    the first event stamped at or after the edge, it reads the ``<bench t>`` of
    each event.  The events before that one are the events sent before the edge
    (the server keeps each stream in arrival order), so the window count is
    exact by send time, as for the sampled clients, at the cost of parsing a
    few hundred milliseconds of traffic per edge.
    """

    def __init__(self, index: int, window: Window, rate: float) -> None:
        self.index = index
        self.uid = f"BENCH-{index:05d}"
        self.callsign = f"B{index:05d}"
        self.window = window
        self.period = 1.0 / rate
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.lost_reason = ""
        self.bytes = 0
        self.events = 0
        self.win_events = 0
        """Events received while the window was open (receive-time counting)."""
        self.marks: dict[float, int] = {}
        """Edge -> events received before the first event stamped at or after it."""
        self._search: float | None = None
        self._rest = b""
        # sending
        self.sent = 0
        self.sent_window = 0
        self.total_sends = 0
        self.next_at = 0.0
        self.lags: list[float] = []
        self.lat = 47.0 + (index % 100) * 0.001
        self.lon = 8.0 + (index // 100) * 0.001

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._write(time.time())  # the self-report that introduces the client

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        if self._search is not None:
            self._search_edge(data)
            return
        n = data.count(END)
        rest = self._rest
        if rest:
            n += (rest[-TAIL:] + data[:TAIL]).count(END)  # a "</event>" split across reads
        last = data.rfind(END)
        self._rest = data[last + len(END):] if last >= 0 else (rest + data)[-MAX_REST:]
        self.events += n
        if self.window.open:
            self.win_events += n

    def _search_edge(self, data: bytes) -> None:
        buf = self._rest + data
        start = 0
        is_open = self.window.open
        while True:
            end = buf.find(END, start)
            if end < 0:
                break
            edge = self._search
            if edge is not None:
                i = buf.find(BENCH_OPEN, start, end)
                if i >= 0:
                    i += len(BENCH_OPEN)
                    if float(buf[i: buf.find(b'"', i)]) >= edge:
                        self.marks[edge] = self.events
                        self._search = None
            self.events += 1
            if is_open:
                self.win_events += 1
            start = end + len(END)
        self._rest = buf[start:][-MAX_REST:]

    def search(self, edge: float) -> None:
        """Start looking for the first event stamped at or after ``edge``."""
        if self._search is not None:  # the previous edge never showed up in this stream
            self.marks[self._search] = self.events
        self._search = edge

    def window_count(self, start: float, end: float) -> int:
        """Events received that were sent in [start, end) (by stream position)."""
        if start not in self.marks:
            return 0
        return self.marks.get(end, self.events) - self.marks[start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_reason = str(exc) if exc else "closed by server"
        self.transport = None

    # sending

    def report(self, now: float) -> bytes:
        lat = self.lat + self.sent * 1e-5
        body = self_report(self.uid, self.callsign, lat, self.lon, group=GROUP,
                           course=90.0, speed=1.4, now=now)
        stamp = f'<bench t="{now:.6f}" c="{self.index}" n="{self.sent}"/>'.encode()
        return body[: -len(DETAIL_END)] + stamp + DETAIL_END

    def _write(self, now: float) -> None:
        if self.transport is None:
            return
        self.transport.write(self.report(now))
        if self.window.start <= now < self.window.end:
            self.sent_window += 1
        self.sent += 1

    def schedule(self, loop: asyncio.AbstractEventLoop, first_at: float, count: int) -> None:
        self.total_sends = count
        self.next_at = first_at
        loop.call_at(first_at, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.transport is None or self.total_sends <= 0:
            return
        now = time.time()
        if len(self.lags) < 100_000:
            self.lags.append(loop.time() - self.next_at)
        self._write(now)
        self.total_sends -= 1
        if self.total_sends > 0:
            self.next_at += self.period
            loop.call_at(self.next_at, self._tick, loop)


class SampledClient(Client):
    """A client that parses every event it receives and measures latency."""

    def __init__(self, index: int, window: Window, rate: float) -> None:
        super().__init__(index, window, rate)
        self._buf = bytearray()
        self.latencies: list[float] = []
        self.win_unique = 0
        self.duplicates = 0
        self.echoes = 0
        self.unstamped = 0
        self._seen: set[tuple[int, int]] = set()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.bytes += len(data)
        buf = self._buf
        buf += data
        start = 0
        win_start, win_end = self.window.start, self.window.end
        seen = self._seen
        while True:
            end = buf.find(END, start)
            if end < 0:
                break
            self.events += 1
            if self.window.open:
                self.win_events += 1
            i = buf.find(BENCH_OPEN, start, end)
            if i < 0:
                self.unstamped += 1  # protocol offer, or an event without a stamp
            else:
                j = buf.find(b"/>", i, end)
                parts = bytes(buf[i + len(BENCH_OPEN): j]).split(b'"')
                sent, sender, seq = float(parts[0]), int(parts[2]), int(parts[4])
                if sender == self.index:
                    self.echoes += 1
                elif win_start <= sent < win_end:
                    key = (sender, seq)
                    if key in seen:
                        self.duplicates += 1
                    else:
                        seen.add(key)
                        self.win_unique += 1
                        self.latencies.append(now - sent)
            start = end + len(END)
        del buf[:start]


# --- one run -------------------------------------------------------------------


@dataclass
class RunResult:
    clients: int
    transport: str = "tcp"
    """"tcp", or "tls" (mutual TLS with one shared client certificate)."""
    tls_key_type: str | None = None
    tls_version: str | None = None
    tls_cipher: str | None = None
    connect_s: float = 0.0
    """Wall time to connect all N clients (TLS: including the handshakes)."""
    connect_server_cpu_s: float = 0.0
    """Server CPU over the connect phase (the handshakes, the self-reports, the pictures)."""
    connected: int = 0
    server_saw: int | None = None
    lost: int = 0
    lost_reasons: list[str] = field(default_factory=list)
    duration: float = 0.0
    rate: float = 1.0
    sent_window: int = 0
    ideal: float = 0.0
    delivered: int = 0
    delivered_per_s: float = 0.0
    ratio: float = 0.0
    send_ratio: float = 0.0
    ratio_vs_sent: float = 0.0
    delivered_recv_window: int = 0
    ratio_recv_window: float = 0.0
    searches_unfinished: int = 0
    sampled: int = 0
    sampled_expected: int = 0
    sampled_delivered: int = 0
    sampled_ratio: float = 0.0
    duplicates: int = 0
    echoes: int = 0
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    latency_samples: int = 0
    send_lag_p99_ms: float | None = None
    rss_idle_kb: int = 0
    rss_connected_kb: int = 0
    rss_end_kb: int = 0
    rss_after_disconnect_kb: int | None = None
    rss_peak_kb: int = 0
    rss_per_client_kb: float = 0.0
    server_threads: int = 0
    server_cpu_user_s: float = 0.0
    server_cpu_sys_s: float = 0.0
    server_cpu_s: float = 0.0
    server_cpu_pct: float = 0.0
    server_cpu_loop_thread_s: float = 0.0
    """Of server_cpu_s: the event-loop (main) thread."""
    server_cpu_other_threads_s: float = 0.0
    """Of server_cpu_s: every other thread (the SQLite writer thread, executors)."""
    cpu_us_per_event: float | None = None
    generator_cpu_s: float = 0.0
    generator_cpu_pct: float = 0.0
    machine_busy_pct: float = 0.0
    other_cpu_pct: float = 0.0
    other_load_before_pct: float | None = None
    received_bytes: int = 0
    server_exit: int | None = None
    server_warnings: list[str] = field(default_factory=list)
    server_warning_count: int = 0
    profile: str | None = None
    git_head: str = ""
    src_digest: str = ""
    src_changed: bool = False
    """The source tree changed while this run's server was up (its numbers are suspect)."""
    holds: bool = False
    error: str | None = None


def _same(client: Client) -> Client:
    """Protocol factory for one pre-made client (with functools.partial)."""
    return client


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Run:
    def __init__(self, args: argparse.Namespace, n: int, server: ServerProcess,
                 progress: Progress) -> None:
        self.args = args
        self.n = n
        self.server = server
        self.progress = progress
        self.window = Window()
        self.clients: list[Client] = []
        self.result = RunResult(clients=n, duration=args.duration, rate=args.rate,
                                transport="tls" if args.tls else "tcp",
                                tls_key_type=args.tls_key_type if args.tls else None)
        self.ssl: ssl.SSLContext | None = None
        """The client context of a TLS run (set before :meth:`run`)."""
        self.label = f"N={n}" + (" TLS" if args.tls else "")
        self.task = progress.add_task(f"{self.label}: idle", total=None, info="")
        self.phase = "idle"
        self.profiler: subprocess.Popen[bytes] | None = None

    def _info(self, text: str, completed: float | None = None,
              total: float | None = None) -> None:
        self.progress.update(self.task, description=f"{self.label}: {self.phase}", info=text,
                             completed=completed, total=total)

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        n, args = self.n, self.args
        count = min(args.sample, n)
        sampled = {round(k * n / count) for k in range(count)} if count else set()
        self.phase = "connecting"
        batch = max(1, args.connect_batch or (TLS_CONNECT_BATCH if self.ssl else TCP_CONNECT_BATCH))
        port = self.server.tls_port if self.ssl else self.server.tcp_port
        tls: dict[str, Any] = {} if self.ssl is None else {
            "ssl": self.ssl, "server_hostname": TLS_SERVER_NAME,
            "ssl_handshake_timeout": args.handshake_timeout}
        start = loop.time()
        cpu0 = sum(self.server.cpu())
        deadline = start + args.connect_timeout
        for first in range(0, n, batch):
            made = []
            for i in range(first, min(first + batch, n)):
                cls = SampledClient if i in sampled else Client
                client = cls(i, self.window, args.rate)
                self.clients.append(client)
                made.append(loop.create_connection(functools.partial(_same, client), HOST,
                                                   port, **tls))
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"connecting {n} clients took over {args.connect_timeout} s")
            await asyncio.wait_for(asyncio.gather(*made), left)
            self._info(f"{len(self.clients)}/{n} connected", len(self.clients), n)
        self.result.connect_s = loop.time() - start
        self.result.connect_server_cpu_s = sum(self.server.cpu()) - cpu0
        self.result.connected = sum(1 for c in self.clients if c.transport is not None)
        self.result.sampled = count
        if self.ssl is not None:
            first_ssl = next((c.transport.get_extra_info("ssl_object") for c in self.clients
                              if c.transport is not None), None)
            if first_ssl is not None:
                self.result.tls_version = first_ssl.version()
                cipher = first_ssl.cipher()
                self.result.tls_cipher = cipher[0] if cipher else None

    async def monitor(self, t_start: float, t_total: float) -> None:
        """Update the progress line twice a second until the run's end (bounded)."""
        loop = asyncio.get_running_loop()
        last_cpu = sum(self.server.cpu())
        last_events = 0
        last_t = loop.time()
        for _ in range(int(t_total * 2) + 20):
            await asyncio.sleep(0.5)
            now = loop.time()
            cpu = sum(self.server.cpu())
            events = sum(c.events for c in self.clients)
            span = max(1e-6, now - last_t)
            info = (f"rx {(events - last_events) / span:,.0f} ev/s  "
                    f"server CPU {100 * (cpu - last_cpu) / span:.0f}%")
            last_cpu, last_events, last_t = cpu, events, now
            self._info(info, min(t_total, now - t_start), t_total)
            if now - t_start >= t_total:
                return

    def _start_profiler(self) -> None:
        args = self.args
        if not args.profile:
            return
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        out = Path(args.profile) / f"fanout-n{self.n}.txt"
        for k in range(2, 1000):  # with --repeat, keep every run's profile
            if not out.exists():
                break
            out = Path(args.profile) / f"fanout-n{self.n}-{k}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [pyspy, "record", "--pid", str(self.server.pid), "--duration",
               str(int(args.duration)), "--rate", str(args.profile_rate), "--format", "raw",
               "--output", str(out)]
        # py-spy cannot unwind native frames without pausing the process
        cmd.append("--native" if args.profile_native else "--nonblocking")
        self.profiler = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.result.profile = str(out)

    def _stop_profiler(self, wait: float = 20.0) -> None:
        """Let py-spy finish its --duration (at most ``wait`` s more), else stop it."""
        proc = self.profiler
        if proc is None:
            return
        self.profiler = None
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    async def run(self) -> RunResult:
        loop = asyncio.get_running_loop()
        args, r, server = self.args, self.result, self.server
        await asyncio.sleep(args.idle_settle)
        r.rss_idle_kb = server.rss_kb()

        await self.connect()
        # One more second for the self-reports (and the picture each new client
        # is sent) to settle, then positions start, staggered across the period.
        self.phase = "warm-up"
        lead = 1.0
        period = 1.0 / args.rate
        t0_loop = loop.time() + lead
        t0_wall = time.time() + lead
        w = self.window
        w.start = t0_wall + args.warmup
        w.end = w.start + args.duration
        sends = math.ceil((args.warmup + args.duration + args.drain) * args.rate)
        for client in self.clients:
            # (i + 0.5)/N: no client sends exactly on a window edge
            client.schedule(loop, t0_loop + period * (client.index + 0.5) / self.n, sends)
        t_total = lead + args.warmup + args.duration + args.drain
        monitor = asyncio.create_task(self.monitor(loop.time(), t_total))
        counting = [c for c in self.clients if not isinstance(c, SampledClient)]

        w0_loop = t0_loop + args.warmup
        w1_loop = w0_loop + args.duration
        await asyncio.sleep(max(0.0, w0_loop - EDGE_LEAD - loop.time()))
        for client in counting:
            client.search(w.start)
        await asyncio.sleep(max(0.0, w0_loop - loop.time()))
        # --- measured window opens
        w.open = True
        self.phase = "measuring"
        cpu0 = server.cpu()
        threads0 = server.thread_cpu()
        gen0 = own_cpu()
        busy0 = machine_busy()
        self._start_profiler()
        r.rss_connected_kb = server.rss_kb()
        r.server_threads = server.threads()
        await asyncio.sleep(max(0.0, w1_loop - EDGE_LEAD - loop.time()))
        for client in counting:
            client.search(w.end)
        await asyncio.sleep(max(0.0, w1_loop - loop.time()))
        # --- measured window closes
        w.open = False
        cpu1 = server.cpu()
        threads1 = server.thread_cpu()
        loop_cpu = threads1.get(server.pid, 0.0) - threads0.get(server.pid, 0.0)
        r.server_cpu_loop_thread_s = loop_cpu
        r.server_cpu_other_threads_s = sum(
            v - threads0.get(tid, 0.0) for tid, v in threads1.items() if tid != server.pid)
        gen1 = own_cpu()
        busy1 = machine_busy()
        r.rss_end_kb = server.rss_kb()
        self.phase = "drain"
        await asyncio.sleep(max(0.0, w1_loop + args.drain - loop.time()))
        await asyncio.sleep(0.2)  # the last sends' deliveries
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
        self._stop_profiler()
        r.server_saw = await loop.run_in_executor(None, server.connected_endpoints)
        r.rss_peak_kb = server.status_kb("VmHWM")

        # connections the server closed (or that broke) before the benchmark closed them
        r.lost = sum(1 for c in self.clients if c.lost)
        r.lost_reasons = sorted({c.lost_reason for c in self.clients if c.lost})[:5]
        # close the clients; the server should give back what they held
        for client in self.clients:
            if client.transport is not None:
                client.transport.close()
        await asyncio.sleep(1.0)
        r.rss_after_disconnect_kb = server.rss_kb()

        self._summarise(cpu0, cpu1, gen1 - gen0, busy0, busy1)
        return r

    def _summarise(self, cpu0: tuple[float, float], cpu1: tuple[float, float], gen: float,
                   busy0: tuple[int, int], busy1: tuple[int, int]) -> None:
        r, n, args = self.result, self.n, self.args
        clients = self.clients
        sampled = [c for c in clients if isinstance(c, SampledClient)]
        counting = [c for c in clients if not isinstance(c, SampledClient)]
        r.sent_window = sum(c.sent_window for c in clients)
        r.ideal = n * (n - 1) * args.rate * args.duration
        r.sampled_delivered = sum(c.win_unique for c in sampled)
        r.searches_unfinished = sum(1 for c in counting if c._search is not None)
        window_sends = r.sent_window
        r.sampled_expected = sum(window_sends - c.sent_window for c in sampled)
        r.sampled_ratio = r.sampled_delivered / r.sampled_expected if r.sampled_expected else 0.0
        r.duplicates = sum(c.duplicates for c in sampled)
        r.echoes = sum(c.echoes for c in sampled)
        w = self.window
        r.delivered = r.sampled_delivered + sum(c.window_count(w.start, w.end) for c in counting)
        r.delivered_per_s = r.delivered / args.duration
        r.ratio = r.delivered / r.ideal if r.ideal else 0.0
        r.send_ratio = r.sent_window / (n * args.rate * args.duration)
        actual = r.sent_window * (n - 1)
        r.ratio_vs_sent = r.delivered / actual if actual else 0.0
        r.delivered_recv_window = sum(c.win_events for c in clients)
        r.ratio_recv_window = r.delivered_recv_window / r.ideal if r.ideal else 0.0
        r.received_bytes = sum(c.bytes for c in clients)
        latencies = sorted(x for c in sampled for x in c.latencies)
        r.latency_samples = len(latencies)
        if latencies:
            r.latency_p50_ms = 1000 * percentile(latencies, 50)
            r.latency_p90_ms = 1000 * percentile(latencies, 90)
            r.latency_p99_ms = 1000 * percentile(latencies, 99)
            r.latency_max_ms = 1000 * latencies[-1]
        lags = sorted(x for c in clients for x in c.lags)
        if lags:
            r.send_lag_p99_ms = 1000 * percentile(lags, 99)
        r.rss_per_client_kb = (r.rss_connected_kb - r.rss_idle_kb) / n
        r.server_cpu_user_s = cpu1[0] - cpu0[0]
        r.server_cpu_sys_s = cpu1[1] - cpu0[1]
        r.server_cpu_s = r.server_cpu_user_s + r.server_cpu_sys_s
        r.server_cpu_pct = 100 * r.server_cpu_s / args.duration
        r.cpu_us_per_event = 1e6 * r.server_cpu_s / r.delivered if r.delivered else None
        r.generator_cpu_s = gen
        r.generator_cpu_pct = 100 * gen / args.duration
        busy, total = busy1[0] - busy0[0], busy1[1] - busy0[1]
        r.machine_busy_pct = 100 * (os.cpu_count() or 1) * busy / total if total else 0.0
        # clamped: the counters tick in 1/CLK_TCK steps, so idle runs can come out at -1 %
        r.other_cpu_pct = max(0.0, r.machine_busy_pct - r.server_cpu_pct - r.generator_cpu_pct)
        p99 = r.latency_p99_ms
        r.holds = (r.connected == n and r.lost == 0 and r.ratio >= HOLD_RATIO
                   and p99 is not None and p99 <= HOLD_P99_S * 1000)


async def _run_async(args: argparse.Namespace, n: int, server: ServerProcess,
                     progress: Progress, context: ssl.SSLContext | None) -> RunResult:
    run = Run(args, n, server, progress)
    run.ssl = context
    try:
        return await run.run()
    finally:
        run._stop_profiler(wait=0.0)
        for client in run.clients:
            if client.transport is not None:
                client.transport.abort()
        progress.remove_task(run.task)


def run_one(args: argparse.Namespace, n: int, progress: Progress) -> RunResult:
    """One run with a fresh server; the server is always stopped."""
    tmp = Path(tempfile.mkdtemp(prefix=f"fieldc2-bench-n{n}-"))
    extra = ["--config", str(args.server_config)] if args.server_config else []
    server = ServerProcess(tmp / "data", tmp / "server.log", extra)
    result = RunResult(clients=n, duration=args.duration, rate=args.rate,
                       transport="tls" if args.tls else "tcp",
                       tls_key_type=args.tls_key_type if args.tls else None)
    load: float | None = None
    head, digest = source_state()
    try:
        # The server is started on this data dir, so it serves with this CA
        # (in TCP runs too: the same server, only the clients' port differs).
        server.api_context = client_context(make_tls_credentials(
            server.data_dir, args.tls_key_type, args.server_config))
        context = server.api_context if args.tls else None
        load = wait_for_quiet(args.quiet_below, args.wait_quiet, progress.console.print)
        if load >= args.quiet_below:
            progress.console.print(f"[yellow]N={n}: the machine is busy ({load:.0f}% of one "
                                   "core used by others) - results will be noisy[/yellow]")
        server.start(args.startup_timeout)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            result = runner.run(_run_async(args, n, server, progress, context))
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.git_head, result.src_digest = head, digest
        result.src_changed = source_state()[1] != digest
        result.other_load_before_pct = load
        result.server_exit = server.stop()
        lines = server.log_lines()
        warnings = [x for x in lines if " WARNING " in x or " ERROR " in x or "Traceback" in x]
        result.server_warning_count = len(warnings)
        result.server_warnings = warnings[:20]
        if args.keep_data:
            console.print(f"[dim]kept server data and log in {tmp}[/dim]")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a fieldc2 dependency on Linux
        console.print("[yellow]uvloop not installed: using the default asyncio loop[/yellow]")
        return None
    return uvloop.new_event_loop


# --- reporting -----------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f}"


def _transport(r: RunResult) -> str:
    if r.transport != "tls":
        return "TCP"
    detail = ", ".join(x for x in (r.tls_key_type, r.tls_version, r.tls_cipher) if x)
    return f"TLS ({detail})" if detail else "TLS"


def run_table(r: RunResult) -> Table:
    title = f"N = {r.clients}, {_transport(r)}"
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("clients connected / seen by server", f"{r.connected} / {r.server_saw}"),
        ("connect phase s / server CPU s in it",
         f"{r.connect_s:.2f} / {r.connect_server_cpu_s:.2f}"),
        ("clients lost", str(r.lost)),
        ("events sent in window (share of N·rate·T)",
         f"{r.sent_window:,} ({r.send_ratio:.4f})"),
        ("ideal deliveries N(N-1)·rate·T", f"{r.ideal:,.0f}"),
        ("delivered in window", f"{r.delivered:,}"),
        ("delivered events/s", f"{r.delivered_per_s:,.0f}"),
        ("delivery ratio (by send time)", f"{r.ratio:.4f}"),
        ("ratio against the events actually sent", f"{r.ratio_vs_sent:.4f}"),
        ("ratio by receive-time window", f"{r.ratio_recv_window:.4f}"),
        (f"sampled ratio ({r.sampled} clients, exact)", f"{r.sampled_ratio:.4f}"),
        ("duplicates / echoes (sampled)", f"{r.duplicates} / {r.echoes}"),
        ("latency p50 / p90 / p99 / max ms",
         f"{_ms(r.latency_p50_ms)} / {_ms(r.latency_p90_ms)} / {_ms(r.latency_p99_ms)}"
         f" / {_ms(r.latency_max_ms)}"),
        ("latency samples", f"{r.latency_samples:,}"),
        ("generator send lag p99 ms", _ms(r.send_lag_p99_ms)),
        ("server CPU s (user + sys)",
         f"{r.server_cpu_s:.2f} ({r.server_cpu_user_s:.2f} + {r.server_cpu_sys_s:.2f})"),
        ("server CPU % of one core", f"{r.server_cpu_pct:.1f}"),
        ("server CPU s: event-loop thread / other threads",
         f"{r.server_cpu_loop_thread_s:.2f} / {r.server_cpu_other_threads_s:.2f}"),
        ("server CPU µs / delivered event",
         "-" if r.cpu_us_per_event is None else f"{r.cpu_us_per_event:.2f}"),
        ("generator CPU % of one core", f"{r.generator_cpu_pct:.1f}"),
        ("machine busy % (of 100·nproc)", f"{r.machine_busy_pct:.1f}"),
        ("other CPU % (busy - server - generator)", f"{r.other_cpu_pct:.1f}"),
        ("other load before the run, % of one core", _ms(r.other_load_before_pct)),
        ("server RSS idle / N conn. / end MB",
         f"{_mb(r.rss_idle_kb)} / {_mb(r.rss_connected_kb)} / {_mb(r.rss_end_kb)}"),
        ("server RSS after disconnect / peak MB",
         f"{_mb(r.rss_after_disconnect_kb)} / {_mb(r.rss_peak_kb)}"),
        ("RSS per connected client KB", f"{r.rss_per_client_kb:.1f}"),
        ("server warnings in log", str(r.server_warning_count)),
        ("source (git HEAD / src digest)", f"{r.git_head} / {r.src_digest}"
         + (" [red]CHANGED DURING RUN[/red]" if r.src_changed else "")),
    ]
    for name, value in rows:
        table.add_row(name, value)
    verdict = "[green]HOLDS[/green]" if r.holds else "[red]does NOT hold[/red]"
    if r.error:
        verdict = f"[red]ERROR: {r.error}[/red]"
    table.add_row("verdict (ratio ≥ 0.99, p99 ≤ 1 s)", verdict)
    return table


#: Leaf frames py-spy records while a thread waits (epoll, the executor queue).
_IDLE_LEAVES = ("epoll_pwait", "epoll_wait", "Runner.run (", "Thread.run (")
_IDLE_FRAME = "_worker (concurrent/futures/thread.py:81)"


def profile_table(path: Path, top: int = 14) -> Table | None:
    """Where the busy samples of a py-spy raw profile went (inclusive, per function)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    inclusive: Counter[str] = Counter()
    busy = idle = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        n = int(count)
        if frames[-1].startswith(_IDLE_LEAVES) or any(f.startswith(_IDLE_FRAME) for f in frames):
            idle += n
            continue
        busy += n
        names = {f.split(":")[0] + ")" if "fieldc2/" in f else f for f in frames
                 if ("fieldc2/" in f and "fieldc2/cli.py" not in f)
                 or (f.endswith("(libc.so.6)") and f.startswith(("write", "send", "fdatasync")))}
        for name in names:
            inclusive[name] += n
    if not busy:
        return None
    table = Table(title=f"server profile {path.name}: {busy} busy samples ({idle} idle dropped)",
                  title_justify="left")
    table.add_column("% of busy", justify="right")
    table.add_column("function (inclusive)")
    for name, n in inclusive.most_common(top):
        table.add_row(f"{100 * n / busy:.1f}", name)
    return table


def summary_table(results: list[RunResult]) -> Table:
    table = Table(title="fan-out summary")
    for name in ("N", "transport", "deliv./s", "ratio", "p50 ms", "p99 ms", "srv CPU %", "µs/event",
                 "gen CPU %", "RSS idle MB", "RSS N MB", "RSS end MB", "KB/client", "holds"):
        table.add_column(name, justify="right")
    for r in results:
        table.add_row(
            str(r.clients), r.transport.upper(), f"{r.delivered_per_s:,.0f}", f"{r.ratio:.4f}",
            _ms(r.latency_p50_ms), _ms(r.latency_p99_ms), f"{r.server_cpu_pct:.1f}",
            "-" if r.cpu_us_per_event is None else f"{r.cpu_us_per_event:.2f}",
            f"{r.generator_cpu_pct:.1f}", _mb(r.rss_idle_kb), _mb(r.rss_connected_kb),
            _mb(r.rss_end_kb), f"{r.rss_per_client_kb:.1f}",
            "error" if r.error else ("yes" if r.holds else "no"))
    return table


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def targets(results: list[RunResult]) -> list[dict[str, Any]]:
    """Each target against the runs; with repeats, the median (CPU) or the worst run.

    The fan-out targets are read on the plain TCP runs; the TLS target needs TCP
    and TLS runs at N = TARGET_TLS_N (from one run, or several ``--from-json`` files).
    """
    done = [r for r in results if not r.error]
    ok = [r for r in done if r.transport == "tcp"]
    out: list[dict[str, Any]] = []
    at100 = [r.cpu_us_per_event for r in ok if r.clients == 100 and r.cpu_us_per_event]
    value = _median(at100) if at100 else None
    spread = f" (median of {len(at100)}: {min(at100):.2f}-{max(at100):.2f})" \
        if len(at100) > 1 else ""
    out.append({"target": f"≤ {TARGET_CPU_US_AT_100:g} µs server CPU per delivered event at N=100",
                "measured": None if value is None else f"{value:.2f} µs{spread}",
                "met": None if value is None else value <= TARGET_CPU_US_AT_100})
    big = [r for r in ok if r.clients >= TARGET_HELD_N]
    out.append({"target": f"N ≥ {TARGET_HELD_N} held at 1 Hz (every run)",
                "measured": ", ".join(f"N={r.clients}: {'held' if r.holds else 'not held'}"
                                      for r in big) or None,
                "met": all(r.holds for r in big) if big else None})
    idle = max((r.rss_idle_kb for r in ok), default=None)
    out.append({"target": f"idle RSS < {TARGET_IDLE_RSS_MB:.0f} MB",
                "measured": None if idle is None else f"{idle / 1024:.1f} MB (max over runs)",
                "met": None if idle is None else idle / 1024 < TARGET_IDLE_RSS_MB})
    per = max((r.rss_per_client_kb for r in ok if r.clients >= 100), default=None)
    out.append({"target": f"< {TARGET_RSS_PER_CLIENT_KB:.0f} KB RSS per connected client",
                "measured": None if per is None else f"{per:.1f} KB (max over runs with N ≥ 100)",
                "met": None if per is None else per < TARGET_RSS_PER_CLIENT_KB})
    ratio = tls_ratio(done, TARGET_TLS_N)
    out.append({"target": f"TLS ≤ {TARGET_TLS_RATIO:g}x the server CPU per delivered event "
                          f"of TCP at N={TARGET_TLS_N}",
                "measured": None if ratio is None else
                f"{ratio[0]:.2f}x (median TLS {ratio[2]:.3f} / median TCP {ratio[1]:.3f} µs)",
                "met": None if ratio is None else ratio[0] <= TARGET_TLS_RATIO})
    return out


def tls_ratio(results: list[RunResult], n: int) -> tuple[float, float, float] | None:
    """(TLS/TCP, median TCP µs/event, median TLS µs/event) at ``n``, or None."""
    by: dict[str, list[float]] = {"tcp": [], "tls": []}
    for r in results:
        if r.clients == n and not r.error and r.cpu_us_per_event and r.transport in by:
            by[r.transport].append(r.cpu_us_per_event)
    if not by["tcp"] or not by["tls"]:
        return None
    tcp, tls = _median(by["tcp"]), _median(by["tls"])
    return tls / tcp, tcp, tls


def comparison_table(results: list[RunResult]) -> Table | None:
    """TLS against TCP for every N that has both (medians over repeats)."""
    ok = [r for r in results if not r.error and r.cpu_us_per_event]
    ns = sorted({r.clients for r in ok if r.transport == "tls"}
                & {r.clients for r in ok if r.transport == "tcp"})
    if not ns:
        return None
    table = Table(title="TLS against TCP (median over runs)")
    for name in ("N", "TCP µs/event", "TLS µs/event", "TLS / TCP", "TCP ratio", "TLS ratio",
                 "TCP p99 ms", "TLS p99 ms", "runs TCP/TLS"):
        table.add_column(name, justify="right")
    for n in ns:
        tcp = [r for r in ok if r.clients == n and r.transport == "tcp"]
        tls = [r for r in ok if r.clients == n and r.transport == "tls"]
        ratio = tls_ratio(ok, n)
        assert ratio is not None
        table.add_row(
            str(n), f"{ratio[1]:.3f}", f"{ratio[2]:.3f}", f"{ratio[0]:.2f}x",
            f"{_median([r.ratio for r in tcp]):.4f}", f"{_median([r.ratio for r in tls]):.4f}",
            _ms(_median([r.latency_p99_ms or math.nan for r in tcp])),
            _ms(_median([r.latency_p99_ms or math.nan for r in tls])),
            f"{len(tcp)}/{len(tls)}")
    return table


def targets_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="targets")
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("verdict")
    for row in rows:
        met = row["met"]
        verdict = ("[green]met[/green]" if met else "[red]missed[/red]") if met is not None \
            else "[yellow]not measured[/yellow]"
        table.add_row(row["target"], str(row["measured"] if row["measured"] is not None
                                         else "-"), verdict)
    return table


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    versions: dict[str, str] = {}
    for name in ("uvloop", "fieldc2", "rich"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version
            versions[name] = version(name)
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": commit,
    }


def plot(results: list[RunResult], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        console.print("[yellow]--plot needs matplotlib: .venv/bin/pip install matplotlib"
                      "[/yellow]")
        return
    ok = [r for r in results if not r.error and r.cpu_us_per_event is not None]
    if not ok:
        console.print("[yellow]nothing to plot[/yellow]")
        return
    ns = sorted({r.clients for r in ok})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    # every run as a dot, the median per N as the line
    ax1.plot([r.clients for r in ok], [r.cpu_us_per_event for r in ok], "o", alpha=0.5)
    ax1.plot(ns, [_median([r.cpu_us_per_event or 0.0 for r in ok if r.clients == n])
                  for n in ns], "-", color="C0")
    ax1.axhline(TARGET_CPU_US_AT_100, color="red", linestyle="--", label="target at N=100")
    ax1.set_xlabel("clients N")
    ax1.set_ylabel("server CPU µs per delivered event")
    ax1.set_yscale("log")  # from ~100 µs at N=10 to well under 1 µs at N=500
    ax1.legend()
    ax1.grid(True, alpha=0.3)
    ax2.plot([r.clients for r in ok], [r.ratio for r in ok], "o", alpha=0.5)
    ax2.plot(ns, [_median([r.ratio for r in ok if r.clients == n]) for n in ns], "-",
             color="C0")
    ax2.axhline(HOLD_RATIO, color="red", linestyle="--", label=f"holds at ≥ {HOLD_RATIO}")
    ax2.set_xlabel("clients N")
    ax2.set_ylabel("delivery ratio")
    ax2.set_ylim(min(0.9, min(r.ratio for r in ok) - 0.02), 1.01)
    ax2.legend()
    ax2.grid(True, alpha=0.3)
    fig.suptitle(f"fieldc2 fan-out, {ok[0].rate:g} Hz per client, one group")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    console.print(f"plot written to {path}")


# --- main ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fan-out benchmark for fieldc2: N TCP (or, with --tls, mutual TLS) "
                    "clients in one group, each sending "
                    "a position at --rate Hz; measures delivered events/s, delivery ratio, "
                    "latency, server CPU and RSS. One fresh server per N. Loopback only.",
        epilog="Results go to bench/results/fanout-<timestamp>.json (fanout-tls-... with "
               "--tls). "
               "Method and latest numbers: docs/benchmarks.md.")
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 250, 500],
                        metavar="N", help="client counts, one run each (default 10 100 250 500)")
    parser.add_argument("--repeat", type=int, default=1, metavar="K",
                        help="runs per N, each with a fresh server (default 1)")
    parser.add_argument("--server-config", type=Path, metavar="FILE.toml",
                        help="pass --config FILE.toml to the server (default: built-in "
                             "defaults); ports and data dir are still set by the benchmark")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="measured window, seconds (default 30)")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="sending before the window opens, not measured (default 5)")
    parser.add_argument("--drain", type=float, default=5.0,
                        help="seconds clients keep sending after the window closes, so "
                             "events sent in it can still arrive (default 5)")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="positions per second per client (default 1)")
    parser.add_argument("--sample", type=int, default=10,
                        help="clients that parse every event for latency (default 10); the "
                             "others only count")
    parser.add_argument("--tls", action="store_true",
                        help="connect over mutual TLS: every client presents the one client "
                             "certificate made in the server's data dir before it starts "
                             "(fieldc2 ca init, cert issue bench, user add bench; done for TCP "
                             "runs too) to the TLS port")
    parser.add_argument("--tls-key-type", choices=["rsa2048", "p256"], default="rsa2048",
                        help="key type of the CA and its certificates (made in both modes; "
                             "only --tls handshakes use them; default rsa2048, the server's "
                             "default)")
    parser.add_argument("--handshake-timeout", type=float, default=30.0,
                        help="seconds allowed for one TLS handshake (default 30)")
    parser.add_argument("--connect-batch", type=int, default=None,
                        help=f"connections opened concurrently (default {TCP_CONNECT_BATCH}, "
                             f"{TLS_CONNECT_BATCH} with --tls)")
    parser.add_argument("--connect-timeout", type=float, default=60.0,
                        help="seconds allowed for all N clients to connect (default 60)")
    parser.add_argument("--startup-timeout", type=float, default=30.0,
                        help="seconds allowed for the server to accept (default 30)")
    parser.add_argument("--idle-settle", type=float, default=1.0,
                        help="seconds between server start and the idle RSS reading (default 1)")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="plot CPU µs/event and delivery ratio against N (matplotlib)")
    parser.add_argument("--output", type=Path, metavar="FILE.json",
                        help="results file (default bench/results/fanout-<timestamp>.json)")
    parser.add_argument("--from-json", type=Path, nargs="+", metavar="FILE.json",
                        help="run nothing: print the tables (and --plot) of earlier results "
                             "files; give a TCP and a TLS file to compare them")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record the server with py-spy during each measured window "
                             "(collapsed stacks in DIR/fanout-n<N>.txt); py-spy takes CPU "
                             "too, so numbers from a profiled run are not comparable")
    parser.add_argument("--profile-rate", type=int, default=200,
                        help="py-spy samples per second (default 200)")
    parser.add_argument("--profile-native", action="store_true",
                        help="include native (C) frames in the py-spy profile (py-spy then "
                             "pauses the server for every sample)")
    parser.add_argument("--quiet-below", type=float, default=25.0, metavar="PCT",
                        help="before each run, wait until other processes use less than this "
                             "%% of one core (default 25)")
    parser.add_argument("--wait-quiet", type=float, default=60.0, metavar="S",
                        help="longest wait for a quiet machine before a run; it then runs "
                             "anyway, with a warning (default 60)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep each run's server data dir and log")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("duration", "rate"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name} must be positive")
    if args.warmup < 0 or args.drain < 0 or args.sample < 0:
        raise SystemExit("--warmup, --drain and --sample must not be negative")
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    if any(n < 2 for n in args.clients):
        raise SystemExit("--clients: each N must be at least 2")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(args.clients) + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))

    # SIGTERM behaves like Ctrl+C: unwind, so every finally stops its server.
    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    # Ctrl+C works even when started in the background by a script (which ignores SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    if args.from_json:
        names = {f.name for f in dataclasses.fields(RunResult)}
        runs = []
        for path in args.from_json:
            old = json.loads(path.read_text())
            runs += [RunResult(**{k: v for k, v in r.items() if k in names})
                     for r in old["runs"]]
        console.print(summary_table(runs))
        comparison = comparison_table(runs)
        if comparison is not None:
            console.print(comparison)
        console.print(targets_table(targets(runs)))
        if args.plot:
            plot(runs, args.plot)
        return 0

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.output or RESULTS / f"fanout-{'tls-' if args.tls else ''}{stamp}.json"
    meta: dict[str, Any] = {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_info(),
        "server_command": " ".join([*server_command(), "serve", "--tcp-port", "P",
                                    "--tls-port", "S", "--http-port", "Q",
                                    "--enrollment-port", "E", "--data-dir", "TMP",
                                    "--log-level", "warning"]
                                   + (["--config", str(args.server_config)]
                                      if args.server_config else [])),
    }
    m: dict[str, Any] = meta["machine"]
    console.print(f"[bold]fieldc2 fan-out benchmark[/bold]: {m['nproc']} CPUs ({m['cpu_model']}),"
                  f" {m['mem_total_gb']} GB, Linux {m['kernel']}, Python {m['python']}, "
                  f"uvloop {m['versions'].get('uvloop', '-')}")
    if args.tls:
        console.print(f"over mutual TLS ({args.tls_key_type}), one client certificate "
                      f"{TLS_CLIENT_NAME!r} shared by every client")
    console.print(f"clients {args.clients}, {args.rate:g} Hz, warm-up {args.warmup:g} s, "
                  f"window {args.duration:g} s, drain {args.drain:g} s, sample {args.sample}")
    results: list[RunResult] = []

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": meta, "runs": [vars(r) for r in results],
                   "targets": targets(results)}
        out.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")

    interrupted = False
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                        console=console, transient=True)
    try:
        with progress:
            for n in [n for n in args.clients for _ in range(args.repeat)]:
                result = run_one(args, n, progress)
                results.append(result)
                progress.console.print(run_table(result))
                if result.profile:
                    profile = profile_table(Path(result.profile))
                    if profile is not None:
                        progress.console.print(profile)
                if result.server_warnings:
                    progress.console.print("[yellow]server log:[/yellow]\n  "
                                           + "\n  ".join(result.server_warnings[:5]))
                save()
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted; the server of the current run was stopped[/yellow]")
    if results:
        save()
        console.print(summary_table(results))
        comparison = comparison_table(results)
        if comparison is not None:
            console.print(comparison)
        console.print(targets_table(targets(results)))
        digests = {r.src_digest for r in results}
        if len(digests) > 1 or any(r.src_changed for r in results):
            console.print("[red]warning: the source tree changed between or during runs "
                          f"(src digests {sorted(digests)}); the runs measured different code"
                          "[/red]")
        counts = Counter("holds" if r.holds else "fails" for r in results if not r.error)
        console.print(f"results written to {out} ({dict(counts)})")
        if args.plot:
            plot(results, args.plot)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
