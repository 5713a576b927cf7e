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

Time is an argument (``now``) everywhere, so tests can make expired and
not-yet-valid certificates without waiting.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

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


def new_key(key_type: str) -> PrivateKey:
    if key_type == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ConfigError(f"unknown key type {key_type!r}; choose one of {KEY_TYPES}")


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
        return builder.sign(self.key, hashes.SHA256())

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
            serialization.BestAvailableEncryption(passphrase.encode()))
        _write_private(paths["p12"], p12)
        return paths
