"""Mutual TLS streaming with the built-in certificate authority."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
import stat
import warnings
from configparser import ConfigParser
from pathlib import Path

import pytest

from fieldc2.cli import main
from fieldc2.crypto.ca import CertificateAuthority, fingerprint
from fieldc2.server import CommandPost
from fieldc2.sim.units import self_report
from tests.conftest import eventually, make_config

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pytak warns about optional extras it lacks
    import pytak

NOW = dt.datetime.now(dt.UTC)
TIMEOUT = 5.0


@pytest.fixture
async def tls_post(tmp_path: Path) -> contextlib.AbstractAsyncContextManager[CommandPost]:
    async with CommandPost(make_config(tmp_path, tls=True)) as post:
        yield post


def client_context(ca_file: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


async def raw_tls(post: CommandPost, context: ssl.SSLContext
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", post.tls_port, ssl=context, server_hostname="localhost"), TIMEOUT)


async def read_until(reader: asyncio.StreamReader, needle: bytes) -> bytes:
    got = b""
    while needle not in got:
        chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        assert chunk, f"connection closed before {needle!r} arrived"
        got += chunk
    return got


def test_ca_init_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["ca", "init", "--data-dir", str(data)]) == 0
    ca_dir = data / "ca"
    for name in ("ca.key", "server.key"):
        assert stat.S_IMODE((ca_dir / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    ca = CertificateAuthority.load(ca_dir)
    out = capsys.readouterr().out
    assert fingerprint(ca.cert) in out and "localhost" in out and "127.0.0.1" in out
    assert main(["ca", "show", "--data-dir", str(data)]) == 0
    assert fingerprint(ca.cert) in capsys.readouterr().out
    assert main(["ca", "init", "--data-dir", str(data)]) == 2  # never overwrites a CA
    assert "already exists" in capsys.readouterr().err
    assert main(["cert", "issue", "alpha", "--data-dir", str(data)]) == 0
    assert (ca_dir / "clients" / "alpha.p12").exists()


def test_server_certificate_follows_the_configured_names(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path, now=NOW, key_type="p256")
    first, _ = ca.server_credentials(["cp.example"], ["10.0.0.5"], now=NOW)
    before = first.read_bytes()
    ca.server_credentials(["cp.example"], ["10.0.0.5"], now=NOW)
    assert first.read_bytes() == before  # still good: kept
    ca.server_credentials(["cp2.example"], ["10.0.0.5"], now=NOW)
    assert first.read_bytes() != before  # names changed: reissued
    renewed = first.read_bytes()
    ca.server_credentials(["cp2.example"], ["10.0.0.5"], now=NOW + dt.timedelta(days=820))
    assert first.read_bytes() != renewed  # near expiry: reissued


# pytak 7.6 sets the deprecated ssl.OP_NO_TLSv1 itself; that is its warning, not ours.
@pytest.mark.filterwarnings("ignore:ssl.OP_NO_SSL:DeprecationWarning")
async def test_pytak_over_tls_and_a_tcp_client_share_the_picture(
        tls_post: CommandPost) -> None:
    post = tls_post
    post.users.add("alpha", ("Cyan",))  # certificate-only account, same group as BRAVO
    paths = post.ca.write_client("alpha", now=NOW)
    parser = ConfigParser()
    parser["pytak"] = {
        "COT_URL": f"tls://127.0.0.1:{post.tls_port}",
        "PYTAK_TLS_CLIENT_CERT": str(paths["cert"]),
        "PYTAK_TLS_CLIENT_KEY": str(paths["key"]),
        "PYTAK_TLS_CLIENT_CAFILE": str(post.ca.cert_path),
    }
    reader, writer = await asyncio.wait_for(pytak.protocol_factory(parser["pytak"]), TIMEOUT)
    tcp_reader, tcp_writer = await asyncio.open_connection("127.0.0.1", post.tcp_port)
    try:
        tcp_writer.write(self_report("TCP-1", "BRAVO", 47.1, 11.1))
        tx = pytak.TXWorker(asyncio.Queue(), parser["pytak"], writer)
        await tx.send_data(self_report("TLS-1", "ALPHA", 47.0, 11.0))
        await read_until(tcp_reader, b'uid="TLS-1"')
        got = b""
        while b'uid="TCP-1"' not in got:
            got += await asyncio.wait_for(reader.readuntil(b"</event>"), TIMEOUT)
        await eventually(lambda: any(c.identity == "alpha" for c in post.clients.values()))
    finally:
        writer.close()
        tcp_writer.close()


async def test_a_tls_peer_sees_another_tls_peer(tls_post: CommandPost) -> None:
    post = tls_post
    contexts = []
    for name in ("one", "two"):
        paths = post.ca.write_client(name, now=NOW)
        contexts.append(client_context(post.ca.cert_path, paths["cert"], paths["key"]))
    (r1, w1), (r2, w2) = [await raw_tls(post, c) for c in contexts]
    w1.write(self_report("ONE", "ONE", 47.0, 11.0))
    w2.write(self_report("TWO", "TWO", 47.0, 11.0))
    await read_until(r1, b'uid="TWO"')
    await read_until(r2, b'uid="ONE"')
    w1.close()
    w2.close()


async def refused(post: CommandPost, context: ssl.SSLContext) -> None:
    """The handshake fails, or the server closes before delivering anything."""
    try:
        reader, writer = await raw_tls(post, context)
    except (ssl.SSLError, ConnectionError):
        return
    try:
        writer.write(self_report("INTRUDER", "MALLORY", 47.0, 11.0))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
    except (ssl.SSLError, ConnectionError):
        return
    finally:
        writer.close()
    assert data == b"", f"an unauthenticated client was sent {data[:80]!r}"


async def test_refused_without_a_client_certificate(tls_post: CommandPost) -> None:
    await refused(tls_post, client_context(tls_post.ca.cert_path, None, None))
    assert not any(c.uid == "INTRUDER" for c in tls_post.clients.values())


async def test_refused_with_a_certificate_from_another_ca(tls_post: CommandPost,
                                                          tmp_path: Path) -> None:
    rogue = CertificateAuthority.create(tmp_path / "rogue", now=NOW, key_type="p256")
    paths = rogue.write_client("mallory", now=NOW)
    await refused(tls_post, client_context(tls_post.ca.cert_path, paths["cert"], paths["key"]))
    assert tls_post.stats.received == 0


async def test_refused_with_an_expired_certificate(tls_post: CommandPost) -> None:
    long_ago = NOW - dt.timedelta(days=30)
    paths = tls_post.ca.write_client("expired", now=long_ago, days=1)
    await refused(tls_post, client_context(tls_post.ca.cert_path, paths["cert"], paths["key"]))
    assert tls_post.stats.received == 0


async def test_tls_can_be_switched_off(tmp_path: Path) -> None:
    async with CommandPost(make_config(tmp_path, tls=False)) as post:
        with pytest.raises(RuntimeError, match="disabled"):
            _ = post.tls_port
        assert not (tmp_path / "ca").exists()
