"""The DIL link layer: precedence queues, store-and-forward, custody, anti-entropy.

Sans-I/O (time is an argument).  :class:`LinkEndpoint` is one node's link
layer over opaque payloads; :mod:`fieldc2.link.body` is the frame body
format; :mod:`fieldc2.link.radio` stacks the compact codec, the link layer
and frame security for relays, nodes and the simulator.
"""

from __future__ import annotations

from fieldc2.link.endpoint import LinkEndpoint
from fieldc2.link.types import (
    DEFAULT_TTL,
    LATEST_ONLY_TTL,
    Acked,
    Delivered,
    Expired,
    LinkConfig,
    LinkEvent,
    LinkStats,
    Message,
    PeerDigest,
    PeerHeard,
    Skipped,
)

__all__ = [
    "DEFAULT_TTL", "LATEST_ONLY_TTL", "Acked", "Delivered", "Expired", "LinkConfig",
    "LinkEndpoint", "LinkEvent", "LinkStats", "Message", "PeerDigest", "PeerHeard",
    "Skipped",
]
