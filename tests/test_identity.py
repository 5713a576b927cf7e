"""Identity decides groups: certificate CN or <auth> login, never __group."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fieldc2.server import CommandPost
from fieldc2.sim.units import self_report
from fieldc2.users import UserStore, check_password, hash_password
from tests.conftest import eventually, make_config

NOW = dt.datetime.now(dt.UTC)
TIMEOUT = 5.0
PASSWORD = "correct horse battery"


def auth(username: str, password: str) -> bytes:
    return (f'<?xml version="1.0"?><auth><cot username="{username}" password="{password}"'
            f' uid="{username}-uid"/></auth>').encode()


class Reader:
    """Collects what one connection receives."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.data = b""
        self.closed = asyncio.Event()
        self.task = asyncio.create_task(self._pump(reader))

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        try:
            while chunk := await reader.read(65536):
                self.data += chunk
        except (ConnectionError, ssl.SSLError):
            pass
        self.closed.set()


_WRITERS: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def close_writers() -> AsyncIterator[None]:
    yield
    while _WRITERS:
        writer = _WRITERS.pop()
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


@pytest.fixture
async def post(tmp_path: Path) -> AsyncIterator[CommandPost]:
    async with CommandPost(make_config(tmp_path, tls=True)) as running:
        running.users.add("red1", ("Red",))
        running.users.add("cyan1", ("Cyan",))
        running.users.add("gone", ("Cyan",))
        running.users.set_disabled("gone", True)
        running.users.add("tcpuser", ("Cyan",), password=PASSWORD)
        yield running


async def tls_client(post: CommandPost, name: str) -> tuple[Reader, asyncio.StreamWriter]:
    paths = post.ca.write_client(name, now=NOW)
    context = ssl.create_default_context(cafile=str(post.ca.cert_path))
    context.load_cert_chain(str(paths["cert"]), str(paths["key"]))
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", post.tls_port, ssl=context, server_hostname="localhost"), TIMEOUT)
    _WRITERS.append(writer)
    return Reader(reader), writer


