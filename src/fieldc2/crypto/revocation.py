"""Revoking client certificates, and how a running server learns of it.

``fieldc2 cert revoke`` and the server are different processes; they share
only files in the CA directory::

    issued.jsonl   what the authority signed (:mod:`fieldc2.crypto.ca`)
    revoked.jsonl  one :class:`RevokedCertificate` per line, append-only
    crl.pem        an X.509 CRL signed by the CA, rewritten on each revocation

The server polls ``revoked.jsonl`` with a :class:`RevocationWatcher` every
:data:`POLL_INTERVAL` seconds (a ``stat``; the file is read only when it has
changed, and then only its new lines), closes the live connections of newly
revoked certificates and refuses them at every later TLS connect.

Why not hand the CRL to OpenSSL (``VERIFY_CRL_CHECK_LEAF``)?  Because then a
missing CRL, or one past its next update, makes *every* handshake fail: a
server left running over a weekend would lock out all its clients.  And a CRL
in the TLS context only affects new handshakes, so live connections need the
check below anyway.  The revocation list is the authority; the CRL is derived
from it for clients and other servers that want one, served fresh over HTTP
by :func:`crl_routes`.  The cost: a revoked client completes a TLS handshake
before it is dropped, without a byte read from it or sent to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from fieldc2.crypto.ca import (
    MAX_RECORDS_BYTES,
    CertificateAuthority,
    IssuedCertificate,
    SerialHex,
    append_records,
    parse_records,
    read_records,
)
from fieldc2.errors import ConfigError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from fieldc2.config import Config

log = logging.getLogger("fieldc2.revocation")

REVOKED = "revoked.jsonl"
CRL_FILE = "crl.pem"
#: Seconds between looks at ``revoked.jsonl``: a revoked client is dropped
#: within this (well inside the promised second); a ``stat`` costs microseconds.
POLL_INTERVAL = 0.25
#: A CRL's validity (its next update).  A day, as is common for small CAs: the
#: HTTP endpoint always serves a fresh one, the file is a snapshot.
CRL_VALIDITY = dt.timedelta(days=1)
#: How old a served CRL may get before it is signed afresh.
CRL_REFRESH = dt.timedelta(hours=1)
#: Distinct problems (unreadable lines) a watcher reports; each is logged
#: once.  A file with more is not one fieldc2 wrote; the first hundred say so.
MAX_PROBLEMS = 100

#: RFC 5280 reasons an operator may give.  ``certificateHold`` is left out:
#: a revocation here is final; issue a new certificate instead.
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}
Reason = Literal["unspecified", "key-compromise", "affiliation-changed", "superseded",
                 "cessation-of-operation", "privilege-withdrawn"]


class RevokedCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """One revocation: a line of ``revoked.jsonl``."""

    serial: SerialHex
    common_name: str
    revoked_at: dt.datetime
    reason: Reason = "unspecified"

    @property
    def number(self) -> int:
        return int(self.serial, 16)


def parse_serial(text: str) -> int | None:
    """A serial as the operator may paste it: hex, with or without ``0x`` or colons."""
    digits = text.strip().removeprefix("0x").removeprefix("0X").replace(":", "")
    if not 0 < len(digits) <= 40:
        return None
    try:
        return int(digits, 16)
    except ValueError:
        return None


def peer_serial(peercert: object) -> int | None:
    """The serial of a verified peer certificate, from ``ssl``'s ``peercert`` dict."""
    if not isinstance(peercert, dict):
        return None
    value = peercert.get("serialNumber")
    return parse_serial(value) if isinstance(value, str) else None


