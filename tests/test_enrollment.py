"""Certificate enrollment on 8446 and the Marti API over mutual TLS on 8443.

Real TLS and real HTTP (httpx) against a running command post; pytak's own
``tak://`` enrollment client end to end; Hypothesis over the CSR decoder and
a bounded fuzz run over the live endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import random
import shutil
import ssl
import statistics
import time
import warnings
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from configparser import ConfigParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fieldc2.api import enrollment
from fieldc2.api.enrollment import MAX_CSR_BODY, CsrError, parse_basic, parse_csr
from fieldc2.api.tls_http import client_cert_context, server_only_context
from fieldc2.config import (
    Config,
    EnrollmentConfig,
    HttpConfig,
    StoreConfig,
    StreamConfig,
    TlsConfig,
)
from fieldc2.server import CommandPost
from fieldc2.sim.units import self_report
from fieldc2.users import UserStore, check_password, hash_password
from tests.conftest import eventually, skip_unless_ci

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pytak warns about optional extras it lacks
    import pytak
    from pytak.crypto_classes import CertificateEnrollment

TIMEOUT = 10.0
PASSWORD = "correct-horse-battery"
SIGN = "/Marti/api/tls/signClient/v2"
CONFIG = "/Marti/api/tls/config"
PROFILE = "/Marti/api/tls/profile/enrollment"


class Clock:
    """A settable clock: the post's limiter and certificates read it."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def post_config(data_dir: Path, *, bind: str = "127.0.0.1", enrollment_port: int = 0,
                tls_port: int = 0) -> Config:
    return Config(
        bind=bind, data_dir=data_dir,
        stream=StreamConfig(tcp_port=0, flush_interval=0.02, picture_delay=0.2),
        http=HttpConfig(port=0),
        tls=TlsConfig(enabled=True, port=tls_port),
        enrollment=EnrollmentConfig(port=enrollment_port),
        store=StoreConfig(backend="memory"),
    )


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Accounts as an operator makes them (``UserStore.add``), hashed once per module."""
    path = tmp_path_factory.mktemp("accounts") / "users.json"
    store = UserStore(path)
    store.add("alice", ("Cyan",), password=PASSWORD)
    store.add("bob", ("Red",), password=PASSWORD)
    store.add("carol", ("Command",), role="admin", password=PASSWORD)
    store.add("dave", ("Cyan",), password=PASSWORD)
    store.set_disabled("dave", True)
    return path


def add_users(users_file: Path, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(users_file, data_dir / "users.json")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def post(tmp_path: Path, clock: Clock, users_file: Path) -> AsyncIterator[CommandPost]:
    add_users(users_file, tmp_path)
    async with CommandPost(post_config(tmp_path), clock=clock) as running:
        yield running


def trust(post: CommandPost) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(post.ca.cert_path))


@contextlib.asynccontextmanager
async def enroller(post: CommandPost, source: str = "127.0.0.1"
                   ) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTPS client of the enrollment port (server-only TLS) from ``source``."""
    transport = httpx.AsyncHTTPTransport(verify=trust(post), local_address=source)
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT,
                                 base_url=f"https://127.0.0.1:{post.enrollment_port}") as client:
        yield client


@pytest.fixture
async def http(post: CommandPost) -> AsyncIterator[httpx.AsyncClient]:
    async with enroller(post) as client:
        yield client


def auth(name: str = "alice", password: str = PASSWORD) -> httpx.BasicAuth:
    return httpx.BasicAuth(name, password)


def make_csr(cn: str = "whoever", key: Any = None) -> tuple[x509.CertificateSigningRequest, Any]:
    key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fieldc2")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr, key


def pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def from_bare(text: str) -> x509.Certificate:
    """A certificate from TAK Server's armour-less base64 (what clients get)."""
    return x509.load_der_x509_certificate(base64.b64decode("".join(text.split())))


def audited(post: CommandPost, kind: str) -> list[dict[str, Any]]:
    """Records of ``kind`` in the post's audit log."""
    lines = (post.config.data_dir / "audit.log").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def forget_failures(post: CommandPost, *keys: str) -> None:
    for key in keys or ("addr:127.0.0.1", "addr:127.0.0.2", "user:alice", "user:bob"):
        post.login_limiter.succeeded(key)


