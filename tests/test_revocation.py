"""Revocation: the registry, the list, the CRL, the watcher, and a live drop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette

from fieldc2.audit import LOG_NAME, recent
from fieldc2.config import load_config
from fieldc2.crypto.ca import CertificateAuthority, IssuedCertificate, serial_hex
from fieldc2.crypto.revocation import (
    CRL_REFRESH,
    CRL_VALIDITY,
    REVOKED,
    RevocationList,
    RevocationWatcher,
    add_cert_actions,
    crl_routes,
    parse_serial,
    peer_serial,
    run_cert,
)
from fieldc2.errors import ConfigError
from fieldc2.server import CommandPost
from fieldc2.sim.units import self_report
from tests.conftest import eventually, make_config
from tests.test_tls import client_context, raw_tls, read_until, refused

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=3)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "ca", now=NOW, key_type="p256")


def records(ca: CertificateAuthority) -> list[IssuedCertificate]:
    loaded = ca.issued()
    assert loaded.problems == []
    return loaded.records


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


# --- the registry of issued certificates -------------------------------------------


def test_the_registry_records_every_certificate_signed(ca: CertificateAuthority) -> None:
    alpha = ca.write_client("alpha", now=NOW, days=30)
    ca.server_credentials(["cp.example"], [], now=NOW)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([]))
           .sign(ec.generate_private_key(ec.SECP256R1()), ca.cert.signature_hash_algorithm))
    enrolled = ca.sign_csr(csr, "bravo", now=NOW)
    got = records(ca)
    assert [(r.common_name, r.kind) for r in got] == [
        ("alpha", "client"), ("cp.example", "server"), ("bravo", "client")]
    assert got[0].number == serial_of(alpha["cert"])
    assert got[0].not_after == NOW + dt.timedelta(days=30)
    assert got[0].issued_at == NOW
    assert got[2].serial == serial_hex(enrolled.serial_number)
    assert records(CertificateAuthority.load(ca.directory)) == got  # persisted


def test_an_authority_older_than_the_registry_gets_one_from_its_files(
        ca: CertificateAuthority) -> None:
    paths = ca.write_client("alpha", now=NOW)
    ca.server_credentials(["cp.example"], [], now=NOW)
    ca.registry_path.unlink()
    got = records(CertificateAuthority.load(ca.directory))
    assert (got[0].common_name, got[0].kind, got[0].number) == (
        "alpha", "client", serial_of(paths["cert"]))
    assert [r.kind for r in got] == ["client", "server"]
    with ca.registry_path.open("ab") as handle:  # two processes started it at once
        handle.write(ca.registry_path.read_bytes())
    assert records(ca) == got


# --- revoking ------------------------------------------------------------------------


def test_revoking_a_name_revokes_all_its_certificates(ca: CertificateAuthority) -> None:
    first = serial_of(ca.write_client("alpha", now=NOW)["cert"])
    second = serial_of(ca.write_client("alpha", now=NOW)["cert"])
    bravo = serial_of(ca.write_client("bravo", now=NOW)["cert"])
    revocations = RevocationList.load(ca.directory)
    new = revocations.revoke("alpha", records(ca), now=LATER, reason="key-compromise")
    assert {e.number for e in new} == {first, second}
    assert all(e.common_name == "alpha" and e.reason == "key-compromise" for e in new)
    assert revocations.is_revoked(first) and revocations.is_revoked(second)
    assert not revocations.is_revoked(bravo)
    assert revocations.revoke("alpha", records(ca), now=LATER) == []  # twice is harmless
    again = RevocationList.load(ca.directory)
    assert again.problems == [] and set(again.entries) == {first, second}
    assert again.entries[first].revoked_at == LATER


@pytest.mark.parametrize("spell", [
    lambda n: f"{n:X}", lambda n: f"{n:x}", lambda n: f"0x{n:x}",
    lambda n: ":".join(f"{n:040X}"[i:i + 2] for i in range(0, 40, 2)), lambda n: n])
def test_revoking_by_serial_revokes_just_that_certificate(ca: CertificateAuthority,
                                                           spell: object) -> None:
    first = serial_of(ca.write_client("alpha", now=NOW)["cert"])
    second = serial_of(ca.write_client("alpha", now=NOW)["cert"])
    revocations = RevocationList.load(ca.directory)
    target = spell(first)  # type: ignore[operator]
    new = revocations.revoke(target, records(ca), now=LATER)
    assert [e.number for e in new] == [first]
    assert not revocations.is_revoked(second)


def test_an_unknown_name_or_serial_is_a_clear_error(ca: CertificateAuthority) -> None:
    ca.write_client("alpha", now=NOW)
    ca.server_credentials(["cp.example"], [], now=NOW)
    revocations = RevocationList.load(ca.directory)
    for target in ("charlie", "DEADBEEF", "cp.example", 12345):
        with pytest.raises(ConfigError, match="`fieldc2 cert list` shows them"):
            revocations.revoke(target, records(ca), now=LATER)
    assert not (ca.directory / REVOKED).exists()


def test_a_garbage_line_is_reported_not_fatal(ca: CertificateAuthority) -> None:
    alpha = serial_of(ca.write_client("alpha", now=NOW)["cert"])
    bravo = serial_of(ca.write_client("bravo", now=NOW)["cert"])
    RevocationList.load(ca.directory).revoke("alpha", records(ca), now=LATER)
    path = ca.directory / REVOKED
    with path.open("ab") as handle:
        handle.write(b"\x00garbage {not json\n")
        handle.write(b'{"serial": "not hex", "common_name": "x", "revoked_at": "2025"}\n')
    RevocationList.load(ca.directory).revoke("bravo", records(ca), now=LATER)
    revocations = RevocationList.load(ca.directory)
    assert set(revocations.entries) == {alpha, bravo}
    assert [p.split(": ", 1)[0] for p in revocations.problems] == [f"{path}:2", f"{path}:3"]
    assert all("line ignored" in p for p in revocations.problems)
    (ca.directory / "issued.jsonl").write_bytes(b"]]]\n")
    assert ca.issued().problems and ca.issued().records == []


# --- the CRL ---------------------------------------------------------------------------


def test_the_crl_lists_the_revoked_and_is_signed_by_the_ca(ca: CertificateAuthority,
                                                           tmp_path: Path) -> None:
    alpha = serial_of(ca.write_client("alpha", now=NOW)["cert"])
    bravo = serial_of(ca.write_client("bravo", now=NOW)["cert"])
    serial_of(ca.write_client("charlie", now=NOW)["cert"])
    revocations = RevocationList.load(ca.directory)
    revocations.revoke("alpha", records(ca), now=NOW, reason="key-compromise")
    revocations.revoke(f"{bravo:x}", records(ca), now=NOW)
    path = revocations.write_crl(ca, LATER)
    assert path == ca.directory / "crl.pem"
    crl = x509.load_pem_x509_crl(path.read_bytes())
    assert {r.serial_number for r in crl} == {alpha, bravo}
    assert crl.issuer == ca.cert.subject
    assert crl.last_update_utc == LATER
    assert crl.next_update_utc == LATER + CRL_VALIDITY
    public = ca.cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and crl.signature_hash_algorithm
    public.verify(crl.signature, crl.tbs_certlist_bytes, ec.ECDSA(crl.signature_hash_algorithm))
    assert crl.is_signature_valid(public)
    rogue = CertificateAuthority.create(tmp_path / "rogue", now=NOW, key_type="p256")
    assert not crl.is_signature_valid(rogue.cert.public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(alpha)
    assert entry is not None and entry.revocation_date_utc == NOW
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise
    plain = crl.get_revoked_certificate_by_serial_number(bravo)
    assert plain is not None and len(plain.extensions) == 0  # "unspecified" is left out
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > 0


async def test_the_crl_endpoints_serve_a_fresh_crl_without_signing_per_request(
        ca: CertificateAuthority) -> None:
    alpha = serial_of(ca.write_client("alpha", now=NOW)["cert"])
    clock = [NOW.timestamp()]
    app = Starlette(routes=crl_routes(ca, lambda: clock[0]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://cp") as http:
        first = await http.get("/Marti/api/crl")
        assert first.status_code == 200
        assert first.headers["content-type"] == "application/pkix-crl"
        assert list(x509.load_der_x509_crl(first.content)) == []
        assert (await http.get("/Marti/api/crl")).content == first.content  # cached
        RevocationList.load(ca.directory).revoke("alpha", records(ca), now=NOW)
        pem = await http.get("/crl.pem")
        assert pem.headers["content-type"] == "application/x-pem-file"
        crl = x509.load_pem_x509_crl(pem.content)
        assert [r.serial_number for r in crl] == [alpha]
        assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
        clock[0] += CRL_REFRESH.total_seconds()
        refreshed = x509.load_der_x509_crl((await http.get("/Marti/api/crl")).content)
        assert refreshed.last_update_utc == NOW + CRL_REFRESH
        assert [r.serial_number for r in refreshed] == [alpha]


# --- the watcher (the server's view) ----------------------------------------------------

REVOKE_SCRIPT = """
import datetime as dt, sys
from pathlib import Path
from fieldc2.crypto.ca import CertificateAuthority
from fieldc2.crypto.revocation import RevocationList
ca = CertificateAuthority.load(Path(sys.argv[1]))
RevocationList.load(ca.directory).revoke(sys.argv[2], ca.issued().records,
                                         now=dt.datetime.now(dt.UTC))
