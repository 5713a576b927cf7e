"""Connection data packages: the zip a TAK client imports to join this post.

ATAK, WinTAK and iTAK import a *mission package*, a zip with a
``MANIFEST/manifest.xml``, holding a ``.pref`` preferences file and PKCS#12
keystores.  ``fieldc2 package NAME`` writes one in one of two forms:

* **certificate** (default): the CA as a truststore and a client certificate
  issued now, so the device connects at once;
* **enrollment** (``--enroll``): the truststore only.  The device asks its user
  for a username and password and enrolls for a certificate on port 8446.

Layout, flat because iOS clients look for the files at the root; ATAK reads
content paths relative to the folder that holds ``MANIFEST/``::

    MANIFEST/manifest.xml    MissionPackageManifest v2: uid, name, onReceiveDelete, Contents
    config.pref              cot_streams + com.atakmap.app_preferences
    truststore-SERVER.p12    the CA certificate only
    NAME.p12                 key, certificate and CA (certificate form only)

What this relies on (ATAK-CIV 5.5 sources unless named):

* ATAK's importer moves every ``.p12`` in a package to ``<atak>/cert/`` under
  its own name, so the ``.pref`` refers to ``cert/FILE`` (``ImportCertSort``,
  ``AtakCertificateDatabaseBase.importCertificate``).
* The certificate form uses the app-wide ``caLocation``, ``caPassword``,
  ``certificateLocation`` and ``clientPassword`` keys.  TAK Server's,
  OpenTAKServer's and taky's packages do the same, and iOS clients and pytak
  read no other keys.  When the device already has servers, ATAK ties these
  certificates to the new connection rather than replacing its defaults.
* Enrollment flags only work per connection: ``enrollForCertificateWithTrust0``,
  ``useAuth0`` and ``cacheCreds0``, with the CA in ``caLocation0`` and
  ``caPassword0`` (``PreferenceControl``, ``DeviceSetupWizard``).  The
  enrollment port is the app preference ``apiCertEnrollmentPort``, 8446 by
  default (``SslNetCotPort``).
* Keystores use the legacy PKCS#12 algorithms: a SHA-1 MAC and 3DES.  Android's
  BouncyCastle rejects a SHA-256 MAC (ATAK-CIV issue #224) and PBES2 keys
  (#156).  TAK Server's ``makeCert.sh`` runs ``openssl pkcs12 -legacy`` for
  the same reason.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import io
import ipaddress
import os
import re
import sys
import uuid
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from fieldc2.config import Config
from fieldc2.crypto.ca import CertificateAuthority, fingerprint, tak_p12_encryption
from fieldc2.errors import ConfigError, MissingExtraError

#: The TAK clients' customary keystore passphrase.
DEFAULT_PASSPHRASE = "atakatak"
#: Streaming port ATAK assumes when a ``tak://`` link's host has none
#: (``CertificateEnrollmentClient.onEnrollmentOk``).
STREAM_PORT = 8089
#: Port ATAK enrolls on unless the ``apiCertEnrollmentPort`` preference says otherwise.
ENROLL_PORT = 8446
MANIFEST = "MANIFEST/manifest.xml"
PREFERENCES = "config.pref"
#: Where ATAK puts imported ``.p12`` files, relative to its root directory.
CERT_DIR = "cert/"
#: PBKDF iterations in the keystores, as ``openssl pkcs12 -legacy`` writes
#: them.  The passphrase is the weak part; more rounds would not change that.
#: ATAK's own English value for "cache username and password" (``cache_creds_both``).
CACHE_CREDENTIALS = "Cache credentials"
#: A device name is a file name, a zip entry and a ``.p12`` name on the device.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_XML_DECLARATION = b"<?xml version='1.0' encoding='ASCII' standalone='yes'?>\n"
#: Modules of light margin around a QR code: the QR specification's minimum.
QR_QUIET_ZONE = 4
#: Half-block characters for (top drawn, bottom drawn), indexed top + 2 * bottom.
_HALF_BLOCKS = (" ", "\u2580", "\u2584", "\u2588")


@dataclass(frozen=True)
class Connection:
    """The one server connection a package's ``.pref`` describes."""

    description: str
    """Name the client shows for the server."""
    connect_string: str
    """``host:port:ssl``."""
    truststore: str
    """File name of the CA truststore in the package."""
    passphrase: str
    """Passphrase of both keystores."""
    client_cert: str | None
    """File name of the client keystore; ``None`` when the device enrolls."""