# --- the three endpoints --------------------------------------------------------


async def test_tls_config_is_takserver_xml_as_text_plain(http: httpx.AsyncClient,
                                                         post: CommandPost) -> None:
    response = await http.get(CONFIG, auth=auth())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")  # TAKAware #132
    root = ET.fromstring(response.text)
    assert root.tag == "{com.bbn.marti.config}certificateConfig"
    entries = {e.get("name"): e.get("value") for e in root.iter("{http://bbn.com/marti/xml/config}"
                                                                "nameEntry")}
    assert entries == {"O": "fieldc2", "OU": post.config.server_name}
    # pytak's own parser reads what it needs from it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = CertificateEnrollment()._parse_config_xml(response.text)
    assert parsed == entries


async def test_sign_json_cn_is_the_user_not_the_csr(http: httpx.AsyncClient,
                                                    post: CommandPost) -> None:
    csr, key = make_csr(cn="mallory")
    response = await http.post(SIGN, params={"clientUid": "ANDROID-1", "version": "3"},
                               content=pem(csr), auth=auth(),
                               headers={"Accept": "*/*", "Content-Type": "application/pkcs10"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"signedCert", "ca0"}
    assert "-----" not in body["signedCert"]  # TAK Server's armour-less form
    assert max(len(line) for line in body["signedCert"].splitlines()) == 64
    cert = from_bare(body["signedCert"])
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert cert.public_key() == key.public_key()
    assert cert.issuer == post.ca.cert.subject
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert from_bare(body["ca0"]) == post.ca.cert
    cert.verify_directly_issued_by(post.ca.cert)
    [record] = audited(post, "enroll")
    assert (record["actor"], record["subject"]) == ("alice", "alice")
    assert record["detail"]["serial"] == f"{cert.serial_number:X}"
    assert record["detail"]["client_uid"] == "ANDROID-1"
    # pytak's reformatting of v2 answers turns it back into a loadable PEM.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fixed = CertificateEnrollment()._fix_pem_formatting(body["signedCert"])
    assert x509.load_pem_x509_certificate(fixed.encode()) == cert


async def test_sign_xml_for_application_xml_with_a_bare_base64_csr(http: httpx.AsyncClient,
                                                                   post: CommandPost) -> None:
    csr, _ = make_csr()
    bare = base64.encodebytes(der(csr))  # what ATAK sends: base64 DER, no armour
    response = await http.post(SIGN, params={"clientUid": "ANDROID-2"}, content=bare,
                               auth=auth("bob"), headers={"Accept": "application/xml"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.text)
    assert root.tag == "enrollment"
    cert = from_bare(root.findtext("signedCert") or "")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "bob"
    assert [from_bare(ca.text or "") for ca in root.findall("ca")] == [post.ca.cert]


@pytest.mark.parametrize(("accept", "media"), [
    ("", "application/json"), ("application/json", "application/json"),
    ("text/plain", "text/plain"), ("application/xml, */*", "application/json"),
])
async def test_sign_answer_follows_accept(http: httpx.AsyncClient, accept: str,
                                          media: str) -> None:
    csr, _ = make_csr()
    response = await http.post(SIGN, content=der(csr), auth=auth(),
                               headers={"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(media)
    assert set(json.loads(response.text)) == {"signedCert", "ca0"}


async def test_profile_enrollment_is_204(http: httpx.AsyncClient) -> None:
    response = await http.get(PROFILE, params={"clientUid": "ANDROID-1"}, auth=auth())
    assert response.status_code == 204
    assert response.content == b""


# --- refusals ---------------------------------------------------------------------


@pytest.mark.parametrize("path", [CONFIG, SIGN, PROFILE])
async def test_no_or_wrong_credentials_get_401_basic(http: httpx.AsyncClient, post: CommandPost,
                                                     path: str) -> None:
    csr, _ = make_csr()
    for credentials in (None, auth(password="wrong-password"), auth("nobody"), auth("dave")):
        response = await http.request("POST" if path == SIGN else "GET", path,
                                      content=pem(csr) if path == SIGN else None,
                                      auth=credentials)
        assert response.status_code == 401, (credentials, response.text)
        assert response.headers["www-authenticate"].startswith("Basic realm=")
    failed = {(r["subject"], r["detail"]["via"]) for r in audited(post, "login_failed")}
    assert failed == {(name, "enrollment") for name in ("alice", "nobody", "dave")}
    for header in ("Bearer abc", "Basic !!!not-base64!!!", "Basic " + "A" * 3000):
        response = await http.get(path, headers={"Authorization": header})
        assert response.status_code in (401, 405)


async def test_unknown_user_costs_the_same_as_a_wrong_password(http: httpx.AsyncClient,
                                                               post: CommandPost) -> None:
    async def timed(name: str) -> float:
        forget_failures(post)
        started = time.perf_counter()
        response = await http.get(CONFIG, auth=auth(name, "not-the-password"))
        assert response.status_code == 401
        return time.perf_counter() - started

    await timed("alice")  # warm up the connection
    known = statistics.median([await timed("alice") for _ in range(3)])
    unknown = statistics.median([await timed(f"ghost{i}") for i in range(3)])
    # Both pay one scrypt (~0.1 s); an early exit for unknown names would be ~1 ms.
    assert unknown > 0.5 * known, (known, unknown)
    assert known > 0.5 * unknown, (known, unknown)


@pytest.mark.parametrize("body", [
    b"hello", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----",
    b"\x30\x82\x01\x00" + bytes(50), base64.b64encode(b"\x30\x03\x02\x01\x00"), b"   ",
])
async def test_malformed_csr_is_400(http: httpx.AsyncClient, post: CommandPost,
                                    body: bytes) -> None:
    response = await http.post(SIGN, content=body, auth=auth())
    assert response.status_code == 400, response.text
    assert "request" in response.text or "empty" in response.text


async def test_tampered_and_weak_csrs_are_400(http: httpx.AsyncClient,
                                              post: CommandPost) -> None:
    csr, _ = make_csr()
    raw = bytearray(der(csr))
    raw[-5] ^= 0xFF  # breaks the signature, keeps the structure
    weak, _ = make_csr(key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    for body, reason in ((bytes(raw), "signature"), (pem(weak), "2048")):
        forget_failures(post)
        response = await http.post(SIGN, content=body, auth=auth())
        assert response.status_code == 400, response.text
        assert reason in response.text


async def test_oversize_body_is_413(http: httpx.AsyncClient, post: CommandPost) -> None:
    csr, _ = make_csr()
    padded = pem(csr) + b" " * MAX_CSR_BODY
    response = await http.post(SIGN, content=padded, auth=auth())  # Content-Length says so
    assert response.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        yield pem(csr)
        for _ in range(MAX_CSR_BODY // 4096 + 4):
            yield b" " * 4096

    async with enroller(post) as fresh:
        response = await fresh.post(SIGN, content=chunks(), auth=auth())
    assert response.status_code == 413
    assert response.headers.get("connection") == "close"

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(2000):  # 16 MB at most; the server stops reading long before
            yield b"A" * 8192

    async with enroller(post) as fresh:
        with contextlib.suppress(httpx.TransportError):
            response = await fresh.post(SIGN, content=endless(), auth=auth())
            assert response.status_code == 413
    # Still serving.
    response = await http.post(SIGN, content=pem(csr), auth=auth())
    assert response.status_code == 200


async def test_a_body_that_never_finishes_is_408(post: CommandPost,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enrollment, "BODY_TIMEOUT", 0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", post.enrollment_port,
                                                   ssl=trust(post), server_hostname="127.0.0.1")
    token = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    writer.write(f"POST {SIGN} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
                 "Content-Length: 2000\r\n\r\n-----BEGIN".encode())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 408"), head
        assert b"connection: close" in head.lower()
    finally:
        writer.close()


async def test_too_many_pending_logins_get_503(http: httpx.AsyncClient,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enrollment, "MAX_PENDING_CHECKS", 0)
    response = await http.get(CONFIG, auth=auth())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


async def test_brute_force_is_refused_per_source_and_per_user(post: CommandPost,
                                                              clock: Clock) -> None:
    free = post.login_limiter.free_failures
    async with enroller(post, "127.0.0.1") as a, enroller(post, "127.0.0.2") as b:
        for _ in range(free + 1):
            response = await a.get(CONFIG, auth=auth("alice", "guess-guess"))
            assert response.status_code == 401
        # Locked: even the right password is refused, without being checked.
        refused = await a.get(CONFIG, auth=auth("alice"))
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        encoded = hash_password("y")
        started = time.perf_counter()
        check_password("x", encoded)
        one_scrypt = time.perf_counter() - started
        started = time.perf_counter()
        assert (await a.post(SIGN, content=b"x", auth=auth("alice"))).status_code == 429
        # No scrypt spent on it: well under the cost of one, measured just now.
        assert time.perf_counter() - started < 0.5 * one_scrypt
        # Per user: alice is locked from another source too ...
        assert (await b.get(CONFIG, auth=auth("alice"))).status_code == 429
        # ... while another user from there is fine,
        assert (await b.get(CONFIG, auth=auth("bob"))).status_code == 200
        # and per source: bob from the guessing source is locked.
        assert (await a.get(CONFIG, auth=auth("bob"))).status_code == 429
        # The lock expires; a success clears the record.
        clock.now += post.login_limiter.base_delay + 0.5
        assert (await a.get(CONFIG, auth=auth("alice"))).status_code == 200
        assert (await a.get(CONFIG, auth=auth("alice", "one-more-guess"))).status_code == 401
        assert (await a.get(CONFIG, auth=auth("alice"))).status_code == 200


async def test_bad_csrs_count_as_failures(http: httpx.AsyncClient, post: CommandPost) -> None:
    free = post.login_limiter.free_failures
    for _ in range(free + 1):
        assert (await http.post(SIGN, content=b"junk", auth=auth())).status_code == 400
    csr, _ = make_csr()
    assert (await http.post(SIGN, content=pem(csr), auth=auth())).status_code == 429


# --- fuzz -------------------------------------------------------------------------

_CSR, _ = make_csr("fuzz")
_DER = der(_CSR)


@st.composite
def csr_bodies(draw: st.DrawFn) -> bytes:
    """Garbage, and valid CSRs in each encoding with bytes flipped, cut or inserted."""
    kind = draw(st.sampled_from(["binary", "der", "pem", "base64"]))
    if kind == "binary":
        return draw(st.binary(max_size=2048))
    raw = bytearray(_DER)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(raw) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            raw[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del raw[at:at + draw(st.integers(1, 64))]
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=16))
        if not raw:
            raw = bytearray(b"\x30")
    if kind == "der":
        return bytes(raw)
    encoded = base64.encodebytes(bytes(raw))
    if kind == "base64":
        return encoded
    return b"-----BEGIN CERTIFICATE REQUEST-----\n" + encoded + \
        b"-----END CERTIFICATE REQUEST-----\n"


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(csr_bodies())
@example(_DER)
@example(b"\x30\x80" + b"\x30\x80" * 500)
def test_csr_decoder_raises_only_csr_error(body: bytes) -> None:
    try:
        csr = parse_csr(body)
    except CsrError:
        return
    assert csr.is_signature_valid


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=200) | st.builds(lambda b: "Basic " + base64.b64encode(b).decode(),
                                         st.binary(max_size=100)))
def test_basic_header_parser_never_raises(header: str) -> None:
    parsed = parse_basic(header)
    assert parsed is None or (parsed[0] and ":" not in parsed[0])


async def test_fuzzed_csrs_never_get_a_5xx(http: httpx.AsyncClient, post: CommandPost) -> None:
    cases: list[tuple[bytes, str, str]] = []

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(csr_bodies(), st.sampled_from(["*/*", "application/xml", "text/plain", "",
                                          "application/json;q=0.1, text/*"]),
           st.text(max_size=80))
    def collect(body: bytes, accept: str, uid: str) -> None:
        cases.append((body, accept, uid))

    collect()
    for body, accept, uid in cases:
        forget_failures(post)
        response = await http.post(SIGN, content=body, params={"clientUid": uid}, auth=auth(),
                                   headers={"Accept": accept})
        assert response.status_code in (200, 400), (body[:80], response.status_code,
                                                   response.text[:200])
    assert (await http.get(CONFIG, auth=auth())).status_code == 200


# --- pytak end to end -----------------------------------------------------------------


def loopback_alias() -> str:
    """A random 127/8 address, so the fixed TAK ports (8446, 8089) rarely collide."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


@contextlib.asynccontextmanager
async def post_on_tak_ports(data_dir: Path) -> AsyncIterator[CommandPost]:
    """A post with enrollment on 8446 and the stream on 8089, as pytak hard-codes them."""
    for _ in range(5):
        config = post_config(data_dir, bind=loopback_alias(), enrollment_port=8446,
                             tls_port=8089)
        post = CommandPost(config)
        try:
            await post.start()
        except OSError:
            await post.stop()
            continue
        try:
            yield post
        finally:
            await post.stop()
        return
    skip_unless_ci("no free loopback address for ports 8446 and 8089")


# pytak 7.6 sets the deprecated ssl.OP_NO_TLSv1 itself, uses aiohttp's BasicAuth
# (deprecated in aiohttp 3.14) and warns that tak:// does not verify the
# server: its warnings, not ours.
@pytest.mark.filterwarnings("ignore:ssl.OP_NO_SSL:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:.*aiohttp:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:Disabled TLS:UserWarning")
async def test_pytak_tak_url_enrolls_and_streams(tmp_path: Path, users_file: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    add_users(users_file, tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # pytak caches the .p12 there
    async with post_on_tak_ports(tmp_path) as post:
        host = post.config.bind
        parser = ConfigParser()
        parser["pytak"] = {"COT_URL": f"tak://com.atakmap.app/enroll?host={host}:8089"
                                      f"&username=alice&token={PASSWORD}"}
        config = parser["pytak"]
        _, writer = await asyncio.wait_for(pytak.protocol_factory(config), 60)
        try:
            p12 = Path(config["PYTAK_TLS_CLIENT_CERT"])
            assert p12.is_relative_to(tmp_path / "home")
            await eventually(lambda: any(c.identity == "alice" for c in post.clients.values()))
            tx = pytak.TXWorker(asyncio.Queue(), config, writer)
            await tx.send_data(self_report("PYTAK-ALICE", "ALICE", 47.0, 11.0, group="Red"))
            await eventually(lambda: "PYTAK-ALICE" in post.endpoints)
            # The account, not the team the client claims, decides its groups.
            assert post.endpoints["PYTAK-ALICE"].groups == ("Cyan",)
        finally:
            writer.close()


@pytest.mark.filterwarnings("ignore:.*aiohttp:DeprecationWarning")
async def test_pytak_enrollment_with_a_wrong_password_makes_no_certificate(
        tmp_path: Path, users_file: Path) -> None:
    add_users(users_file, tmp_path)
    async with post_on_tak_ports(tmp_path) as post:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            enrollment = CertificateEnrollment()
        out = tmp_path / "client.p12"
        await enrollment.begin_enrollment(post.config.bind, "alice", "not-it", trust_all=True,
                                          output_path=str(out), passphrase="atakatak")
        assert not out.exists()


# --- the Marti API over mutual TLS ----------------------------------------------------


async def enroll(http: httpx.AsyncClient, directory: Path, name: str) -> tuple[Path, Path]:
    """Enroll ``name`` through the API; the PEM certificate and key files."""
    csr, key = make_csr(name)
    response = await http.post(SIGN, content=pem(csr), auth=auth(name))
    assert response.status_code == 200, response.text
    cert = from_bare(response.json()["signedCert"])
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def marti(post: CommandPost, cert: tuple[Path, Path] | None) -> httpx.AsyncClient:
    context = trust(post)
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return httpx.AsyncClient(verify=context, timeout=TIMEOUT,
                             base_url=f"https://127.0.0.1:{post.http_port}")


async def test_marti_refuses_a_client_without_a_certificate(post: CommandPost) -> None:
    async with marti(post, None) as client:
        with pytest.raises(httpx.TransportError):
            await client.get("/Marti/api/version")
    plain = f"http://127.0.0.1:{post.http_port}/Marti/api/version"
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        with pytest.raises(httpx.TransportError):
            await client.get(plain)


async def test_both_https_ports_need_tls_1_2(post: CommandPost) -> None:
    cert, key = post.ca.server_credentials(("localhost",), ("127.0.0.1",),
                                           now=post.ca.cert.not_valid_before_utc)
    for context in (server_only_context(cert, key), client_cert_context(post.ca, cert, key)):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server_only_context(cert, key).verify_mode == ssl.CERT_NONE
    assert client_cert_context(post.ca, cert, key).verify_mode == ssl.CERT_REQUIRED
    tls12 = ssl.create_default_context(cafile=str(post.ca.cert_path))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2  # older phones: 1.2 must work
    _, writer = await asyncio.open_connection("127.0.0.1", post.enrollment_port, ssl=tls12)
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    writer.close()


async def test_plain_marti_is_closed_when_logins_are_required(tmp_path: Path) -> None:
    config = dataclasses.replace(
        post_config(tmp_path), tls=TlsConfig(enabled=False),
        stream=StreamConfig(tcp_port=0, tcp_require_auth=True))
    async with CommandPost(config) as post, httpx.AsyncClient(timeout=TIMEOUT) as client:
        assert post.enrollment_port == 0  # no CA, no enrollment
        response = await client.get(f"http://127.0.0.1:{post.http_port}/Marti/api/contacts/all")
        assert response.status_code == 403


async def test_marti_refuses_a_certificate_from_another_ca(post: CommandPost,
                                                           tmp_path: Path) -> None:
    from fieldc2.crypto.ca import CertificateAuthority

    rogue = CertificateAuthority.create(tmp_path / "rogue", now=post.ca.cert.not_valid_before_utc,
                                        key_type="p256")
    paths = rogue.write_client("alice", now=rogue.cert.not_valid_before_utc)
    async with marti(post, (paths["cert"], paths["key"])) as client:
        with pytest.raises(httpx.TransportError):
            await client.get("/Marti/api/version")


async def test_marti_contacts_follow_the_certificates_groups(
        post: CommandPost, http: httpx.AsyncClient, tmp_path: Path) -> None:
    certs = {name: await enroll(http, tmp_path, name) for name in ("alice", "bob", "carol")}
    writers = []
    for uid, group in (("CYAN-1", "Cyan"), ("RED-1", "Red")):
        _, writer = await asyncio.open_connection("127.0.0.1", post.tcp_port)
        writer.write(self_report(uid, uid, 47.0, 11.0, group=group))
        writers.append(writer)
    try:
        await eventually(lambda: {"CYAN-1", "RED-1"} <= post.endpoints.keys())
        seen: dict[str, set[str]] = {}
        for name, cert in certs.items():
            async with marti(post, cert) as client:
                response = await client.get("/Marti/api/version")
                assert response.status_code == 200
                contacts = (await client.get("/Marti/api/contacts/all")).json()
                endpoints = (await client.get("/Marti/api/clientEndPoints")).json()["data"]
                groups = (await client.get("/Marti/api/groups/all")).json()["data"]
            seen[name] = {c["uid"] for c in contacts}
            assert {e["uid"] for e in endpoints} == seen[name]
            if name != "carol":
                assert {g["name"] for g in groups} == {"Cyan" if name == "alice" else "Red"}
        assert seen == {"alice": {"CYAN-1"}, "bob": {"RED-1"}, "carol": {"CYAN-1", "RED-1"}}
        # A certificate whose account is disabled gets nothing.
        forget_failures(post)
        post.users.set_disabled("alice", True)
        async with marti(post, certs["alice"]) as client:
            assert (await client.get("/Marti/api/contacts/all")).status_code == 403
    finally:
        for writer in writers:
            writer.close()


async def test_marti_certificate_without_an_account_sees_its_configured_groups(
        post: CommandPost, tmp_path: Path) -> None:
    paths = post.ca.write_client("sensor-7", now=post.ca.cert.not_valid_before_utc)
    _, writer = await asyncio.open_connection("127.0.0.1", post.tcp_port)
    writer.write(self_report("CYAN-2", "CYAN-2", 47.0, 11.0, group="Cyan"))
    try:
        await eventually(lambda: "CYAN-2" in post.endpoints)
        async with marti(post, (paths["cert"], paths["key"])) as client:
            contacts = (await client.get("/Marti/api/contacts/all")).json()
        assert contacts == []  # the default group only: no Cyan contacts
    finally:
        writer.close()