def build_crl(ca: CertificateAuthority, entries: Iterable[RevokedCertificate],
              now: dt.datetime) -> x509.CertificateRevocationList:
    """A CRL listing ``entries``, valid from ``now`` for :data:`CRL_VALIDITY`."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now)
        .next_update(now + CRL_VALIDITY)
        # RFC 5280 5.2.3: increasing; milliseconds since the epoch are.
        .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca.key.public_key()), critical=False)
    )
    for entry in entries:
        revoked = (x509.RevokedCertificateBuilder().serial_number(entry.number)
                   .revocation_date(entry.revoked_at))
        if entry.reason != "unspecified":  # RFC 5280 5.3.1: omit rather than say so
            revoked = revoked.add_extension(x509.CRLReason(REASONS[entry.reason]),
                                            critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    return builder.sign(ca.key, hashes.SHA256())


class RevocationList:
    """The revocations in a CA directory, as the ``fieldc2 cert`` commands see them."""

    def __init__(self, path: Path, entries: Iterable[RevokedCertificate],
                 problems: list[str]) -> None:
        self.path = path
        self.entries: dict[int, RevokedCertificate] = {}
        for entry in entries:
            self.entries.setdefault(entry.number, entry)  # the first revocation stands
        self.problems = problems

    @classmethod
    def load(cls, directory: Path) -> RevocationList:
        path = directory / REVOKED
        loaded = read_records(path, RevokedCertificate)
        return cls(path, loaded.records, loaded.problems)

    def is_revoked(self, serial: int) -> bool:
        return serial in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def revoke(self, target: str | int, issued: Iterable[IssuedCertificate], *,
               now: dt.datetime, reason: Reason = "unspecified") -> list[RevokedCertificate]:
        """Revoke a client's certificates (by name) or one certificate (by serial).

        Returns the revocations made; certificates already revoked are skipped,
        so revoking twice is harmless.  An unknown target is a ``ConfigError``.
        """
        found = find_certificates(target, list(issued))
        new = [RevokedCertificate(serial=cert.serial, common_name=cert.common_name,
                                  revoked_at=now.astimezone(dt.UTC), reason=reason)
               for cert in found if cert.number not in self.entries]
        if new:
            append_records(self.path, new)
            self.entries.update((entry.number, entry) for entry in new)
        return new

    def crl(self, ca: CertificateAuthority, now: dt.datetime) -> x509.CertificateRevocationList:
        return build_crl(ca, self.entries.values(), now)

    def crl_pem(self, ca: CertificateAuthority, now: dt.datetime) -> bytes:
        return self.crl(ca, now).public_bytes(serialization.Encoding.PEM)

    def write_crl(self, ca: CertificateAuthority, now: dt.datetime) -> Path:
        """Write ``<ca>/crl.pem`` (atomically: a reader never sees half of it)."""
        path = ca.directory / CRL_FILE
        partial = path.with_name(f".{CRL_FILE}.{os.getpid()}.tmp")  # one per writer
        try:
            partial.write_bytes(self.crl_pem(ca, now))
            os.replace(partial, path)
        except OSError as exc:
            raise ConfigError(f"cannot write the CRL {path}: {exc}") from exc
        return path


def find_certificates(target: str | int, issued: list[IssuedCertificate]
                      ) -> list[IssuedCertificate]:
    """What ``target`` names: a client's certificates by its name (the CN),
    else the certificate with that serial (any kind, the server's included)."""
    if isinstance(target, str):
        by_name = [c for c in issued if c.kind == "client" and c.common_name == target]
        if by_name:
            return by_name
        serial = parse_serial(target)
    else:
        serial = target
    by_serial = [c for c in issued if c.number == serial]
    if by_serial:
        return by_serial
    raise ConfigError(f"no client named {target!r} and no certificate with that serial in "
                      "the registry of issued certificates; `fieldc2 cert list` shows them")


class RevocationWatcher:
    """Learns of revocations made by another process, from ``revoked.jsonl``.

    Sans-I/O in spirit: it never sleeps or reads the clock; the server calls
    :meth:`poll` every :attr:`interval` seconds with the time.  Each poll is a
    ``stat``; the file is read (whole: it is small, and re-reading it is what
    makes a replaced or edited file safe) only when its size, mtime or inode
    changed.  A running server never forgets a revocation: only additions
    count, whatever happens to the file.
    """

    def __init__(self, directory: Path, *, interval: float = POLL_INTERVAL) -> None:
        self.path = directory / REVOKED
        self.interval = interval
        self.entries: dict[int, RevokedCertificate] = {}
        self.problems: list[str] = []
        """What was wrong with the file, each logged once (at most MAX_PROBLEMS)."""
        self.checked_at = -math.inf
        self.reads = 0
        """How many times the file was read (only when it had changed)."""
        self._seen: tuple[int, int, int] | None = None  # inode, size, mtime at the last read
        self._partial = False  # the last read ended in a partial line
        self._error = ""

    def get_timer(self) -> float:
        """When :meth:`poll` is next due."""
        return self.checked_at + self.interval

    def is_revoked(self, serial: int) -> bool:
        return serial in self.entries

    def revoked_peer(self, peercert: object) -> int | None:
        """The serial of a TLS peer's certificate if it is revoked, else None."""
        serial = peer_serial(peercert)
        return serial if serial is not None and serial in self.entries else None

    def poll(self, now: float) -> set[int]:
        """Serials revoked since the last poll (each reported once)."""
        self.checked_at = now
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return set()
        except OSError as exc:
            self._report_error(f"cannot look at {self.path}: {exc}")
            return set()
        signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        # A partial last line unchanged for a whole interval is not a write
        # in progress (one write() takes microseconds): judge it as it is.
        stalled = signature == self._seen and self._partial
        if signature == self._seen and not stalled:
            return set()
        try:
            with open(self.path, "rb") as handle:
                data = handle.read(MAX_RECORDS_BYTES + 1)
        except OSError as exc:
            self._report_error(f"cannot read {self.path}: {exc}")
            return set()
        self.reads += 1
        self._error = ""
        self._seen = signature
        if len(data) > MAX_RECORDS_BYTES:
            self._report_error(f"{self.path} is larger than {MAX_RECORDS_BYTES} bytes; "
                               "it is not a file fieldc2 wrote; reading only the start")
            data = data[:MAX_RECORDS_BYTES]
        return self._consume(data, stalled=stalled)

    def _consume(self, data: bytes, *, stalled: bool) -> set[int]:
        """Take the whole lines of ``data``; leave a partial last line for later."""
        _, _, tail = data.rpartition(b"\n")
        self._partial = bool(tail) and not stalled and not _is_record(tail)
        loaded = parse_records(data[:len(data) - len(tail)] if self._partial else data,
                               RevokedCertificate, str(self.path))
        for problem in loaded.problems:
            self._report(problem, logging.WARNING)
        new: set[int] = set()
        for entry in loaded.records:
            if entry.number not in self.entries:
                self.entries[entry.number] = entry
                new.add(entry.number)
        return new

    def _report(self, problem: str, level: int) -> None:
        if problem in self.problems or len(self.problems) >= MAX_PROBLEMS:
            return  # once each, and a bounded number of them
        self.problems.append(problem)
        log.log(level, "%s", problem)

    def _report_error(self, message: str) -> None:
        if message != self._error:  # once while it lasts, not every poll
            self._error = message
            self._report(message, logging.ERROR)


def _is_record(line: bytes) -> bool:
    try:
        msgspec.json.decode(line, type=RevokedCertificate)
    except msgspec.DecodeError:
        return False
    return True


# --- serving the CRL ----------------------------------------------------------


class CrlPublisher:
    """A current CRL for the HTTP endpoints: signed afresh when a revocation
    arrives or when it is :data:`CRL_REFRESH` old, never per request."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self._watcher = RevocationWatcher(ca.directory)
        self._built_at = -math.inf
        self._der = b""

    def der(self, now: float) -> bytes:
        changed = self._watcher.poll(now)
        if changed or not self._der or now - self._built_at >= CRL_REFRESH.total_seconds():
            crl = build_crl(self.ca, self._watcher.entries.values(),
                            dt.datetime.fromtimestamp(now, dt.UTC))
            self._der = crl.public_bytes(serialization.Encoding.DER)
            self._built_at = now
        return self._der

    def pem(self, now: float) -> bytes:
        return x509.load_der_x509_crl(self.der(now)).public_bytes(serialization.Encoding.PEM)


def crl_endpoint(ca: CertificateAuthority | CrlPublisher, *,
                 encoding: Literal["der", "pem"] = "der",
                 clock: Callable[[], float] = time.time,
                 ) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette handler serving the CA's current CRL.

    ``der`` is ``application/pkix-crl`` (RFC 2585, what CRL consumers fetch);
    ``pem`` is the same CRL as text, ``application/x-pem-file``.
    """
    from starlette.responses import Response

    publisher = ca if isinstance(ca, CrlPublisher) else CrlPublisher(ca)
    headers = {"Cache-Control": "no-cache"}

    async def endpoint(request: Request) -> Response:
        if encoding == "pem":
            return Response(publisher.pem(clock()), media_type="application/x-pem-file",
                            headers=headers)
        return Response(publisher.der(clock()), media_type="application/pkix-crl",
                        headers=headers)

    return endpoint


def crl_routes(ca: CertificateAuthority, clock: Callable[[], float] = time.time) -> list[Route]:
    """``/Marti/api/crl`` (DER) and ``/crl.pem`` (PEM), sharing one publisher."""
    from starlette.routing import Route

    publisher = CrlPublisher(ca)
    return [Route("/Marti/api/crl", crl_endpoint(publisher, encoding="der", clock=clock)),
            Route("/crl.pem", crl_endpoint(publisher, encoding="pem", clock=clock))]


# --- `fieldc2 cert revoke | list | crl` ----------------------------------------


def add_cert_actions(cert_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``revoke``, ``list`` and ``crl`` to the ``fieldc2 cert`` parser."""
    revoke = cert_sub.add_parser(
        "revoke", help="revoke a client's certificates, or one certificate by serial",
        description="Revoke every certificate of a client (by name), or one certificate "
                    "(by its hex serial, as `fieldc2 cert list` prints it). A running server "
                    f"drops the client within {POLL_INTERVAL} s and refuses it afterwards; "
                    "the CRL is rewritten. Issue a new certificate to let it back in.")
    revoke.add_argument("target", metavar="NAME_OR_SERIAL",
                        help="a client's name (certificate CN) or a certificate serial")
    revoke.add_argument("--reason", choices=list(REASONS), default="unspecified",
                        help="the reason recorded in the CRL (default unspecified)")
    cert_sub.add_parser("list", help="list issued certificates and whether they are revoked",
                        description="List the certificates the CA has issued.")
    cert_sub.add_parser("crl", help="write a fresh CRL and print its path",
                        description=f"Sign a fresh CRL and write it to <data-dir>/ca/{CRL_FILE}"
                                    f" (valid {CRL_VALIDITY.days} day).")
    for name in ("revoke", "list", "crl"):
        one = cert_sub.choices[name]
        one.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration")
        one.add_argument("--data-dir", type=Path, metavar="DIR",
                         help="where the CA lives (default ./fieldc2-data)")


def run_cert(args: argparse.Namespace, config: Config, *, now: dt.datetime | None = None
             ) -> int:
    """Carry out ``fieldc2 cert revoke|list|crl``; errors are ``ConfigError``."""
    now = now or dt.datetime.now(dt.UTC)
    ca = CertificateAuthority.load(config.data_dir / "ca")
    issued = ca.issued()
    revocations = RevocationList.load(ca.directory)
    for problem in issued.problems + revocations.problems:
        print(f"fieldc2: warning: {problem}", file=sys.stderr)
    if args.cert_command == "revoke":
        new = _revoke(args, ca, issued.records, revocations, now)
        from fieldc2.audit import LOG_NAME, AuditLog

        with AuditLog(config.data_dir / LOG_NAME) as audit:
            for entry in new:
                audit.append("cert_revoked", "cli", entry.common_name, now.timestamp(),
                             serial=entry.serial, reason=entry.reason)
    elif args.cert_command == "list":
        _list(issued.records, revocations, now)
    elif args.cert_command == "crl":
        path = revocations.write_crl(ca, now)
        print(f"CRL   {path} ({len(revocations)} revoked, "
              f"next update {now + CRL_VALIDITY:%Y-%m-%d %H:%M} UTC)")
    else:
        raise ConfigError(f"unknown action `fieldc2 cert {args.cert_command}`")
    return 0


def _revoke(args: argparse.Namespace, ca: CertificateAuthority,
            issued: list[IssuedCertificate], revocations: RevocationList,
            now: dt.datetime) -> list[RevokedCertificate]:
    new = revocations.revoke(args.target, issued, now=now, reason=args.reason)
    for entry in new:
        print(f"revoked {entry.common_name}  serial {entry.serial}  ({entry.reason})")
    if not new:
        print(f"{args.target} is already revoked")
    path = revocations.write_crl(ca, now)
    print(f"CRL   {path} ({len(revocations)} revoked)")
    if new:
        print(f"a running server drops it within {POLL_INTERVAL} s and refuses it afterwards")
    return new


def _list(issued: list[IssuedCertificate], revocations: RevocationList,
          now: dt.datetime) -> None:
    print(f"{'SERIAL':40}  {'KIND':6}  {'NAME':20}  {'ISSUED':10}  {'EXPIRES':10}  STATUS")
    for cert in issued:
        revoked = revocations.entries.get(cert.number)
        if revoked is not None:
            status = f"revoked {revoked.revoked_at:%Y-%m-%d} ({revoked.reason})"
        else:
            status = "expired" if cert.not_after <= now else "valid"
        print(f"{cert.serial:40}  {cert.kind:6}  {cert.common_name:20}  "
              f"{cert.issued_at:%Y-%m-%d}  {cert.not_after:%Y-%m-%d}  {status}")

