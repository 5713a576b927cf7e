"""``fieldc2 radio new|rotate|list|export|post-key``: the command post's radio keys."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from fieldc2.config import Config
from fieldc2.errors import ConfigError
from fieldc2.radio_channels import ChannelDirectory


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fieldc2 radio new|rotate|list|export``."""
    radio = sub.add_parser(
        "radio", help="radio channel keys for relays and field nodes",
        description="Manage the group keys of the compact radio channels. Enrolled relays and "
                    "nodes fetch them over mutual TLS from /api/radio/channels/NAME.")
    channel = radio.add_subparsers(dest="radio_command", required=True, metavar="ACTION")
    new = channel.add_parser("new", help="create a channel with a random key",
                             description="Create a channel with a random key (or, with "
                                         "--passphrase, one derived from a passphrase typed "
                                         "into every device).")
    new.add_argument("name", help="channel name (letters, digits, . _ -)")
    new.add_argument("--passphrase", action="store_true",
                     help="derive the key from a passphrase read from the terminal or stdin")
    rotate = channel.add_parser("rotate", help="start a new key epoch",
                                description="Append a new random key under the next epoch. "
                                            "Devices accept the previous epoch for its grace "
                                            "period, so there is no flag day.")
    rotate.add_argument("name")
    export = channel.add_parser("export", help="print the current key line (secret!)",
                                description="Print fieldc2-chan:v1:NAME:EPOCH:KEY for a device "
                                            "that cannot fetch it over TLS. Treat it as a "
                                            "password.")
    export.add_argument("name")
    listing = channel.add_parser("list", help="list channels and their epochs",
                                 description="List channels and their epochs.")
    post_key = channel.add_parser(
        "post-key", help="print the roster entry of the command post's order-signing key",
        description="Print the [[member]] roster entry field nodes need to verify the "
                    "command post's signed orders (the key is created if absent).")
    post_key.add_argument("--slot", type=int, default=200,
                          help="roster slot for the command post (default 200)")
    for one in (new, rotate, export, listing, post_key):
        one.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration")
        one.add_argument("--data-dir", type=Path, metavar="DIR",
                         help="the command post's data directory (default ./fieldc2-data)")


def _passphrase() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("channel passphrase: ")
        if getpass.getpass("again: ") != first:
            raise ConfigError("the passphrases differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def run(args: argparse.Namespace, config: Config) -> int:
    """Run ``fieldc2 radio ...``."""
    directory = ChannelDirectory(config.data_dir / "radio")
    match args.radio_command:
        case "new":
            key = directory.create(args.name, _passphrase() if args.passphrase else None)
            print(f"channel {key.name}: epoch {key.epoch}, id {key.channel_id:#06x}")
        case "rotate":
            key = directory.rotate(args.name)
            print(f"channel {key.name}: now epoch {key.epoch}; devices fetch it from "
                  f"/api/radio/channels/{key.name}")
        case "export":
            print(directory.current(args.name).export())
        case "post-key":
            from fieldc2.orders.service import signing_identity
            from fieldc2.orders.sign import OrderSigner

            path, uid = signing_identity(config)
            signer = OrderSigner.load_or_create(path, uid)
            print(f'[[member]]\nslot = {args.slot}\nuid = "{uid}"\ncallsign = "COMMAND POST"\n'
                  f'public_key = "{signer.public_key.hex()}"')
        case "list":
            for name in directory.names():
                epochs = ", ".join(str(k.epoch) for k in directory.keys(name))
                print(f"{name}\tepochs {epochs}")
    return 0
