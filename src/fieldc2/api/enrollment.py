"""Certificate enrollment on 8446: a user name and password buy a client certificate.

TAK clients (ATAK, iTAK, WinTAK, pytak's ``tak://``) enroll in three calls,
each with HTTP Basic credentials, over TLS that authenticates only the
server (the client has no certificate yet):

``GET /Marti/api/tls/config``
    The subject entries the CSR should carry: TAK Server's XML
    ``certificateConfig`` with ``nameEntries`` O and OU.  Served as
    ``text/plain`` like TAK Server does; TAKAware before 1.3.2 (#132) refused
    ``application/xml`` here.
``POST /Marti/api/tls/signClient/v2?clientUid=&version=``
    The CSR as PEM, as bare base64 of its DER (what TAK Server strips PEM
    down to) or as raw DER.  The certificate's CN is the authenticated user
    name whatever the CSR says: the password, not the CSR, says who this is.
    The answer is TAK Server's: JSON ``{"signedCert", "ca0"}`` for ``*/*``,
    ``application/json`` or no Accept; XML ``<enrollment><signedCert/><ca/>``
    for ``application/xml``; the JSON as ``text/plain`` for ``text/plain``
    (iTAK, as OpenTAKServer found).  Certificates are base64 DER in 64-column
    lines without PEM armour, as TAK Server's ``Util.certToPEM(cert, false)``.
``GET /Marti/api/tls/profile/enrollment?clientUid=``
    A profile package to install after enrolling; 204: there is none.

Refusals: 401 with ``WWW-Authenticate: Basic`` for missing or wrong
credentials and disabled accounts; 429 with ``Retry-After`` once a source
address or a user name has failed too often (then even the right password
is refused, so guessing gains nothing); 413 for a body over
:data:`MAX_CSR_BODY`; 400 for a CSR that cannot be certified; 503 with
``Retry-After`` when too many password checks are already queued.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from xml.sax.saxutils import escape, quoteattr

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from fieldc2.crypto.ca import CertificateAuthority
from fieldc2.errors import ConfigError, ProtocolError
from fieldc2.users import FailureLimiter, User, UserStore

log = logging.getLogger("fieldc2.enrollment")

#: Largest request body read, bytes.  A PEM CSR for an RSA-4096 key (what
#: pytak makes) is about 1.7 KB; 64 KiB leaves room for any real client and
#: none for memory abuse.  The body is read in pieces and dropped at the limit.
MAX_CSR_BODY = 64 * 1024
#: Password checks running at once.  Each scrypt holds 32 MiB for ~0.1 s:
#: four keep a burst of logins under 128 MiB and leave cores for the post.
MAX_CONCURRENT_CHECKS = 4
#: Password checks running or queued; past this a request gets 503 at once
#: instead of holding a connection and memory in a queue.
MAX_PENDING_CHECKS = 32
#: Seconds to receive a CSR body.  It is ~2 KB, a second even on a poor
#: radio link; a body still unfinished after this holds the connection on
#: purpose (the connections per service are bounded, so that would starve it).
BODY_TIMEOUT = 30.0
#: Longest ``clientUid`` kept for the log; ATAK's are ~40 characters.
MAX_CLIENT_UID = 128
#: User names are at most 64 characters (:mod:`fieldc2.users`); longer ones
#: are cut to this for the failure record and the log, bounding what a
#: guesser can make the limiter (10,000 keys) and the audit log hold.
MAX_NAME = 64
#: Accepted key sizes and curves: what TAK clients make, nothing weak.
RSA_BITS = range(2048, 8193)
EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
REALM = 'Basic realm="fieldc2", charset="UTF-8"'
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")
_PEM_CSR = re.compile(rb"-----BEGIN (NEW )?CERTIFICATE REQUEST-----")
_BASE64 = re.compile(rb"^[A-Za-z0-9+/=\s]+$")


class CsrError(ProtocolError):
    """A client sent a certificate request that cannot be certified."""


class Audit(Protocol):
    """Where logins and enrollments are recorded (``CommandPost.audit``)."""

    async def __call__(self, kind: str, actor: str, subject: str, **detail: str) -> None: ...


async def no_audit(kind: str, actor: str, subject: str, **detail: str) -> None:
    """An :class:`Audit` that records nothing."""


# --- pieces without I/O ------------------------------------------------------


def parse_csr(body: bytes) -> x509.CertificateSigningRequest:
    """A CSR from PEM, bare base64 of DER, or DER; :class:`CsrError` otherwise."""
    text = body.strip()
    if not text:
        raise CsrError("the request body is empty: send the CSR (PEM or base64 DER)")
    try:
        if _PEM_CSR.search(text):
            csr = x509.load_pem_x509_csr(text.replace(b"NEW CERTIFICATE", b"CERTIFICATE"))
        elif _BASE64.match(text):
            csr = x509.load_der_x509_csr(base64.b64decode(b"".join(text.split()), validate=True))
        else:
            csr = x509.load_der_x509_csr(body)
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise CsrError(f"not a certificate request (PEM, base64 DER or DER): {exc}") from exc
    check_csr(csr)
    return csr


def check_csr(csr: x509.CertificateSigningRequest) -> None:
    """Refuse requests with a bad signature or a key we would not certify."""
    try:
        key = csr.public_key()
        signed = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CsrError(f"the request's key or signature is unusable: {exc}") from exc
    if not signed:
        raise CsrError("the request's signature does not match its key")
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size not in RSA_BITS:
            raise CsrError(f"RSA keys must have 2048 to 8192 bits, not {key.key_size}")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, EC_CURVES):
            raise CsrError(f"EC keys must use P-256, P-384 or P-521, not {key.curve.name}")
    else:
        raise CsrError(f"only RSA and EC keys are certified, not {type(key).__name__}")


def parse_basic(header: str) -> tuple[str, str] | None:
    """User name and password from an ``Authorization: Basic`` value, or None."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    name, colon, password = decoded.partition(":")
    return (name, password) if colon and name else None