"""


def test_the_watcher_sees_another_process_revoke_once(ca: CertificateAuthority) -> None:
    alpha = serial_of(ca.write_client("alpha", now=NOW)["cert"])
    bravo = serial_of(ca.write_client("bravo", now=NOW)["cert"])
    watcher = RevocationWatcher(ca.directory)
    assert watcher.poll(0.0) == set()  # no list yet
    subprocess.run([sys.executable, "-c", REVOKE_SCRIPT, str(ca.directory), "alpha"],
                   check=True, timeout=60)
    assert watcher.poll(0.25) == {alpha}
    assert watcher.is_revoked(alpha) and watcher.revoked_peer({"serialNumber": f"{alpha:X}"})
    assert watcher.get_timer() == 0.5
    reads = watcher.reads
    assert watcher.poll(0.5) == set()  # reported once
    assert watcher.reads == reads  # unchanged: only a stat, no read
    RevocationList.load(ca.directory).revoke("bravo", records(ca), now=LATER)
    assert watcher.poll(0.75) == {bravo}
    assert watcher.reads == reads + 1
    assert not watcher.problems


def test_the_watcher_waits_for_a_partial_line(ca: CertificateAuthority) -> None:
    alpha = serial_of(ca.write_client("alpha", now=NOW)["cert"])
    other = RevocationList.load(ca.directory)
    other.revoke("alpha", records(ca), now=LATER)
    path = ca.directory / REVOKED
    line = path.read_bytes()
    path.write_bytes(line[:20])  # a write caught halfway
    watcher = RevocationWatcher(ca.directory)
    assert watcher.poll(0.0) == set() and not watcher.problems
    with path.open("ab") as handle:
        handle.write(line[20:])
    assert watcher.poll(0.25) == {alpha}
    assert not watcher.problems


def test_the_watcher_reports_garbage_and_goes_on(ca: CertificateAuthority,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    alpha = serial_of(ca.write_client("alpha", now=NOW)["cert"])
    path = ca.directory / REVOKED
    path.write_bytes(b"garbage\n")
    watcher = RevocationWatcher(ca.directory)
    with caplog.at_level(logging.WARNING, logger="fieldc2.revocation"):
        assert watcher.poll(0.0) == set()
        RevocationList.load(ca.directory).revoke("alpha", records(ca), now=LATER)
        assert watcher.poll(0.25) == {alpha}
        with path.open("ab") as handle:
            handle.write(b"trailing garbage without a newline")
        assert watcher.poll(0.5) == set()  # perhaps a write in progress: wait
        assert watcher.poll(0.75) == set()  # unchanged for a poll: judged, reported
        assert watcher.poll(1.0) == set()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"{path}:1: ") and warnings[1].startswith(f"{path}:3: ")
    assert list(watcher.problems) == warnings


def test_the_watcher_never_forgets_when_the_file_is_replaced(
        ca: CertificateAuthority) -> None:
    alpha = serial_of(ca.write_client("alpha", now=NOW)["cert"])
    bravo = serial_of(ca.write_client("bravo", now=NOW)["cert"])
    RevocationList.load(ca.directory).revoke("alpha", records(ca), now=LATER)
    watcher = RevocationWatcher(ca.directory)
    assert watcher.poll(0.0) == {alpha}
    path = ca.directory / REVOKED
    path.unlink()
    assert watcher.poll(0.25) == set() and watcher.is_revoked(alpha)
    RevocationList.load(ca.directory).revoke("bravo", records(ca), now=LATER)
    assert watcher.poll(0.5) == {bravo}
    assert watcher.is_revoked(alpha)


def test_serials_as_ssl_reports_them() -> None:
    assert parse_serial("4F:0A") == 0x4F0A == parse_serial("0x4f0a")
    assert parse_serial("") is None and parse_serial("xyz") is None
    assert parse_serial("1" * 41) is None  # longer than RFC 5280's 20 octets
    assert peer_serial({"serialNumber": "04F0A1"}) == 0x4F0A1
    assert peer_serial(None) is None and peer_serial({}) is None


# --- the commands ---------------------------------------------------------------------


def cert_command(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fieldc2 cert")
    add_cert_actions(parser.add_subparsers(dest="cert_command", required=True))
    return parser.parse_args(list(argv))


def test_cert_list_revoke_and_crl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", now=NOW, key_type="p256")
    alpha = serial_of(ca.write_client("alpha", now=NOW)["cert"])
    ca.write_client("bravo", now=NOW, days=1)
    config = load_config(None, data_dir=str(tmp_path))
    now = NOW + dt.timedelta(days=2)
    args = cert_command("revoke", "alpha", "--reason", "key-compromise")
    assert run_cert(args, config, now=now) == 0
    out = capsys.readouterr().out
    assert f"revoked alpha  serial {alpha:X}  (key-compromise)" in out
    assert str(ca.directory / "crl.pem") in out
    assert run_cert(args, config, now=now) == 0
    assert "already revoked" in capsys.readouterr().out
    audited = [record for _, record in recent(tmp_path / LOG_NAME, 10) if record is not None]
    assert [(r.kind, r.subject, r.detail) for r in audited] == [
        ("cert_revoked", "alpha", {"serial": f"{alpha:X}", "reason": "key-compromise"})]
    assert run_cert(cert_command("list"), config, now=now) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SERIAL", "KIND", "NAME", "ISSUED", "EXPIRES", "STATUS"]
    assert lines[1].split()[1:3] == ["client", "alpha"] and "revoked" in lines[1]
    assert lines[2].split()[1:3] == ["client", "bravo"] and lines[2].endswith("expired")
    assert run_cert(cert_command("crl"), config, now=now) == 0
    assert "1 revoked" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="no client named 'nobody'"):
        run_cert(cert_command("revoke", "nobody"), config, now=now)


# --- end to end: a live connection is dropped, reconnecting is refused ---------------


async def test_revoke_drops_the_live_connection_within_a_second_and_refuses_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with CommandPost(make_config(tmp_path, tls=True)) as post:
        now = dt.datetime.now(dt.UTC)
        contexts = {}
        for name in ("alpha", "bravo"):
            paths = post.ca.write_client(name, now=now)
            contexts[name] = client_context(post.ca.cert_path, paths["cert"], paths["key"])
        (r_alpha, w_alpha), (r_bravo, w_bravo) = [
            await raw_tls(post, contexts[name]) for name in ("alpha", "bravo")]
        try:
            w_alpha.write(self_report("ALPHA", "ALPHA", 47.0, 11.0))
            w_bravo.write(self_report("BRAVO", "BRAVO", 47.0, 11.0))
            await read_until(r_bravo, b'uid="ALPHA"')
            await read_until(r_alpha, b'uid="BRAVO"')
            with caplog.at_level(logging.WARNING):
                await fieldc2_cli("cert", "revoke", "alpha", "--reason", "key-compromise",
                                  "--data-dir", str(tmp_path))
                revoked_at = time.monotonic()
                await closed(r_alpha)
                assert time.monotonic() - revoked_at < 1.0
            dropped = [r.getMessage() for r in caplog.records
                       if r.levelno == logging.WARNING and "'alpha'" in r.getMessage()]
            assert len(dropped) == 1 and "was revoked" in dropped[0]
            await eventually(lambda: {c.identity for c in post.clients.values()} == {"bravo"})
            await refused(post, contexts["alpha"])
            assert {c.identity for c in post.clients.values()} == {"bravo"}
            w_bravo.write(self_report("BRAVO", "BRAVO", 47.5, 11.5))  # bravo carries on
            await w_bravo.drain()
            # Served on the enrollment port, no login needed, over server-auth TLS.
            trust = ssl.create_default_context(cafile=str(post.ca.cert_path))
            async with httpx.AsyncClient(verify=trust) as http:
                got = await http.get(
                    f"https://localhost:{post.enrollment_port}/Marti/api/crl")
            assert got.headers["content-type"] == "application/pkix-crl"
            crl = x509.load_der_x509_crl(got.content)
            assert [r.serial_number for r in crl] == [
                serial_of(post.ca.directory / "clients" / "alpha.pem")]
        finally:
            for writer in (w_alpha, w_bravo):
                writer.close()
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    await writer.wait_closed()


async def fieldc2_cli(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fieldc2.cli", *argv, env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode()


async def closed(reader: asyncio.StreamReader) -> None:
    """Wait until the server ends the connection (EOF or reset)."""
    try:
        while await asyncio.wait_for(reader.read(65536), 1.0):
            pass
    except (ConnectionError, ssl.SSLError):
        pass
