"""TLS for the CoT stream: client certificates required, TLS 1.2 or newer."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from fieldc2.config import Config
from fieldc2.crypto.ca import CertificateAuthority

#: TLS 1.2 suites: forward secret AEAD only.  TLS 1.3 suites are all modern.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_context(ca: CertificateAuthority, cert: Path, key: Path) -> ssl.SSLContext:
    """A server context that accepts only clients holding a certificate from ``ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(ca.cert_path))
    context.load_cert_chain(str(cert), str(key))
    context.options |= ssl.OP_NO_COMPRESSION
    return context


def stream_context(config: Config, now: dt.datetime) -> tuple[ssl.SSLContext, CertificateAuthority]:
    """The CA (created on first use) and a server context for the stream port."""
    ca = CertificateAuthority.load_or_create(config.data_dir / "ca", now=now,
                                             key_type=config.tls.key_type)
    cert, key = ca.server_credentials(config.tls.hostnames, config.tls.ips, now=now)
    return server_context(ca, cert, key), ca


def peer_common_name(peercert: dict[str, object] | None) -> str:
    """The CN of a verified peer certificate, as ``ssl`` reports it."""
    if not peercert:
        return ""
    for rdn in peercert.get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""