# --- checks ------------------------------------------------------------------------


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{name!r} cannot name a device package: use 1-64 letters, digits, "
                          "'.', '_' or '-', starting with a letter or digit")


def check_host(host: str) -> None:
    """TAK connect strings are ``host:port:protocol``, so a host has no colon."""
    if not host or ":" in host or "/" in host or any(c.isspace() for c in host):
        raise ConfigError(f"{host!r} cannot be a TAK server address: give a DNS name or an "
                          "IPv4 address (an IPv6 literal does not fit in host:port:ssl)")


def connect_string(host: str, port: int) -> str:
    check_host(host)
    return f"{host}:{port}:ssl"


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_host(config: Config) -> str:
    """The first name or address in the server certificate that a device could reach."""
    for candidate in (*config.tls.hostnames, *config.tls.ips):
        if not _is_loopback(candidate):
            return candidate
    raise ConfigError("no address that devices can reach: pass --host, and list it in [tls] "
                      "hostnames or ips so that the server certificate names it")


# --- keystores ---------------------------------------------------------------------


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else "CA"
    return value if isinstance(value, str) else value.decode(errors="replace")


def truststore(ca: CertificateAuthority, passphrase: str) -> bytes:
    """The CA certificate alone, named by its CN as ``openssl -caname`` does."""
    entry = pkcs12.PKCS12Certificate(ca.cert, _common_name(ca.cert).encode())
    return pkcs12.serialize_key_and_certificates(None, None, None, [entry],
                                                 tak_p12_encryption(passphrase))


