"""Connection data packages: layout, preferences, keystores, links and QR codes.

The independent checks are pytak's own data package reader
(``pytak.client_functions.read_pref_package``) and ``tak://`` parser
(``parse_tak_url``): neither shares code with ours.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import stat
import tempfile
import warnings
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from fieldc2.config import Config, TlsConfig
from fieldc2.crypto.ca import CertificateAuthority, fingerprint
from fieldc2.errors import ConfigError
from fieldc2.package import (
    MANIFEST,
    PREFERENCES,
    add_parser,
    build_package,
    enrollment_url,
    qr_matrix,
    render_matrix,
    render_qr,
    run,
    write_package,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pytak warns about optional extras at import time
    from pytak.client_functions import parse_tak_url, read_pref_package

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
HOST = "tak.example.org"
PASSPHRASE = "s3cret&<pass>"
TRUSTSTORE = "truststore-fieldc2.p12"
#: DER of the OIDs that tell legacy from modern PKCS#12 encryption.
SHA1_OID = bytes.fromhex("06052b0e03021a")  # 1.3.14.3.2.26, the MAC digest
TRIPLE_DES_OID = bytes.fromhex("060a2a864886f70d010c0103")  # pbeWithSHAAnd3-KeyTripleDES-CBC
PBES2_OID = bytes.fromhex("06092a864886f70d01050d")  # 1.2.840.113549.1.5.13


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(data_dir=tmp_path, tls=TlsConfig(port=9089, hostnames=("localhost", HOST)))


@pytest.fixture
def ca(config: Config) -> CertificateAuthority:
    return CertificateAuthority.create(config.data_dir / "ca", now=NOW)


def package(ca: CertificateAuthority, config: Config, *, enroll: bool,
            name: str = "ALPHA-1") -> zipfile.ZipFile:
    data = build_package(ca, config, name, enroll=enroll, host=HOST, now=NOW,
                         passphrase=PASSPHRASE)
    return zipfile.ZipFile(io.BytesIO(data))


def preferences(archive: zipfile.ZipFile) -> dict[str, dict[str, tuple[str, str]]]:
    """{group: {key: (java class, text)}} of the package's .pref."""
    root = ET.fromstring(archive.read(PREFERENCES))
    assert root.tag == "preferences"
    return {group.attrib["name"]: {entry.attrib["key"]: (entry.attrib["class"], entry.text or "")
                                   for entry in group.iter("entry")}
            for group in root.iter("preference")}


def manifest(archive: zipfile.ZipFile) -> tuple[dict[str, str], list[str]]:
    root = ET.fromstring(archive.read(MANIFEST))
    assert root.tag == "MissionPackageManifest" and root.attrib["version"] == "2"
    parameters = {p.attrib["name"]: p.attrib["value"]
                  for p in root.findall("./Configuration/Parameter")}
    contents = [c.attrib["zipEntry"] for c in root.findall("./Contents/Content")]
    return parameters, contents


@pytest.mark.parametrize("enroll", [False, True])
def test_manifest_lists_exactly_the_files(ca: CertificateAuthority, config: Config,
                                          enroll: bool) -> None:
    archive = package(ca, config, enroll=enroll)
    parameters, contents = manifest(archive)
    assert archive.namelist()[0] == MANIFEST
    assert contents == archive.namelist()[1:]
    assert parameters["name"] == "ALPHA-1.zip"
    assert parameters["onReceiveDelete"] == "true"
    assert parameters["uid"] == manifest(package(ca, config, enroll=enroll))[0]["uid"]
    assert archive.testzip() is None


def test_entry_order_is_fixed(ca: CertificateAuthority, config: Config) -> None:
    first, second = package(ca, config, enroll=False), package(ca, config, enroll=False)
    assert first.namelist() == second.namelist() == [
        MANIFEST, PREFERENCES, TRUSTSTORE, "ALPHA-1.p12"]
    assert {info.date_time for info in first.infolist()} == {(2026, 3, 1, 12, 0, 0)}


def test_preferences_point_the_client_at_the_tls_port(ca: CertificateAuthority,
                                                      config: Config) -> None:
    prefs = preferences(package(ca, config, enroll=False))
    streams, app = prefs["cot_streams"], prefs["com.atakmap.app_preferences"]
    assert streams["count"] == ("class java.lang.Integer", "1")
    assert streams["connectString0"] == ("class java.lang.String", f"{HOST}:9089:ssl")
    assert streams["enabled0"] == ("class java.lang.Boolean", "true")
    assert streams["description0"][1] == config.server_name
    assert app["caLocation"][1] == f"cert/{TRUSTSTORE}"
    assert app["certificateLocation"][1] == "cert/ALPHA-1.p12"
    assert app["caPassword"][1] == app["clientPassword"][1] == PASSPHRASE
    assert not any(key.startswith("enrollForCertificateWithTrust") for key in streams)