async def tcp_client(post: CommandPost) -> tuple[Reader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", post.tcp_port)
    _WRITERS.append(writer)
    return Reader(reader), writer


def test_passwords_are_scrypt_and_checked_in_constant_form() -> None:
    encoded = hash_password("hunter2hunter2")
    assert encoded.startswith("scrypt$32768$8$1$")
    assert check_password("hunter2hunter2", encoded)
    assert not check_password("hunter2hunter3", encoded)
    assert not check_password("x", "garbage")


def test_user_store_is_shared_through_its_file(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    one, two = UserStore(path), UserStore(path)
    one.add("alice", ("Cyan",), "admin", PASSWORD)
    assert two.get("alice") is None
    assert two.reload() and two.get("alice") is not None
    assert two.authenticate("alice", PASSWORD) is not None
    assert two.authenticate("alice", "wrong password") is None
    assert two.authenticate("nobody", PASSWORD) is None
    one.set_disabled("alice", True)
    two.reload()
    assert two.authenticate("alice", PASSWORD) is None
    assert oct(path.stat().st_mode & 0o777) == "0o600"


async def test_certificate_identity_fixes_groups_whatever_group_is_claimed(
        post: CommandPost) -> None:
    red, red_w = await tls_client(post, "red1")
    cyan, cyan_w = await tls_client(post, "cyan1")
    # red1 claims to be Cyan in its self-report: it must stay in Red.
    red_w.write(self_report("RED-1", "RED ONE", 47.0, 11.0, group="Cyan"))
    cyan_w.write(self_report("CYAN-1", "CYAN ONE", 47.0, 11.0, group="Cyan"))
    await eventually(lambda: post.stats.received >= 2)
    await asyncio.sleep(0.3)
    assert b"CYAN-1" not in red.data and b"RED-1" not in cyan.data
    groups = {c.identity: c.groups for c in post.clients.values()}
    assert groups == {"red1": frozenset({"Red"}), "cyan1": frozenset({"Cyan"})}
    red_w.close()
    cyan_w.close()


async def test_a_disabled_account_is_refused_despite_a_valid_certificate(
        post: CommandPost) -> None:
    gone, writer = await tls_client(post, "gone")
    writer.write(self_report("GONE", "GONE", 47.0, 11.0))
    await asyncio.wait_for(gone.closed.wait(), TIMEOUT)
    assert b"GONE" not in gone.data and post.stats.received == 0


async def test_auth_login_on_tcp_gives_the_account_groups(tmp_path: Path) -> None:
    config = make_config(tmp_path, tcp_require_auth=True)
    async with CommandPost(config) as post:
        post.users.add("tcpuser", ("Red",), password=PASSWORD)
        post.users.add("other", ("Red",), password=PASSWORD)
        a, a_w = await tcp_client(post)
        b, b_w = await tcp_client(post)
        a_w.write(auth("tcpuser", PASSWORD) + self_report("TCP-A", "A", 47.0, 11.0))
        b_w.write(auth("other", PASSWORD) + self_report("TCP-B", "B", 47.0, 11.0, group="Blue"))
        await eventually(lambda: b"TCP-B" in a.data and b"TCP-A" in b.data)
        assert {c.identity: c.groups for c in post.clients.values()} == {
            "tcpuser": frozenset({"Red"}), "other": frozenset({"Red"})}
        a_w.close()
        b_w.close()


async def test_require_auth_closes_clients_that_do_not_log_in(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fieldc2")
    async with CommandPost(make_config(tmp_path, tcp_require_auth=True)) as post:
        post.users.add("tcpuser", ("Red",), password=PASSWORD)
        silent, writer = await tcp_client(post)
        writer.write(self_report("NOAUTH", "N", 47.0, 11.0))
        await asyncio.wait_for(silent.closed.wait(), TIMEOUT)
        wrong, writer = await tcp_client(post)
        writer.write(auth("tcpuser", "not the password") + self_report("W", "W", 47.0, 11.0))
        await asyncio.wait_for(wrong.closed.wait(), TIMEOUT)
        assert post.stats.received == 0
        assert "login required" in caplog.text and "login failed for 'tcpuser'" in caplog.text
        assert PASSWORD not in caplog.text and "not the password" not in caplog.text


async def test_repeated_failed_logins_are_refused_even_with_the_right_password(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fieldc2")
    async with CommandPost(make_config(tmp_path, tcp_require_auth=True)) as post:
        post.users.add("tcpuser", ("Red",), password=PASSWORD)
        # The free failures, then one more: from then on attempts are refused.
        for _ in range(post.login_limiter.free_failures + 1):
            reader, writer = await tcp_client(post)
            writer.write(auth("tcpuser", "guess guess"))
            await asyncio.wait_for(reader.closed.wait(), TIMEOUT)
        reader, writer = await tcp_client(post)
        writer.write(auth("tcpuser", PASSWORD) + self_report("LATE", "L", 47.0, 11.0))
        await asyncio.wait_for(reader.closed.wait(), TIMEOUT)
        assert "too many failed logins" in caplog.text
        assert post.stats.received == 0


async def test_logins_are_in_the_audit_log_and_it_verifies(tmp_path: Path) -> None:
    from fieldc2.audit import verify

    async with CommandPost(make_config(tmp_path, tcp_require_auth=True)) as post:
        post.users.add("tcpuser", ("Red",), password=PASSWORD)
        _good, writer = await tcp_client(post)
        writer.write(auth("tcpuser", PASSWORD) + self_report("OK", "OK", 47.0, 11.0))
        await eventually(lambda: post.stats.received == 1)
        bad, writer = await tcp_client(post)
        writer.write(auth("tcpuser", "wrong wrong"))
        await asyncio.wait_for(bad.closed.wait(), TIMEOUT)
    log_text = (tmp_path / "audit.log").read_text()
    assert '"kind":"login"' in log_text and '"kind":"login_failed"' in log_text
    assert PASSWORD not in log_text
    result = verify(tmp_path / "audit.log")
    assert result.ok and result.records == 2


async def test_a_joiner_gets_only_its_own_groups_picture(post: CommandPost) -> None:
    _red, red_w = await tls_client(post, "red1")
    red_w.write(self_report("RED-1", "RED ONE", 47.0, 11.0, group="Cyan"))
    _cyan, cyan_w = await tls_client(post, "cyan1")
    cyan_w.write(self_report("CYAN-1", "CYAN ONE", 47.0, 11.0))
    await eventually(lambda: post.stats.received >= 2)
    # Late joiners, silent: the picture arrives after picture_delay.
    late_cyan, _ = await tls_client(post, "cyan1")
    late_red, _ = await tls_client(post, "red1")
    await eventually(lambda: b"CYAN-1" in late_cyan.data and b"RED-1" in late_red.data)
    await asyncio.sleep(0.3)
    assert b"RED-1" not in late_cyan.data
    assert b"CYAN-1" not in late_red.data