def client_keystore(ca: CertificateAuthority, name: str, *, now: dt.datetime, days: int,
                    passphrase: str) -> bytes:
    """Issue ``name`` a certificate with :meth:`CertificateAuthority.write_client`
    and re-encode its key and certificate with algorithms TAK clients read."""
    encryption = tak_p12_encryption(passphrase)
    paths = ca.write_client(name, now=now, days=days, passphrase=passphrase)
    cert = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
    key = serialization.load_pem_private_key(paths["key"].read_bytes(), None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{paths['key']} is not an RSA or EC key")
    return pkcs12.serialize_key_and_certificates(name.encode(), key, cert, [ca.cert], encryption)


# --- documents ---------------------------------------------------------------------


def _preference(root: ET.Element, name: str,
                entries: Sequence[tuple[str, str | bool | int]]) -> None:
    group = ET.SubElement(root, "preference", {"version": "1", "name": name})
    for key, value in entries:
        if isinstance(value, bool):
            kind, text = "Boolean", str(value).lower()
        elif isinstance(value, int):
            kind, text = "Integer", str(value)
        else:
            kind, text = "String", value
        ET.SubElement(group, "entry", {"key": key, "class": f"class java.lang.{kind}"}).text = text


def _ascii(root: ET.Element) -> bytes:
    """Non-ASCII text becomes character references, so any XML parser reads it."""
    body: bytes = ET.tostring(root, encoding="us-ascii")
    return body + b"\n"


def preferences_xml(connection: Connection) -> bytes:
    """The ``.pref``: one streaming connection and where its keystores are."""
    trust = CERT_DIR + connection.truststore
    streams: list[tuple[str, str | bool | int]] = [
        ("count", 1), ("description0", connection.description), ("enabled0", True),
        ("connectString0", connection.connect_string)]
    app: list[tuple[str, str | bool | int]] = [("displayServerConnectionWidget", True)]
    if connection.client_cert is None:
        streams += [("caLocation0", trust), ("caPassword0", connection.passphrase),
                    ("enrollForCertificateWithTrust0", True), ("useAuth0", True),
                    ("cacheCreds0", CACHE_CREDENTIALS)]
    else:
        app += [("caLocation", trust), ("caPassword", connection.passphrase),
                ("certificateLocation", CERT_DIR + connection.client_cert),
                ("clientPassword", connection.passphrase)]
    root = ET.Element("preferences")
    _preference(root, "cot_streams", streams)
    _preference(root, "com.atakmap.app_preferences", app)
    ET.indent(root)
    return _XML_DECLARATION + _ascii(root)


def manifest_xml(uid: str, label: str, entries: Sequence[str]) -> bytes:
    """``onReceiveDelete``: the client deletes the zip, which holds a key, once imported."""
    root = ET.Element("MissionPackageManifest", {"version": "2"})
    configuration = ET.SubElement(root, "Configuration")
    for name, value in (("uid", uid), ("name", label), ("onReceiveDelete", "true")):
        ET.SubElement(configuration, "Parameter", {"name": name, "value": value})
    contents = ET.SubElement(root, "Contents")
    for entry in entries:
        ET.SubElement(contents, "Content", {"ignore": "false", "zipEntry": entry})
    ET.indent(root)
    return _ascii(root)


def package_uid(ca: CertificateAuthority, host: str, name: str, enroll: bool) -> str:
    """Stable per server, device and form: a reissued package replaces the old one."""
    form = "enroll" if enroll else "certificate"
    return str(uuid.uuid5(uuid.NAMESPACE_URL,
                          f"fieldc2:{fingerprint(ca.cert)}:{host}:{name}:{form}"))


def _zip(files: Sequence[tuple[str, bytes]], now: dt.datetime) -> bytes:
    stamp = now.astimezone(dt.UTC).timetuple()[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


# --- packages ----------------------------------------------------------------------


def _truststore_name(config: Config) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", config.server_name).strip(".-") or "fieldc2"
    return f"truststore-{slug}.p12"


def build_package(ca: CertificateAuthority, config: Config, name: str, *, enroll: bool,
                  host: str, now: dt.datetime, passphrase: str = DEFAULT_PASSPHRASE,
                  days: int = 365) -> bytes:
    """The zip for device ``name`` connecting to ``host`` on the TLS port.

    Without ``enroll`` this issues ``name`` a client certificate (also written
    under ``<data_dir>/ca/clients/``).  Entries come in a fixed order.
    """
    check_name(name)
    stream = connect_string(host, config.tls.port)
    trust_name = _truststore_name(config)
    client_name = None if enroll else f"{name}.p12"
    if client_name == trust_name:
        raise ConfigError(f"{name!r} is the truststore's name; choose another device name")
    files = [(trust_name, truststore(ca, passphrase))]
    if client_name is not None:
        files.append((client_name, client_keystore(ca, name, now=now, days=days,
                                                   passphrase=passphrase)))
    connection = Connection(description=config.server_name, connect_string=stream,
                            truststore=trust_name, passphrase=passphrase,
                            client_cert=client_name)
    files.insert(0, (PREFERENCES, preferences_xml(connection)))
    manifest = manifest_xml(package_uid(ca, host, name, enroll), f"{name}.zip",
                            [entry for entry, _ in files])
    return _zip([(MANIFEST, manifest), *files], now)


def package_path(config: Config, name: str) -> Path:
    return config.data_dir / "packages" / f"{name}.zip"


def write_package(ca: CertificateAuthority, config: Config, name: str, *, enroll: bool,
                  host: str, now: dt.datetime, passphrase: str = DEFAULT_PASSPHRASE,
                  days: int = 365) -> Path:
    """Write :func:`build_package`'s zip to ``<data_dir>/packages/NAME.zip``, 0600.

    The certificate form holds a private key, so the directory is 0700 and the
    file is never readable by others, not even while it is being written."""
    data = build_package(ca, config, name, enroll=enroll, host=host, now=now,
                         passphrase=passphrase, days=days)
    path = package_path(config, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)
    os.replace(partial, path)
    return path


# --- enrollment links and QR codes -------------------------------------------------


def enrollment_url(host: str, username: str, token: str, *, port: int = STREAM_PORT) -> str:
    """The ``tak://`` link that ATAK and iTAK take from a QR code.

    ATAK enrolls with ``username`` and ``token`` on port 8446 of ``host``, then
    streams to ``host:port:ssl``; the port is written only when it is not
    ATAK's default 8089 (pytak reads an explicit port as its own API port).
    """
    check_host(host)
    if not username or not token:
        raise ConfigError("a tak:// enrollment link needs both a username and a password")
    address = host if port == STREAM_PORT else f"{host}:{port}"
    query = urlencode({"host": address, "username": username, "token": token},
                      safe=":", quote_via=quote)
    return f"tak://com.atakmap.app/enroll?{query}"


def qr_matrix(text: str) -> list[list[bool]]:
    """QR modules of ``text`` (``True`` = dark), quiet zone included."""
    try:
        # Imported by name: qrcode ships no type information.
        qrcode = importlib.import_module("qrcode")
    except ImportError as exc:
        raise MissingExtraError("drawing a QR code needs the qrcode package: "
                                "pip install qrcode") from exc
    code = qrcode.QRCode(border=QR_QUIET_ZONE,
                         error_correction=qrcode.constants.ERROR_CORRECT_L)
    code.add_data(text)
    code.make(fit=True)
    return [[bool(module) for module in row] for row in code.get_matrix()]


def render_matrix(matrix: Sequence[Sequence[bool]], *, dark_background: bool = True) -> str:
    """Two module rows per text line, in half blocks.

    A terminal draws characters in its foreground colour, so on a dark
    background the *light* modules are the ones drawn, and the reverse on a
    light background.  An odd last row is paired with a row of quiet zone."""
    drawn = [[module != dark_background for module in row] for row in matrix]
    if len(drawn) % 2:
        drawn.append([dark_background] * len(drawn[0]))
    lines = ("".join(_HALF_BLOCKS[top + 2 * bottom] for top, bottom in zip(upper, lower,
                                                                           strict=True))
             for upper, lower in zip(drawn[::2], drawn[1::2], strict=True))
    return "".join(line + "\n" for line in lines)


def render_qr(text: str, *, dark_background: bool = True) -> str:
    return render_matrix(qr_matrix(text), dark_background=dark_background)


# --- command line ------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``fieldc2 package NAME [--enroll] ...``."""
    parser = sub.add_parser(
        "package", help="a connection data package for ATAK, iTAK or WinTAK",
        description="Write the zip that a TAK client imports to connect to this post: the CA "
                    "as a truststore and a new client certificate, or with --enroll settings "
                    "to enroll for one with a username and password on port 8446. With "
                    "--username and --password, also print a tak:// enrollment link and its "
                    "QR code.")
    parser.add_argument("name", help="the device's name: certificate CN and package file name")
    parser.add_argument("--enroll", action="store_true",
                        help="no certificate in the package: the device enrolls for one")
    parser.add_argument("--host", help="address devices use to reach this post (default: the "
                                       "first non-loopback entry of [tls] hostnames and ips)")
    parser.add_argument("--username", help="user in the tak:// enrollment link")
    parser.add_argument("--password", help="that user's password or one-time token "
                                           "(it ends up in your shell history)")
    parser.add_argument("--passphrase", default=DEFAULT_PASSPHRASE,
                        help="passphrase of the .p12 files (default atakatak, the TAK default)")
    parser.add_argument("--days", type=int, default=365,
                        help="validity of the client certificate (default 365)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration")
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="where the CA lives (default ./fieldc2-data)")
    parser.add_argument("--no-qr", action="store_true", help="print the link without a QR code")
    parser.add_argument("--light-terminal", action="store_true",
                        help="draw the QR code for a terminal with a light background")


def run(args: argparse.Namespace, config: Config) -> int:
    if bool(args.username) != bool(args.password):
        raise ConfigError("--username and --password go together: the link carries both")
    host: str = args.host or default_host(config)
    ca = CertificateAuthority.load(config.data_dir / "ca")
    path = write_package(ca, config, args.name, enroll=args.enroll, host=host,
                         now=dt.datetime.now(dt.UTC), passphrase=args.passphrase,
                         days=args.days)
    stream = connect_string(host, config.tls.port)
    if args.enroll:
        print(f"wrote {path}: {args.name} enrolls on {host}:{ENROLL_PORT}, then streams "
              f"to {stream}")
    else:
        print(f"wrote {path}: {args.name} streams to {stream}")
        print("it holds a private key: delete it once the device has imported it")
    if host not in (*config.tls.hostnames, *config.tls.ips):
        print(f"fieldc2: warning: {host} is not in [tls] hostnames or ips, so the server "
              "certificate does not name it", file=sys.stderr)
    if args.username:
        url = enrollment_url(host, args.username, args.password, port=config.tls.port)
        print(url)
        if not args.no_qr:
            try:
                print(render_qr(url, dark_background=not args.light_terminal), end="")
            except MissingExtraError as exc:
                print(f"fieldc2: {exc}", file=sys.stderr)
    return 0
