#!/usr/bin/env python3
"""TLS handshake benchmark: full mutual-TLS handshakes per second against fieldc2.

For each key type (``--key-types``, default RSA-2048 and P-256) a fresh
``fieldc2 serve`` is started as a separate process, on a data dir prepared the
way ``bench/fanout.py --tls`` prepares it (``fieldc2 ca init --key-type T``,
``fieldc2 cert issue bench``, ``fieldc2 user add bench``).  Then, for each
concurrency C (``--concurrency``, default 1 8 32), C workers open K
(``--count``) connections in all to the TLS port, one after another each:

1. connect and complete a full handshake (no session resumption; the client
   verifies the server against the CA and presents the ``bench`` certificate);
2. wait for the server's first TLS 1.3 session ticket, which the server sends
   only once it has verified the client's certificate and Finished: proof that
   the server side of the handshake completed too (``--confirm-timeout``);
3. close, and wait for the connection to be closed.

Reported per configuration: handshakes/s (wall time of the K), the server's CPU
per handshake (utime + stime from ``/proc/PID/stat``, all threads), the
generator's own CPU per handshake, the machine's other load, and the client's
handshake latency.  The same K connect/close cycles over plain TCP on the TCP
port (``--no-tcp-baseline`` skips them) give the part of the server's cost per
connection that is not TLS.

The generator shares the machine's cores with the server, and a mutual-TLS
handshake costs the client about as much as the server (each side signs once
with its private key), so handshakes/s is a property of the whole machine;
the server's CPU per handshake is what scales.

Every wait is bounded, and the server is always stopped in a ``finally``.
Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fanout import (
    HOST,
    TLS_SERVER_NAME,
    ServerProcess,
    _loop_factory,
    client_context,
    machine_busy,
    machine_info,
    make_tls_credentials,
    own_cpu,
    percentile,
    server_command,
    source_state,
    wait_for_quiet,
)

RESULTS = Path(__file__).resolve().parent / "results"

console = Console()
if not console.is_terminal:
    console = Console(width=max(console.width, 150))


@dataclass
class ConfigResult:
    key_type: str
    transport: str
    """"tls" (full mutual-TLS handshakes) or "tcp" (plain connect/close, the baseline)."""
    concurrency: int
    count: int
    completed: int = 0
    confirmed: int = 0
    """TLS: connections on which the server's session ticket arrived (server side done)."""
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    per_s: float = 0.0
    server_cpu_user_s: float = 0.0
    server_cpu_sys_s: float = 0.0
    server_cpu_s: float = 0.0
    server_cpu_loop_thread_s: float = 0.0
    server_cpu_pct: float = 0.0
    server_cpu_ms_per_conn: float | None = None
    server_cpu_ms_per_conn_idle_corrected: float | None = None
    generator_cpu_s: float = 0.0
    generator_cpu_ms_per_conn: float | None = None
    machine_busy_pct: float = 0.0
    other_cpu_pct: float = 0.0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    confirm_p50_ms: float | None = None
    confirm_p99_ms: float | None = None
    tls_version: str | None = None
    tls_cipher: str | None = None
    timed_out: bool = False


@dataclass
class ServerResult:
    key_type: str
    configs: list[ConfigResult] = field(default_factory=list)
    idle_server_cpu_pct: float | None = None
    """The server's own CPU with no client, % of one core (ticker, housekeeping)."""
    other_load_before_pct: float | None = None
    rss_idle_kb: int = 0
    rss_end_kb: int = 0
    server_exit: int | None = None
    server_warning_count: int = 0
    server_warnings: list[str] = field(default_factory=list)
    git_head: str = ""
    src_digest: str = ""
    src_changed: bool = False
    error: str | None = None


