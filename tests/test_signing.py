"""Ed25519 signatures on orders: valid, tampered, wrong key, replayed elsewhere; key files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldc2.crypto.radio_keys import channel_id_of
from fieldc2.crypto.signing import (
    SIGNATURE_BYTES,
    KeyRing,
    Signer,
    load_private_key,
    load_public_key,
    public_key_bytes,
    save_private_key,
    save_public_key,
    signed_bytes,
)
from fieldc2.errors import ConfigError, FrameRejected

NORTH, SOUTH = channel_id_of("sar-north"), channel_id_of("sar-south")
ORDER = b"order ORD-17 to team-2: search sector B4 by 14:00"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def ring(channel: int = NORTH) -> KeyRing:
    keys = KeyRing(channel)
    keys.add("ops-lead", KEY.public_key(), sender=0)
    keys.add("team-2", public_key_bytes(OTHER.public_key()), sender=12)
    return keys


def rejected(keys: KeyRing, origin: str | int, message: bytes, signature: bytes) -> str:
    with pytest.raises(FrameRejected) as caught:
        keys.verify(origin, message, signature)
    return caught.value.reason


def test_the_signed_bytes_are_domain_channel_originator_content() -> None:
    assert signed_bytes(0x1234, "ops", b"xyz") == b"fieldc2-sig/v1\x00\x12\x34\x03opsxyz"
    with pytest.raises(ConfigError):
        signed_bytes(NORTH, "", b"")
    with pytest.raises(ConfigError):
        signed_bytes(NORTH, "x" * 256, b"")


def test_valid_signature_verifies_by_uid_and_by_sender_id() -> None:
    signature = Signer(KEY, channel_id=NORTH, originator="ops-lead").sign(ORDER)
    assert len(signature) == SIGNATURE_BYTES
    assert ring().verify("ops-lead", ORDER, signature).uid == "ops-lead"
    assert ring().verify(0, ORDER, signature).uid == "ops-lead"


def test_tampered_content_is_rejected() -> None:
    signature = Signer(KEY, channel_id=NORTH, originator="ops-lead").sign(ORDER)
    assert rejected(ring(), "ops-lead", ORDER.replace(b"B4", b"B5"), signature) == "signature"
    assert rejected(ring(), "ops-lead", ORDER, signature[:-1] + b"\x00") == "signature"
    assert rejected(ring(), "ops-lead", ORDER, signature[:32]) == "signature"


def test_wrong_key_is_rejected() -> None:
    forged = Signer(OTHER, channel_id=NORTH, originator="ops-lead").sign(ORDER)
    assert rejected(ring(), "ops-lead", ORDER, forged) == "signature"
    assert rejected(ring(), 0, ORDER, forged) == "signature"


def test_signature_replayed_on_another_channel_is_rejected() -> None:
    signature = Signer(KEY, channel_id=NORTH, originator="ops-lead").sign(ORDER)
    assert rejected(ring(SOUTH), "ops-lead", ORDER, signature) == "signature"


def test_signature_claimed_by_another_originator_with_the_same_key_is_rejected() -> None:
    keys = ring()
    keys.add("ops-deputy", KEY.public_key())  # a key shared by two uids
    signature = Signer(KEY, channel_id=NORTH, originator="ops-lead").sign(ORDER)
    assert rejected(keys, "ops-deputy", ORDER, signature) == "signature"


def test_unknown_originators_are_rejected() -> None:
    signature = Signer(KEY, channel_id=NORTH, originator="ops-lead").sign(ORDER)
    assert rejected(ring(), "stranger", ORDER, signature) == "signature"
    assert rejected(ring(), 99, ORDER, signature) == "signature"


def test_a_slot_given_to_a_new_uid_leaves_the_old_one() -> None:
    keys = ring()
    keys.add("ops-relief", OTHER.public_key(), sender=0)
    assert keys.lookup(0).uid == "ops-relief"
    assert keys.lookup("ops-lead").sender is None
    keys.remove("ops-relief")
    with pytest.raises(FrameRejected):
        keys.lookup(0)
    assert len(keys) == 2
    with pytest.raises(ConfigError):
        keys.add("x", KEY.public_key(), sender=255)
    with pytest.raises(ConfigError):
        keys.add("x", b"short")


@pytest.mark.parametrize("raw", [False, True])
def test_key_files_round_trip_and_private_ones_are_0600(tmp_path: Path, raw: bool) -> None:
    private, public = tmp_path / "lead.key", tmp_path / "lead.pub"
    save_private_key(private, KEY, raw=raw)
    save_public_key(public, KEY.public_key(), raw=raw)
    assert private.stat().st_mode & 0o777 == 0o600
    assert (len(private.read_bytes()) == 32) is raw
    loaded = load_private_key(private)
    signature = Signer(loaded, channel_id=NORTH, originator="ops-lead").sign(ORDER)
    keys = KeyRing(NORTH)
    keys.add("ops-lead", load_public_key(public))
    assert keys.verify("ops-lead", ORDER, signature).uid == "ops-lead"


def test_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lead.key"
    save_private_key(path, KEY)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_private_key(path)


def test_bad_key_files_are_config_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"not a key at all")
    garbage.chmod(0o600)
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ec_key.chmod(0o600)
    for path in (garbage, ec_key, tmp_path / "missing.key"):
        with pytest.raises(ConfigError):
            load_private_key(path)
    with pytest.raises(ConfigError):
        load_public_key(garbage)
