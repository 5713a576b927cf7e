"""``fieldc2 demo --radio 2`` end to end: LoRa nodes through a relay beside the TCP teams.

The real demo runs for a few seconds with a radio segment: a relay on the
command post's CoT port and two nodes on UDP "radios" paced at LoRa LongFast
airtime.  The nodes' positions must reach the post's picture, and the team
device that is a radio node must get its signed order over the air, verify
it and acknowledge it, so the order book shows it acknowledged.

The example configurations (``examples/relay.toml``, ``node.toml``,
``roster.toml``), which README's "Radio links" commands use, are loaded
through ``fieldc2 relay``/``node``'s own configuration path so they stay valid.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from fieldc2 import relay_cli
from fieldc2.demo import DemoOptions, run_demo
from fieldc2.demo_radio import RadioSegment
from fieldc2.node import NodeSettings
from fieldc2.orders.model import OrderState
from fieldc2.radio_channels import ChannelDirectory
from tests.conftest import make_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

RADIO_DEVICE = "ANDROID-a1f3c3"  # ALPHA's second device in examples/incident.yaml


async def test_radio_nodes_report_and_a_radio_device_acknowledges_its_order(
        tmp_path: Path) -> None:
    segment = RadioSegment(2)
    options = DemoOptions(units=5, duration=9.0, live=False, speedup=400.0, solve_time=1.0,
                          ack_timeout=30.0, receipt_delay=(0.1, 0.4))
    result = await run_demo(make_config(tmp_path), options, extra_actors=[segment])

    uids = [node.core.uid for node in segment.nodes]
    assert uids == [RADIO_DEVICE, "LORA-NODE-2"]
    assert segment.reached == set(uids), segment.reached
    assert (tmp_path / "radio" / "demo.chan").exists()

    radio = [(s.order.id, r.state) for s in result.orders for r in s.recipients
             if r.recipient == RADIO_DEVICE]
    assert radio, "the radio device was sent orders"
    acked = [order for order, state in radio if state.rank >= OrderState.ACKNOWLEDGED.rank]
    assert acked, radio
    assert {f"{RADIO_DEVICE} {order}" for order in acked} <= set(segment.acked)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fieldc2")
    relay_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


def load(command: str, key_file: Path) -> tuple[argparse.Namespace, dict[str, object],
                                                 relay_cli.ChannelSettings]:
    """``fieldc2 COMMAND --config examples/COMMAND.toml`` up to its channel settings
    (the key given as a flag: the file's key path exists only after ``radio new``)."""
    args = parse(command, "--config", str(EXAMPLES / f"{command}.toml"),
                 "--key-file", str(key_file))
    data = relay_cli.load_toml(args.config)
    return args, data, relay_cli.channel_settings(args, data, EXAMPLES, key_file.parent)


def peers(adapter: str) -> tuple[str, list[str]]:
    parts = urlsplit(adapter)
    return parts.netloc, parse_qs(parts.query)["peer"]


def test_example_relay_and_node_configurations_load_and_pair(tmp_path: Path) -> None:
    key = ChannelDirectory(tmp_path).create("sar-1")
    key_file = tmp_path / "sar-1.chan"
    relay_args, relay_data, relay = load("relay", key_file)
    _, node_data, node = load("node", key_file)

    for channel in (relay, node):
        assert [k.export() for k in channel.keys] == [key.export()]
        assert channel.profile.name == "lora-long-fast"
    assert relay.context().origin == node.context().origin
    # where `fieldc2 radio new sar-1` puts the key, run from the repository's root
    for data in (relay_data, node_data):
        table = data["channel"]
        assert isinstance(table, dict)
        assert (EXAMPLES / table["key_file"]).resolve() == REPO / "fieldc2-data/radio/sar-1.chan"

    relay_table = relay_data["relay"]
    assert isinstance(relay_table, dict)
    settings = relay_cli.relay_settings(relay_args, relay_table, EXAMPLES)
    assert (settings.host, settings.port, settings.tls) == ("127.0.0.1", 8087, None)
    entry = relay.roster.by_slot(0)
    assert entry is not None and entry.uid == settings.uid

    table = node_data["node"]
    assert isinstance(table, dict)
    me = node.roster.by_slot(int(table["slot"]))
    assert me is not None and me.callsign == "ALPHA-2"
    NodeSettings(slot=me.slot, channel_id=key.channel_id,
                 **{k: float(table[k]) for k in relay_cli._NODE_KEYS if k in table})
    gnss = urlsplit(str(table["gnss"]))
    assert gnss.scheme == "file" and (REPO / gnss.path).is_file()
    cp = node.roster.by_uid("fieldc2-fieldc2")  # the default post's orders origin
    assert cp is not None

    # the two UDP "radios" point at each other
    relay_local, relay_peers = peers(relay.adapter)
    node_local, node_peers = peers(node.adapter)
    assert relay_peers == [node_local] and node_peers == [relay_local]