def bare_pem(cert: x509.Certificate) -> str:
    """Base64 DER in 64-column lines, no armour: TAK Server's ``certToPEM(c, false)``."""
    encoded = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    return re.sub("(.{64})", "\\1\n", encoded)


def config_xml(organization: str, unit: str) -> str:
    """TAK Server's ``certificateConfig`` document."""
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<ns2:certificateConfig xmlns="http://bbn.com/marti/xml/config" '
            'xmlns:ns2="com.bbn.marti.config"><nameEntries>'
            f'<nameEntry name="O" value={quoteattr(organization)}/>'
            f'<nameEntry name="OU" value={quoteattr(unit)}/>'
            '</nameEntries></ns2:certificateConfig>')


def signed_response(cert: x509.Certificate, chain: list[x509.Certificate],
                    accept: str) -> Response:
    """The signed certificate and CA chain in the form the Accept header asks for.

    TAK Server's order: JSON if ``*/*``, ``application/json`` or nothing is
    accepted, else XML if XML is.  Where TAK Server answers anything else
    with 400 this falls back to JSON (as ``text/plain`` when that is asked).
    """
    accept = accept.lower()
    wants_json = not accept.strip() or "*/*" in accept or "application/json" in accept
    if not wants_json and ("application/xml" in accept or "text/xml" in accept):
        cas = "".join(f"<ca>{escape(bare_pem(ca))}</ca>" for ca in chain)
        xml = ('<?xml version="1.0" encoding="UTF-8"?>'
               f"<enrollment><signedCert>{escape(bare_pem(cert))}</signedCert>{cas}</enrollment>")
        return Response(xml, media_type="application/xml")
    body = {"signedCert": bare_pem(cert)} | {f"ca{i}": bare_pem(ca) for i, ca in enumerate(chain)}
    if not wants_json and "text/plain" in accept:
        return PlainTextResponse(json.dumps(body, indent=2))
    return JSONResponse(body)


def printable(text: str, limit: int = MAX_CLIENT_UID) -> str:
    """``text`` safe for one log line: bounded, control characters replaced."""
    return _UNPRINTABLE.sub("?", text[:limit])


# --- who is asking -----------------------------------------------------------


def source_address(request: Request) -> str:
    """The peer's IP address (no proxy headers are trusted on these ports)."""
    return request.client.host if request.client else "?"


def unauthorized(message: str = "wrong user name or password") -> Response:
    return PlainTextResponse(message, 401, headers={"WWW-Authenticate": REALM})


def too_many(retry_after: float, message: str) -> Response:
    seconds = str(max(1, math.ceil(retry_after)))
    return PlainTextResponse(message, 429, headers={"Retry-After": seconds})