def test_truststore_holds_only_the_ca(ca: CertificateAuthority, config: Config) -> None:
    data = package(ca, config, enroll=False).read(TRUSTSTORE)
    store = pkcs12.load_pkcs12(data, PASSPHRASE.encode())
    assert store.key is None and store.cert is None
    assert [fingerprint(c.certificate) for c in store.additional_certs] == [fingerprint(ca.cert)]
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(data, b"wrong")


def test_client_keystore_is_signed_by_the_ca(ca: CertificateAuthority, config: Config) -> None:
    data = package(ca, config, enroll=False).read("ALPHA-1.p12")
    key, cert, chain = pkcs12.load_key_and_certificates(data, PASSPHRASE.encode())
    assert key is not None and cert is not None
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ALPHA-1"
    assert [fingerprint(c) for c in chain] == [fingerprint(ca.cert)]
    assert cert.not_valid_before_utc <= NOW < cert.not_valid_after_utc
    issued = x509.load_pem_x509_certificate(
        (config.data_dir / "ca" / "clients" / "ALPHA-1.pem").read_bytes())
    assert issued == cert


@pytest.mark.parametrize("entry", [TRUSTSTORE, "ALPHA-1.p12"])
def test_keystores_use_algorithms_android_reads(ca: CertificateAuthority, config: Config,
                                                entry: str) -> None:
    """SHA-1 MAC and 3DES: ATAK rejects SHA-256 MACs (ATAK-CIV #224) and PBES2 (#156)."""
    data = package(ca, config, enroll=False).read(entry)
    assert SHA1_OID in data and TRIPLE_DES_OID in data
    assert PBES2_OID not in data


def test_enrollment_package_has_trust_and_enrollment_settings(ca: CertificateAuthority,
                                                              config: Config) -> None:
    archive = package(ca, config, enroll=True)
    assert archive.namelist() == [MANIFEST, PREFERENCES, TRUSTSTORE]
    streams = preferences(archive)["cot_streams"]
    assert streams["connectString0"][1] == f"{HOST}:9089:ssl"
    assert streams["enrollForCertificateWithTrust0"] == ("class java.lang.Boolean", "true")
    assert streams["useAuth0"] == ("class java.lang.Boolean", "true")
    assert streams["cacheCreds0"][1] == "Cache credentials"
    assert streams["caLocation0"][1] == f"cert/{TRUSTSTORE}"
    assert streams["caPassword0"][1] == PASSPHRASE
    text = archive.read(PREFERENCES).decode()
    assert "certificateLocation" not in text and "clientPassword" not in text
    assert not (config.data_dir / "ca" / "clients").exists()  # nothing was issued


def test_pytak_reads_the_package(ca: CertificateAuthority, config: Config, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # pytak's extracted files
    path = write_package(ca, config, "ALPHA-1", enroll=False, host=HOST, now=NOW,
                         passphrase=PASSPHRASE)
    read = read_pref_package(str(path))
    assert read["COT_URL"] == f"ssl://{HOST}:9089"
    cert = x509.load_pem_x509_certificate(Path(read["PYTAK_TLS_CLIENT_CERT"]).read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ALPHA-1"
    ca_pem = x509.load_pem_x509_certificate(Path(read["PYTAK_TLS_CLIENT_CAFILE"]).read_bytes())
    assert fingerprint(ca_pem) == fingerprint(ca.cert)
    assert Path(read["PYTAK_TLS_CLIENT_KEY"]).read_bytes().startswith(b"-----BEGIN PRIVATE KEY")


def test_written_package_is_private(ca: CertificateAuthority, config: Config) -> None:
    path = write_package(ca, config, "ALPHA-1", enroll=True, host=HOST, now=NOW)
    assert path == config.data_dir / "packages" / "ALPHA-1.zip"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert zipfile.ZipFile(path).namelist() == [MANIFEST, PREFERENCES, TRUSTSTORE]
    assert [p.name for p in path.parent.iterdir()] == ["ALPHA-1.zip"]


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "two words", "x" * 65,
                                  "truststore-fieldc2"])