class _Conn(asyncio.Protocol):
    """Knows when its connection is closed; ignores anything received."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _ticket(transport: asyncio.BaseTransport) -> bool:
    obj = transport.get_extra_info("ssl_object")
    session = obj.session if obj is not None else None
    return bool(session is not None and session.has_ticket)


@dataclass
class _Tally:
    left: int
    completed: int = 0
    confirmed: int = 0
    latencies: list[float] = field(default_factory=list)
    confirms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    version: str | None = None
    cipher: str | None = None
    confirm: bool = True
    """Wait for session tickets; switched off when the first few never come."""


async def _one(port: int, context: ssl.SSLContext | None, args: argparse.Namespace,
               tally: _Tally) -> None:
    loop = asyncio.get_running_loop()
    tls: dict[str, Any] = {} if context is None else {
        "ssl": context, "server_hostname": TLS_SERVER_NAME,
        "ssl_handshake_timeout": args.handshake_timeout}
    t0 = time.perf_counter()
    try:
        transport, conn = await asyncio.wait_for(
            loop.create_connection(_Conn, HOST, port, **tls), args.handshake_timeout + 1)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        tally.errors[type(exc).__name__] += 1
        return
    t1 = time.perf_counter()
    tally.completed += 1
    tally.latencies.append(t1 - t0)
    try:
        if context is not None:
            if tally.version is None:
                obj = transport.get_extra_info("ssl_object")
                if obj is not None:
                    tally.version = obj.version()
                    cipher = obj.cipher()
                    tally.cipher = cipher[0] if cipher else None
            if tally.confirm:
                deadline = t1 + args.confirm_timeout
                for spin in range(1_000_000):  # bounded by the deadline long before this
                    if _ticket(transport) or conn.closed.done():
                        break
                    if time.perf_counter() >= deadline:
                        break
                    await asyncio.sleep(0 if spin < 3 else 0.0005)
                if _ticket(transport):
                    tally.confirmed += 1
                    tally.confirms.append(time.perf_counter() - t0)
                elif tally.completed >= 5 and tally.confirmed == 0:
                    tally.confirm = False  # this server sends no tickets: stop waiting
    finally:
        transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(conn.closed), args.close_timeout)
        except TimeoutError:
            tally.errors["close timeout"] += 1
            transport.abort()


async def _worker(port: int, context: ssl.SSLContext | None, args: argparse.Namespace,
                  tally: _Tally) -> None:
    while tally.left > 0:
        tally.left -= 1
        await _one(port, context, args, tally)


async def _batch(port: int, context: ssl.SSLContext | None, args: argparse.Namespace,
                 count: int, concurrency: int) -> tuple[_Tally, bool]:
    tally = _Tally(left=count)
    workers = [asyncio.create_task(_worker(port, context, args, tally))
               for _ in range(min(concurrency, count))]
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.gather(*workers), args.config_timeout)
    except TimeoutError:
        timed_out = True
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return tally, timed_out


async def measure(server: ServerProcess, context: ssl.SSLContext, args: argparse.Namespace,
                  key_type: str, transport: str, concurrency: int) -> ConfigResult:
    port = server.tls_port if transport == "tls" else server.tcp_port
    ctx = context if transport == "tls" else None
    r = ConfigResult(key_type=key_type, transport=transport, concurrency=concurrency,
                     count=args.count)
    if args.warmup:
        await _batch(port, ctx, args, args.warmup, concurrency)
    await asyncio.sleep(args.settle)
    cpu0, threads0 = server.cpu(), server.thread_cpu()
    gen0, busy0 = own_cpu(), machine_busy()
    t0 = time.perf_counter()
    tally, r.timed_out = await _batch(port, ctx, args, args.count, concurrency)
    r.wall_s = time.perf_counter() - t0
    # the server closes the last connections a moment after the clients see them closed
    await asyncio.sleep(0.05)
    cpu1, threads1 = server.cpu(), server.thread_cpu()
    gen1, busy1 = own_cpu(), machine_busy()
    r.completed, r.confirmed = tally.completed, tally.confirmed
    r.errors = dict(tally.errors)
    r.tls_version, r.tls_cipher = tally.version, tally.cipher
    r.per_s = r.completed / r.wall_s if r.wall_s else 0.0
    r.server_cpu_user_s = cpu1[0] - cpu0[0]
    r.server_cpu_sys_s = cpu1[1] - cpu0[1]
    r.server_cpu_s = r.server_cpu_user_s + r.server_cpu_sys_s
    r.server_cpu_loop_thread_s = threads1.get(server.pid, 0.0) - threads0.get(server.pid, 0.0)
    span = r.wall_s + 0.05
    r.server_cpu_pct = 100 * r.server_cpu_s / span
    r.generator_cpu_s = gen1 - gen0
    if r.completed:
        r.server_cpu_ms_per_conn = 1000 * r.server_cpu_s / r.completed
        r.generator_cpu_ms_per_conn = 1000 * r.generator_cpu_s / r.completed
    busy, total = busy1[0] - busy0[0], busy1[1] - busy0[1]
    r.machine_busy_pct = 100 * (os.cpu_count() or 1) * busy / total if total else 0.0
    r.other_cpu_pct = max(0.0, r.machine_busy_pct - r.server_cpu_pct
                          - 100 * r.generator_cpu_s / span)
    lat = sorted(tally.latencies)
    if lat:
        r.latency_p50_ms = 1000 * percentile(lat, 50)
        r.latency_p99_ms = 1000 * percentile(lat, 99)
        r.latency_max_ms = 1000 * lat[-1]
    conf = sorted(tally.confirms)
    if conf:
        r.confirm_p50_ms = 1000 * percentile(conf, 50)
        r.confirm_p99_ms = 1000 * percentile(conf, 99)
    return r


async def idle_cpu(server: ServerProcess, seconds: float) -> float:
    """The server's CPU with no client connected, % of one core."""
    cpu0 = sum(server.cpu())
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    return 100 * (sum(server.cpu()) - cpu0) / (time.perf_counter() - t0)


