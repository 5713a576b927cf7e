"""The built-in certificate authority: one CA per command post.

Keys are RSA-2048 by default.  P-256 is smaller and faster, and modern ATAK
accepts it, but RSA-2048 is what TAK Server's own certificate scripts make and
what every TAK client (ATAK on old Android key stores, WinTAK, iTAK) has been
shown to import from a ``.p12``; compatibility wins for a server whose point
is that clients connect unchanged.  ``key_type = "p256"`` switches.

Files, under ``<data_dir>/ca/`` (keys written 0600, the directory 0700)::

    ca.pem  ca.key          the authority
    server.pem server.key   the server's certificate, reissued when the
                            configured names change or it nears expiry
    clients/NAME.pem .key .p12   client certificates issued by `fieldc2 cert`
    issued.jsonl            one line per certificate this authority signed
                            (:class:`IssuedCertificate`), appended as it signs;
                            what `fieldc2 cert list` and revoke-by-name read
    revoked.jsonl crl.pem   revocations (:mod:`fieldc2.crypto.revocation`)

Time is an argument (``now``) everywhere, so tests can make expired and
not-yet-valid certificates without waiting.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Generic, Literal, NamedTuple, TypeVar

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fieldc2.errors import ConfigError

KEY_TYPES = ("rsa2048", "p256")
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
#: A server certificate is reissued when it has less than this left.
RENEW_BEFORE = dt.timedelta(days=30)
#: Allowance for client clocks that run a little behind ours.
CLOCK_SKEW = dt.timedelta(minutes=5)
#: The registry of issued certificates.
REGISTRY = "issued.jsonl"
#: Largest record file (registry or revocation list) read whole.  A line is
#: about 200 bytes, so this is some 80,000 certificates: far beyond what one
#: command post issues, small enough that reading it cannot exhaust memory.
MAX_RECORDS_BYTES = 16 * 1024 * 1024
#: Longest record line; a real one is about 200 bytes.  Longer is corruption.
MAX_RECORD_LINE = 4096

#: A certificate serial number as upper-case hex without separators, the way
#: ``ssl`` reports ``serialNumber`` (RFC 5280 allows at most 20 octets).
SerialHex = Annotated[str, msgspec.Meta(pattern="^[0-9A-F]{1,40}$")]
Record = TypeVar("Record", bound=msgspec.Struct)


class IssuedCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """One certificate this authority signed: a line of ``issued.jsonl``."""

    serial: SerialHex
    common_name: str
    kind: Literal["client", "server"]
    issued_at: dt.datetime
    not_after: dt.datetime

    @property
    def number(self) -> int:
        """The serial as an integer, as :mod:`cryptography` has it."""
        return int(self.serial, 16)


class Loaded(NamedTuple, Generic[Record]):
    """Records read from a ``.jsonl`` file, and what was wrong with the rest."""

    records: list[Record]
    problems: list[str]
    """One message per unreadable line (``file:line: why``); never fatal."""


def serial_hex(serial: int) -> str:
    return f"{serial:X}"


def parse_records(data: bytes, kind: type[Record], source: str, first_line: int = 1
                  ) -> Loaded[Record]:
    """Decode one record per line; a bad line is reported and skipped."""
    decoder = msgspec.json.Decoder(kind)
    loaded: Loaded[Record] = Loaded([], [])
    for number, line in enumerate(data.split(b"\n"), first_line):
        if not line.strip():
            continue
        if len(line) > MAX_RECORD_LINE:
            loaded.problems.append(f"{source}:{number}: line longer than {MAX_RECORD_LINE} "
                                   "bytes; ignored")
            continue
        try:
            loaded.records.append(decoder.decode(line))
        except msgspec.DecodeError as exc:
            loaded.problems.append(f"{source}:{number}: {exc}; line ignored")
    return loaded


def read_records(path: Path, kind: type[Record]) -> Loaded[Record]:
    """All records of a ``.jsonl`` file (none if it does not exist)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_RECORDS_BYTES + 1)
    except FileNotFoundError:
        return Loaded([], [])
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if len(data) > MAX_RECORDS_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_RECORDS_BYTES} bytes; "
                          "it is not a file fieldc2 wrote")
    return parse_records(data, kind, str(path))