def test_bad_names_are_refused(ca: CertificateAuthority, config: Config, name: str) -> None:
    with pytest.raises(ConfigError):
        build_package(ca, config, name, enroll=False, host=HOST, now=NOW)


@pytest.mark.parametrize("host", ["", "fe80::1", "a b", "http://x"])
def test_bad_hosts_are_refused(ca: CertificateAuthority, config: Config, host: str) -> None:
    with pytest.raises(ConfigError):
        build_package(ca, config, "ALPHA-1", enroll=True, host=host, now=NOW)


def test_empty_passphrase_is_refused(ca: CertificateAuthority, config: Config) -> None:
    with pytest.raises(ConfigError):
        build_package(ca, config, "ALPHA-1", enroll=True, host=HOST, now=NOW, passphrase="")


def test_enrollment_url() -> None:
    url = enrollment_url(HOST, "alice smith", "p&ss w+rd=%")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("tak", "com.atakmap.app", "/enroll")
    query = parse_qs(parts.query, strict_parsing=True)
    assert query == {"host": [HOST], "username": ["alice smith"], "token": ["p&ss w+rd=%"]}
    assert "+" not in parts.query  # Android decodes '+' in a query as a space
    assert parse_tak_url(url) == {"hostname": HOST, "port": 8089, "username": "alice smith",
                                  "token": "p&ss w+rd=%", "explicit_port": False}


def test_enrollment_url_names_a_port_other_than_8089() -> None:
    query = parse_qs(urlsplit(enrollment_url(HOST, "u", "t", port=9089)).query)
    assert query["host"] == [f"{HOST}:9089"]
    with pytest.raises(ConfigError):
        enrollment_url(HOST, "u", "")


def test_qr_is_only_half_blocks_and_newlines() -> None:
    text = render_qr(enrollment_url(HOST, "alice", "secret"))
    assert text and text.endswith("\n")
    assert set(text) <= set(" \u2580\u2584\u2588\n")
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[0] == "\u2588" * len(lines[0])  # the quiet zone, light on a dark terminal


@pytest.mark.parametrize("dark_background", [True, False])
def test_qr_rendering_keeps_every_module(dark_background: bool) -> None:
    matrix = qr_matrix(enrollment_url(HOST, "bob", "pw"))
    assert len(matrix) % 2 == 1  # QR sizes are odd, so the last text line is padded
    lines = render_matrix(matrix, dark_background=dark_background).splitlines()
    decoded = []
    for line in lines:
        top = [ch in "\u2580\u2588" for ch in line]
        bottom = [ch in "\u2584\u2588" for ch in line]
        decoded += [top, bottom]
    dark = [[drawn != dark_background for drawn in row] for row in decoded]
    assert dark[:len(matrix)] == matrix
    assert dark[len(matrix):] == [[False] * len(matrix[0])]  # padding is light quiet zone


def test_cli_writes_package_and_prints_link(ca: CertificateAuthority, config: Config,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["package", "BRAVO", "--enroll", "--username", "bravo",
                              "--password", "pw"])
    assert run(args, config) == 0
    out = capsys.readouterr()
    assert str(config.data_dir / "packages" / "BRAVO.zip") in out.out
    url = next(line for line in out.out.splitlines() if line.startswith("tak://"))
    assert parse_tak_url(url)["hostname"] == HOST  # the first non-loopback name
    assert "\u2588" in out.out and out.err == ""


def test_cli_without_qr_and_credentials(ca: CertificateAuthority, config: Config,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["package", "CHARLIE", "--host", "10.0.0.5", "--no-qr"])
    assert run(args, config) == 0
    out = capsys.readouterr()
    assert "10.0.0.5:9089:ssl" in out.out and "tak://" not in out.out
    assert "not in [tls] hostnames" in out.err
    with pytest.raises(ConfigError):
        run(parser.parse_args(["package", "D", "--username", "only"]), config)


def test_cli_needs_a_reachable_host(ca: CertificateAuthority, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(ConfigError, match="--host"):
        run(parser.parse_args(["package", "ECHO"]), Config(data_dir=tmp_path))


def test_cert_issue_p12_uses_algorithms_android_reads(ca: CertificateAuthority) -> None:
    """`fieldc2 cert issue` writes the same legacy encoding as the packages."""
    paths = ca.write_client("standalone", now=NOW)
    data = paths["p12"].read_bytes()
    assert SHA1_OID in data and TRIPLE_DES_OID in data
    assert PBES2_OID not in data