async def run_server(server: ServerProcess, context: ssl.SSLContext, args: argparse.Namespace,
                     result: ServerResult) -> None:
    await asyncio.sleep(1.0)
    result.rss_idle_kb = server.rss_kb()
    result.idle_server_cpu_pct = await idle_cpu(server, args.idle_seconds)
    for concurrency in args.concurrency:
        transports = (["tcp"] if args.tcp_baseline else []) + ["tls"]
        for transport in transports:
            console.print(f"[dim]{result.key_type}: {transport.upper()} C={concurrency}, "
                          f"{args.count} connections ...[/dim]")
            r = await measure(server, context, args, result.key_type, transport, concurrency)
            if result.idle_server_cpu_pct is not None and r.completed:
                idle_s = result.idle_server_cpu_pct / 100 * (r.wall_s + 0.05)
                r.server_cpu_ms_per_conn_idle_corrected = \
                    1000 * max(0.0, r.server_cpu_s - idle_s) / r.completed
            result.configs.append(r)
    result.rss_end_kb = server.rss_kb()


def run_key_type(args: argparse.Namespace, key_type: str) -> ServerResult:
    """One fresh server with a ``key_type`` CA; the server is always stopped."""
    tmp = Path(tempfile.mkdtemp(prefix=f"fieldc2-handshakes-{key_type}-"))
    server = ServerProcess(tmp / "data", tmp / "server.log", [])
    result = ServerResult(key_type=key_type)
    head, digest = source_state()
    try:
        context = client_context(make_tls_credentials(server.data_dir, key_type, None))
        server.api_context = context
        load = wait_for_quiet(args.quiet_below, args.wait_quiet, console.print)
        result.other_load_before_pct = load
        if load >= args.quiet_below:
            console.print(f"[yellow]{key_type}: the machine is busy ({load:.0f}% of one core "
                          "used by others) - results will be noisy[/yellow]")
        server.start(args.startup_timeout)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(run_server(server, context, args, result))
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.git_head, result.src_digest = head, digest
        result.src_changed = source_state()[1] != digest
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


def _f(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, fmt)


