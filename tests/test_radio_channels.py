"""Radio channel keys: the server's key files, rotation, and the hand-out over mutual TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from fieldc2.audit import LOG_NAME, recent
from fieldc2.cli import main
from fieldc2.crypto.radio import FrameOpener, FrameSealer
from fieldc2.crypto.radio_keys import MemoryCounterStore
from fieldc2.errors import ConfigError, FrameRejected, LinkError
from fieldc2.radio_channels import KEPT_EPOCHS, ChannelDirectory, fetch_channel_keys
from fieldc2.server import CommandPost
from tests.conftest import make_config

NOW = dt.datetime.now(dt.UTC)


def test_create_rotate_keeps_two_epochs_private(tmp_path: Path) -> None:
    directory = ChannelDirectory(tmp_path / "radio")
    first = directory.create("sar-1")
    path = tmp_path / "radio" / "sar-1.chan"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = directory.rotate("sar-1")
    third = directory.rotate("sar-1")
    kept = directory.keys("sar-1")
    assert [k.epoch for k in kept] == [1, 2]
    assert len(kept) == KEPT_EPOCHS
    assert kept[-1].export() == third.export() and directory.current("sar-1") == third
    assert second.aead_key != first.aead_key != third.aead_key
    assert first.channel_id == third.channel_id  # signatures survive rotation
    with pytest.raises(ConfigError, match="exists"):
        directory.create("sar-1")
    with pytest.raises(ConfigError, match="fieldc2 radio new"):
        directory.keys("nope")


def test_passphrase_channel_matches_a_device_typing_it(tmp_path: Path) -> None:
    from fieldc2.crypto.radio_keys import ChannelKey

    key = ChannelDirectory(tmp_path).create("lora", "correct horse battery")
    assert key.aead_key == ChannelKey.from_passphrase("lora", "correct horse battery").aead_key


def test_cli_new_rotate_list_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main(["radio", "new", "mesh", *data]) == 0
    assert main(["radio", "rotate", "mesh", *data]) == 0
    assert main(["radio", "list", *data]) == 0
    assert main(["radio", "export", "mesh", *data]) == 0
    out = capsys.readouterr().out
    assert "mesh\tepochs 0, 1" in out
    assert out.strip().splitlines()[-1].startswith("fieldc2-chan:v1:mesh:1:")
    assert main(["radio", "rotate", "absent", *data]) == 2
    assert "fieldc2 radio new absent" in capsys.readouterr().err


async def test_enrolled_device_fetches_keys_over_mutual_tls(tmp_path: Path) -> None:
    async with CommandPost(make_config(tmp_path, tls=True)) as post:
        directory = ChannelDirectory(post.config.data_dir / "radio")
        directory.create("sar-1")
        current = directory.rotate("sar-1")
        paths = post.ca.write_client("relay-1", now=NOW)
        url = f"https://localhost:{post.http_port}/api/radio/channels/sar-1"
        keys = await asyncio.to_thread(fetch_channel_keys, url, cert=paths["cert"],
                                       key=paths["key"], ca=post.ca.cert_path)
        assert [k.export() for k in keys] == [k.export() for k in directory.keys("sar-1")]
        # The fetched key talks to a device holding the server's copy.
        sealer = FrameSealer(keys[-1], 7, MemoryCounterStore())
        opener = FrameOpener([current])
        assert opener.open(sealer.seal(b"hello"), 0.0).body == b"hello"
        with pytest.raises(FrameRejected):
            FrameOpener([keys[0]]).open(sealer.seal(b"x"), 0.0)

        records = [r for _, r in recent(post.config.data_dir / LOG_NAME, 10) if r is not None]
        assert any(r.kind == "radio.key" and r.actor == "relay-1" and r.subject == "sar-1"
                   for r in records)

        missing = f"https://localhost:{post.http_port}/api/radio/channels/other"
        with pytest.raises(LinkError, match="404"):
            await asyncio.to_thread(fetch_channel_keys, missing, cert=paths["cert"],
                                    key=paths["key"], ca=post.ca.cert_path)


async def test_disabled_account_gets_no_key(tmp_path: Path) -> None:
    async with CommandPost(make_config(tmp_path, tls=True)) as post:
        ChannelDirectory(post.config.data_dir / "radio").create("sar-1")
        post.users.add("lost-phone", ("Cyan",))
        post.users.set_disabled("lost-phone", True)
        paths = post.ca.write_client("lost-phone", now=NOW)
        url = f"https://localhost:{post.http_port}/api/radio/channels/sar-1"
        with pytest.raises(LinkError, match="403"):
            await asyncio.to_thread(fetch_channel_keys, url, cert=paths["cert"],
                                    key=paths["key"], ca=post.ca.cert_path)


def test_channel_document_is_json_with_every_kept_epoch(tmp_path: Path) -> None:
    directory = ChannelDirectory(tmp_path)
    directory.create("c")
    directory.rotate("c")
    doc = json.loads(directory.document("c"))
    assert doc["channel"] == "c"
    assert [k["epoch"] for k in doc["keys"]] == [0, 1]


async def test_relay_fetches_keys_once_and_then_runs_from_its_cache(tmp_path: Path) -> None:
    from fieldc2.cli import build_parser
    from fieldc2.relay_cli import channel_settings

    async with CommandPost(make_config(tmp_path, tls=True)) as post:
        ChannelDirectory(post.config.data_dir / "radio").create("sar-1")
        paths = post.ca.write_client("relay-1", now=NOW)
        url = f"https://localhost:{post.http_port}/api/radio/channels/sar-1"
        state = tmp_path / "relay-state"

        def settings(key_url: str) -> list[str]:
            args = build_parser().parse_args([
                "relay", "--channel", "sar-1", "--adapter", "udp://127.0.0.1:0",
                "--key-url", key_url, "--tls-cert", str(paths["cert"]),
                "--tls-key", str(paths["key"]), "--tls-ca", str(post.ca.cert_path)])
            found = channel_settings(args, {}, tmp_path, state)
            return [k.export() for k in found.keys]

        fetched = await asyncio.to_thread(settings, url)
        assert fetched == [ChannelDirectory(post.config.data_dir / "radio").current("sar-1")
                           .export()]
        cache = state / "sar-1.chan"
        assert stat.S_IMODE(cache.stat().st_mode) == 0o600
        http_port = post.http_port
    # The command post is gone (in the field): the cached keys are used.
    offline = f"https://localhost:{http_port}/api/radio/channels/sar-1"
    assert await asyncio.to_thread(settings, offline) == fetched
    cache.unlink()
    with pytest.raises(LinkError, match="cannot fetch"):
        await asyncio.to_thread(settings, offline)


def test_key_url_without_credentials_says_what_to_give(tmp_path: Path) -> None:
    from fieldc2.cli import build_parser
    from fieldc2.relay_cli import channel_settings

    args = build_parser().parse_args([
        "node", "--channel", "c", "--adapter", "udp://127.0.0.1:0",
        "--key-url", "https://127.0.0.1:1/api/radio/channels/c"])
    with pytest.raises(ConfigError, match="--tls-cert, --tls-key and --tls-ca"):
        channel_settings(args, {}, tmp_path, tmp_path / "state")


async def test_post_key_prints_the_key_the_post_signs_orders_with(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tomllib

    from fieldc2.model.radio import Roster

    assert main(["radio", "post-key", "--data-dir", str(tmp_path), "--slot", "201"]) == 0
    printed = capsys.readouterr().out
    entry = Roster.from_toml(printed).by_slot(201)
    assert entry is not None and tomllib.loads(printed)["member"][0]["slot"] == 201
    async with CommandPost(make_config(tmp_path)) as post:
        assert post.orders is not None
        assert entry.uid == post.orders.signer.originator
        assert entry.public_key == post.orders.signer.public_key