def append_records(path: Path, records: Iterable[msgspec.Struct]) -> None:
    """Append lines in one write, flushed to disk: a reader in another
    process sees either none of them or whole lines (plus, at worst, a
    partial last line that it leaves until it is complete)."""
    data = b"".join(msgspec.json.encode(record) + b"\n" for record in records)
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a hand-edited file without a final newline
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc


def new_key(key_type: str) -> PrivateKey:
    if key_type == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ConfigError(f"unknown key type {key_type!r}; choose one of {KEY_TYPES}")


#: PBKDF rounds of the legacy PKCS#12 encryption TAK clients read.
P12_KDF_ROUNDS = 2048


def tak_p12_encryption(passphrase: str) -> serialization.KeySerializationEncryption:
    """PKCS#12 encryption every TAK client can open: SHA-1 MAC, 3DES keys.

    ATAK's BouncyCastle rejects a SHA-256 MAC (ATAK-CIV #224) and PBES2 keys
    (#156); TAK Server's certificate scripts use ``openssl pkcs12 -legacy``
    for the same reason.  The passphrase, not the cipher, is the protection
    that matters for a file that travels by data package or USB.
    """
    if not passphrase:
        raise ConfigError("the keystore passphrase must not be empty")
    return (serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(P12_KDF_ROUNDS)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
            .build(passphrase.encode()))


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as colon-separated hex, as TAK tools print it."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode(errors="replace")


def _issued_record(cert: x509.Certificate, kind: Literal["client", "server"],
                   now: dt.datetime) -> IssuedCertificate:
    return IssuedCertificate(serial=serial_hex(cert.serial_number), common_name=common_name(cert),
                             kind=kind, issued_at=now.astimezone(dt.UTC),
                             not_after=cert.not_valid_after_utc)