def results_table(servers: list[ServerResult]) -> Table:
    table = Table(title="TLS handshakes (K connections per row, each closed after its "
                        "handshake)")
    for name in ("key", "transport", "C", "done", "confirmed", "errors", "conn/s",
                 "server CPU ms/conn", "idle-corr.", "server CPU %", "client CPU ms/conn",
                 "other CPU %", "p50 ms", "p99 ms"):
        table.add_column(name, justify="right")
    for s in servers:
        for r in s.configs:
            errors = sum(r.errors.values())
            table.add_row(
                r.key_type, r.transport.upper() if r.transport == "tcp"
                else (r.tls_version or "TLS"),
                str(r.concurrency), f"{r.completed}/{r.count}",
                str(r.confirmed) if r.transport == "tls" else "-",
                str(errors) + (" timeout" if r.timed_out else ""), f"{r.per_s:,.0f}",
                _f(r.server_cpu_ms_per_conn, ".3f"),
                _f(r.server_cpu_ms_per_conn_idle_corrected, ".3f"),
                f"{r.server_cpu_pct:.0f}", _f(r.generator_cpu_ms_per_conn, ".3f"),
                f"{r.other_cpu_pct:.0f}", _f(r.latency_p50_ms, ".1f"),
                _f(r.latency_p99_ms, ".1f"))
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="TLS handshake benchmark for fieldc2: K full mutual-TLS handshakes per "
                    "configuration (key type x concurrency) against a fresh server per key "
                    "type; handshakes/s and server CPU per handshake. Loopback only.",
        epilog="Results go to bench/results/tls-handshakes-<timestamp>.json. "
               "Method and numbers: docs/benchmarks.md, section TLS.")
    parser.add_argument("--key-types", nargs="+", choices=["rsa2048", "p256"],
                        default=["rsa2048", "p256"],
                        help="CA key types, one fresh server each (default rsa2048 p256)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], metavar="C",
                        help="connections in flight at once (default 1 8 32)")
    parser.add_argument("--count", type=int, default=500, metavar="K",
                        help="measured connections per configuration (default 500)")
    parser.add_argument("--warmup", type=int, default=20,
                        help="unmeasured connections before each configuration (default 20)")
    parser.add_argument("--settle", type=float, default=0.5,
                        help="seconds between the warm-up and the measurement (default 0.5)")
    parser.add_argument("--no-tcp-baseline", dest="tcp_baseline", action="store_false",
                        help="skip the plain TCP connect/close rows")
    parser.add_argument("--handshake-timeout", type=float, default=10.0,
                        help="seconds allowed for one connection and handshake (default 10)")
    parser.add_argument("--confirm-timeout", type=float, default=2.0,
                        help="seconds to wait for the server's session ticket (default 2)")
    parser.add_argument("--close-timeout", type=float, default=5.0,
                        help="seconds to wait for a closed connection to go (default 5)")
    parser.add_argument("--config-timeout", type=float, default=300.0,
                        help="seconds allowed for the K connections of one configuration "
                             "(default 300)")
    parser.add_argument("--startup-timeout", type=float, default=30.0,
                        help="seconds allowed for the server to start (default 30)")
    parser.add_argument("--idle-seconds", type=float, default=3.0,
                        help="seconds the idle server's own CPU is measured (default 3)")
    parser.add_argument("--quiet-below", type=float, default=25.0, metavar="PCT",
                        help="before each server, wait until other processes use less than "
                             "this %% of one core (default 25)")
    parser.add_argument("--wait-quiet", type=float, default=60.0, metavar="S",
                        help="longest wait for a quiet machine (default 60)")
    parser.add_argument("--output", type=Path, metavar="FILE.json",
                        help="results file (default bench/results/tls-handshakes-<stamp>.json)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep each server's data dir and log")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.count < 1 or any(c < 1 for c in args.concurrency) or args.warmup < 0:
        raise SystemExit("--count and --concurrency must be positive, --warmup not negative")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4 * max(args.concurrency) + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.output or RESULTS / f"tls-handshakes-{stamp}.json"
    meta: dict[str, Any] = {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_info(),
        "openssl": ssl.OPENSSL_VERSION,
        "server_command": " ".join([*server_command(), "serve", "--tcp-port", "P",
                                    "--tls-port", "S", "--http-port", "Q",
                                    "--enrollment-port", "E", "--data-dir", "TMP",
                                    "--log-level", "warning"]),
    }
    m = meta["machine"]
    console.print(f"[bold]fieldc2 TLS handshake benchmark[/bold]: {m['nproc']} CPUs "
                  f"({m['cpu_model']}), Linux {m['kernel']}, Python {m['python']}, "
                  f"{ssl.OPENSSL_VERSION}")
    console.print(f"key types {args.key_types}, concurrency {args.concurrency}, "
                  f"K={args.count} per configuration")
    servers: list[ServerResult] = []

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": meta, "servers": [_plain(s) for s in servers]}
        out.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")

    interrupted = False
    try:
        for key_type in args.key_types:
            result = run_key_type(args, key_type)
            servers.append(result)
            if result.error:
                console.print(f"[red]{key_type}: {result.error}[/red]")
            if result.server_warnings:
                console.print("[yellow]server log:[/yellow]\n  "
                              + "\n  ".join(result.server_warnings[:5]))
            save()
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted; the current server was stopped[/yellow]")
    if servers:
        save()
        console.print(results_table(servers))
        for s in servers:
            console.print(f"{s.key_type}: idle server CPU {_f(s.idle_server_cpu_pct, '.2f')}% "
                          f"of a core, RSS idle/end {s.rss_idle_kb / 1024:.1f}/"
                          f"{s.rss_end_kb / 1024:.1f} MB, other load before "
                          f"{_f(s.other_load_before_pct, '.0f')}%, warnings in log "
                          f"{s.server_warning_count}, source {s.git_head}/{s.src_digest}"
                          + (" [red]CHANGED DURING RUN[/red]" if s.src_changed else ""))
        console.print(f"results written to {out}")
    return 130 if interrupted else 0


def _plain(s: ServerResult) -> dict[str, Any]:
    out = dict(vars(s))
    out["configs"] = [vars(c) for c in s.configs]
    return out


if __name__ == "__main__":
    sys.exit(main())