@dataclass
class LoginGuard:
    """HTTP Basic logins, throttled per source address and per user name.

    Shares the command post's :class:`FailureLimiter` and key scheme
    (``addr:IP``, ``user:NAME``) with the stream's ``<auth>`` logins, so
    alternating between the two gains a guesser nothing.
    """

    users: UserStore
    limiter: FailureLimiter
    clock: Callable[[], float]
    audit: Audit = field(default=no_audit)

    def __post_init__(self) -> None:
        self._checks = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        self._pending = 0

    async def login(self, request: Request) -> User | Response:
        """The authenticated user, or the response that refuses the request."""
        header = request.headers.get("authorization")
        if header is None:
            return unauthorized("this needs a user name and password (HTTP Basic)")
        ip, now = source_address(request), self.clock()
        credentials = parse_basic(header)
        if credentials is None:
            self.limiter.failed("addr:" + ip, now)
            return unauthorized("the Authorization header is not HTTP Basic")
        name, password = credentials
        wait = max(self.retry_after("addr:" + ip, now),
                   self.retry_after("user:" + name[:MAX_NAME], now))
        if wait > 0:  # refused unchecked: a guess here is worth nothing
            return too_many(wait, "too many failed attempts; try again later")
        user = await self._check(name, password)
        if isinstance(user, Response):
            return user
        if user is None:
            self.failed(request, name)
            log.warning("enrollment login failed for %r from %s", printable(name, MAX_NAME), ip)
            await self.audit("login_failed", ip, name[:MAX_NAME], via="enrollment")
            return unauthorized()
        return user

    async def _check(self, name: str, password: str) -> User | Response | None:
        """The scrypt check, off the loop, at most :data:`MAX_CONCURRENT_CHECKS` at once."""
        if self._pending >= MAX_PENDING_CHECKS:
            return PlainTextResponse("too many logins at once; try again shortly", 503,
                                     headers={"Retry-After": "1"})
        try:
            self.users.reload()  # accounts added with `fieldc2 user` while running
        except ConfigError as exc:
            log.error("%s; keeping the accounts loaded before", exc)
        self._pending += 1
        try:
            async with self._checks:
                return await self.users.authenticate_async(name, password)
        finally:
            self._pending -= 1

    def failed(self, request: Request, name: str) -> None:
        """Count a failure (a wrong password, an unusable CSR) against both keys."""
        now = self.clock()
        self.limiter.failed("addr:" + source_address(request), now)
        self.limiter.failed("user:" + name[:MAX_NAME], now)

    def succeeded(self, request: Request, name: str) -> None:
        """Forget past failures once a request has fully succeeded.

        Not at login: an enrollment that then fails (a bad CSR) must still count.
        """
        self.limiter.succeeded("addr:" + source_address(request))
        self.limiter.succeeded("user:" + name[:MAX_NAME])

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        return self.limiter.retry_after(key, now)


# --- the app -------------------------------------------------------------------


def declared_too_large(request: Request, limit: int = MAX_CSR_BODY) -> bool:
    """Whether the Content-Length alone says the body is over ``limit``."""
    declared = request.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


async def read_body(request: Request, limit: int = MAX_CSR_BODY) -> bytes | Response:
    """The body, read piece by piece within :data:`BODY_TIMEOUT`; or the refusal."""
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    return too_large()
    except TimeoutError:
        return closing(408, f"the body did not arrive within {BODY_TIMEOUT:.0f} s")
    except ClientDisconnect:
        return closing(400, "the client went away before sending the whole body")
    return bytes(body)


def closing(status: int, message: str) -> Response:
    # Connection: close, so uvicorn drops the rest of the body instead of reading it.
    return PlainTextResponse(message, status, headers={"Connection": "close"})


def too_large() -> Response:
    return closing(413, f"the body is over {MAX_CSR_BODY} bytes; send only the CSR")


def enrollment_app(ca: CertificateAuthority, guard: LoginGuard, *, unit: str = "fieldc2",
                   cert_days: int = 365) -> Starlette:
    """The three enrollment endpoints, signing with ``ca``."""
    organization = next((str(a.value) for a in ca.cert.subject.get_attributes_for_oid(
        NameOID.ORGANIZATION_NAME)), "fieldc2")

    async def tls_config(request: Request) -> Response:
        user = await guard.login(request)
        if isinstance(user, Response):
            return user
        guard.succeeded(request, user.name)
        return PlainTextResponse(config_xml(organization, unit))

    async def sign_client(request: Request) -> Response:
        if declared_too_large(request):  # before the costly password check
            return too_large()
        user = await guard.login(request)
        if isinstance(user, Response):
            return user
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        uid = printable(request.query_params.get("clientUid", ""))
        try:
            csr = parse_csr(body)
            now = dt.datetime.fromtimestamp(guard.clock(), dt.UTC)
            cert = ca.sign_csr(csr, user.name, now=now, days=cert_days)
        except (CsrError, ConfigError) as exc:
            guard.failed(request, user.name)
            log.warning("enrollment by %s (clientUid %r) refused: %s", user.name, uid, exc)
            return PlainTextResponse(str(exc), 400)
        guard.succeeded(request, user.name)
        serial, until = f"{cert.serial_number:X}", f"{cert.not_valid_after_utc:%Y-%m-%d}"
        log.info("enrolled %s (clientUid %r): certificate serial %s until %s", user.name, uid,
                 serial, until)
        await guard.audit("enroll", user.name, user.name, serial=serial, client_uid=uid,
                          source=source_address(request), not_after=until)
        return signed_response(cert, [ca.cert], request.headers.get("accept", ""))

    async def enrollment_profile(request: Request) -> Response:
        user = await guard.login(request)
        if isinstance(user, Response):
            return user
        guard.succeeded(request, user.name)
        return Response(status_code=204)

    return Starlette(routes=[
        Route("/Marti/api/tls/config", tls_config, methods=["GET"]),
        Route("/Marti/api/tls/signClient/v2", sign_client, methods=["POST"]),
        Route("/Marti/api/tls/profile/enrollment", enrollment_profile, methods=["GET"]),
    ])