class CertificateAuthority:
    """Issues the server's and the clients' certificates."""

    def __init__(self, directory: Path, cert: x509.Certificate, key: PrivateKey,
                 key_type: str = "rsa2048") -> None:
        self.directory = directory
        self.cert = cert
        self.key = key
        self.key_type = key_type

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @classmethod
    def exists(cls, directory: Path) -> bool:
        return (directory / "ca.pem").exists() and (directory / "ca.key").exists()

    @classmethod
    def create(cls, directory: Path, *, now: dt.datetime, name: str = "fieldc2 CA",
               key_type: str = "rsa2048", days: int = 3650) -> CertificateAuthority:
        """Make a new authority; refuses to overwrite one."""
        if cls.exists(directory):
            raise ConfigError(f"a CA already exists in {directory}; `fieldc2 ca show` shows it")
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        key = new_key(key_type)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fieldc2")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(directory / "ca.key", _key_pem(key))
        (directory / "ca.pem").write_bytes(_cert_pem(cert))
        (directory / REGISTRY).touch(0o600)
        return cls(directory, cert, key, key_type)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        if not cls.exists(directory):
            raise ConfigError(f"no CA in {directory}; create one with `fieldc2 ca init`")
        cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{directory / 'ca.key'} is not an RSA or EC key")
        key_type = "p256" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsa2048"
        return cls(directory, cert, key, key_type)

    @classmethod
    def load_or_create(cls, directory: Path, *, now: dt.datetime,
                       key_type: str = "rsa2048") -> CertificateAuthority:
        if cls.exists(directory):
            return cls.load(directory)
        return cls.create(directory, now=now, key_type=key_type)

    def issue(self, common_name: str, *, now: dt.datetime, days: int = 365,
              server: bool = False, hostnames: Sequence[str] = (),
              ips: Sequence[str] = (), not_before: dt.datetime | None = None,
              ) -> tuple[x509.Certificate, PrivateKey]:
        """A new key and a certificate for it, signed by this authority."""
        key = new_key(self.key_type)
        cert = self._sign(key.public_key(), common_name, now=now, days=days, server=server,
                          hostnames=hostnames, ips=ips, not_before=not_before)
        return cert, key

    def sign_csr(self, csr: x509.CertificateSigningRequest, common_name: str, *,
                 now: dt.datetime, days: int = 365) -> x509.Certificate:
        """Sign a client's request (enrollment); the CN is ours to choose."""
        if not csr.is_signature_valid:
            raise ConfigError("the certificate request's signature is invalid")
        public = csr.public_key()
        if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ConfigError("only RSA and EC keys can be certified")
        return self._sign(public, common_name, now=now, days=days)

    @property
    def registry_path(self) -> Path:
        return self.directory / REGISTRY

    def issued(self) -> Loaded[IssuedCertificate]:
        """Every certificate this authority has signed, oldest first."""
        self._ensure_registry()
        loaded = read_records(self.registry_path, IssuedCertificate)
        # Two processes starting the registry at once both write it: say each once.
        unique: dict[str, IssuedCertificate] = {}
        for record in loaded.records:
            unique.setdefault(record.serial, record)
        return Loaded(list(unique.values()), loaded.problems)

    def _record(self, cert: x509.Certificate, kind: Literal["client", "server"],
                now: dt.datetime) -> None:
        self._ensure_registry()
        append_records(self.registry_path, [_issued_record(cert, kind, now)])

    def _ensure_registry(self) -> None:
        """Start the registry from the certificate files of an authority made
        before there was one, so that its clients can be listed and revoked."""
        if self.registry_path.exists():
            return
        files: list[tuple[Path, Literal["client", "server"]]] = [
            (path, "client") for path in sorted((self.directory / "clients").glob("*.pem"))]
        files.append((self.directory / "server.pem", "server"))
        records: list[IssuedCertificate] = []
        for path, kind in files:
            try:
                cert = x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, ValueError):
                continue  # not there, or not a certificate: nothing to record
            if cert.issuer == self.cert.subject:
                records.append(_issued_record(cert, kind, cert.not_valid_before_utc))
        append_records(self.registry_path, records)

    def _sign(self, public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, common_name: str, *,
              now: dt.datetime, days: int, server: bool = False,
              hostnames: Sequence[str] = (), ips: Sequence[str] = (),
              not_before: dt.datetime | None = None) -> x509.Certificate:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fieldc2")]))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - CLOCK_SKEW)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        self._record(cert, "server" if server else "client", now)
        return cert

    def server_credentials(self, hostnames: Sequence[str], ips: Sequence[str], *,
                           now: dt.datetime) -> tuple[Path, Path]:
        """Paths of the server's certificate and key, (re)issued when needed."""
        cert_path, key_path = self.directory / "server.pem", self.directory / "server.key"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if self._still_good(cert, hostnames, ips, now):
                return cert_path, key_path
        cert, key = self.issue(hostnames[0] if hostnames else "fieldc2", now=now, server=True,
                               hostnames=hostnames, ips=ips, days=825)
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(_cert_pem(cert) + _cert_pem(self.cert))
        return cert_path, key_path

    def _still_good(self, cert: x509.Certificate, hostnames: Sequence[str],
                    ips: Sequence[str], now: dt.datetime) -> bool:
        if cert.issuer != self.cert.subject or cert.not_valid_after_utc - now < RENEW_BEFORE:
            return False
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return not hostnames and not ips
        have = set(san.get_values_for_type(x509.DNSName))
        have_ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
        return have == set(hostnames) and have_ips == {str(ipaddress.ip_address(i)) for i in ips}

    def write_client(self, name: str, *, now: dt.datetime, days: int = 365,
                     passphrase: str = "atakatak") -> dict[str, Path]:
        """Issue a client certificate and write it as PEM and as a ``.p12``.

        The ``.p12`` holds the key, the certificate and the CA, protected by
        ``passphrase`` ("atakatak" is the TAK clients' customary default).
        """
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"{name!r} is not usable as a client name")
        cert, key = self.issue(name, now=now, days=days)
        out = self.directory / "clients"
        out.mkdir(exist_ok=True)
        os.chmod(out, 0o700)
        paths = {"cert": out / f"{name}.pem", "key": out / f"{name}.key",
                 "p12": out / f"{name}.p12"}
        paths["cert"].write_bytes(_cert_pem(cert))
        _write_private(paths["key"], _key_pem(key))
        p12 = pkcs12.serialize_key_and_certificates(
            name.encode(), key, cert, [self.cert],
            tak_p12_encryption(passphrase))
        _write_private(paths["p12"], p12)
        return paths
