"""The installed `fieldc2` command, run as a user would."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from fieldc2.sim.units import self_report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} never opened")


def test_serve_runs_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    tcp, http = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fieldc2.cli", "serve", "--tcp-port", str(tcp),
         "--http-port", str(http), "--tls-port", "0", "--enrollment-port", "0",
         "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(tcp, proc)
        wait_for_port(http, proc)
        with socket.create_connection(("127.0.0.1", tcp)) as a, \
                socket.create_connection(("127.0.0.1", tcp)) as b:
            b.sendall(self_report("CLI-B", "BRAVO", 47.0, 11.0))  # same group (Cyan)
            a.sendall(self_report("CLI-A", "ALPHA", 47.0, 11.0))
            b.settimeout(5)
            got = b""
            while b'uid="CLI-A"' not in got:
                got += b.recv(65536)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "shutting down" in err, err
    assert (tmp_path / "data" / "fieldc2.sqlite3").exists()


def test_demo_runs_for_a_duration(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fieldc2.cli", "demo", "--no-plan", "--units", "3",
         "--duration", "6",
         "--no-live", "--tcp-port", "0", "--http-port", "0", "--no-tls",
         "--data-dir", str(tmp_path),
         "--log-level", "warning"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    fields = dict(part.split("=") for part in last.split())
    assert fields["clients"] == "3"
    assert int(fields["received"]) >= 9 and int(fields["delivered"]) > 0


def test_help_describes_every_command() -> None:
    result = subprocess.run([sys.executable, "-m", "fieldc2.cli", "--help"],
                            capture_output=True, text=True, timeout=30)
    for command in ("serve", "init", "demo"):
        assert command in result.stdout


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "fieldc2.cli", "serve", "--tcp-port", str(port),
             "--http-port", "0", "--no-tls", "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--tcp-port" in result.stderr
