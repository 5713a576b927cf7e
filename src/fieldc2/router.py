"""Who receives what, sans-I/O.

An event reaches every other client that shares a group with its sender and
never comes back to the sender.  A directed event (``marti/dest``) reaches
only the addressees that share a group with the sender.  A ping is answered
to its sender alone.  Groups come from server-side configuration first, then
from the ``__group`` a client reports, then the default group.

The audience of a group set is computed once and cached until a client joins,
leaves or changes group, so the per-event cost of routing is a dict lookup.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec

from fieldc2.config import GroupConfig
from fieldc2.model.cot import Event, EventFacts

GroupKey = frozenset[str]


class Peer:
    """A connected client as routing sees it.  The server subclasses it."""

    __slots__ = ("callsign", "fixed", "groups", "id", "uid")

    def __init__(self, peer_id: int, groups: GroupKey) -> None:
        self.id = peer_id
        self.uid = ""
        self.callsign = ""
        self.groups = groups
        #: True once an authenticated identity decided the groups: what the
        #: client writes in ``__group`` no longer moves it.
        self.fixed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.callsign or self.uid or '?'}>"


class Broadcast(msgspec.Struct, frozen=True, tag=True):
    """To everyone sharing a group with ``key``, except the sender."""

    key: GroupKey


class Directed(msgspec.Struct, frozen=True, tag=True):
    """To exactly these peers (by id)."""

    key: GroupKey
    recipients: tuple[int, ...]


class Pong(msgspec.Struct, frozen=True, tag=True):
    """Answer the sender's ping."""


class Drop(msgspec.Struct, frozen=True, tag=True):
    """Deliver to nobody."""

    reason: str


Route = Broadcast | Directed | Pong | Drop

PING = "t-x-c-t"
DELETE = "t-x-d-d"
_NEGOTIATION = ("t-x-takp-", "t-x-c-t-r")


class Router:
    """Group membership, identity and routing decisions for all peers."""

    def __init__(self, config: GroupConfig) -> None:
        self.config = config
        self.default_key: GroupKey = frozenset({config.default})
        self.peers: dict[int, Peer] = {}
        self._by_uid: dict[str, set[int]] = defaultdict(set)
        self._by_callsign: dict[str, set[int]] = defaultdict(set)
        self._audiences: dict[GroupKey, tuple[Peer, ...]] = {}

    def initial_groups(self) -> GroupKey:
        return self.default_key

    def join(self, peer: Peer) -> None:
        self.peers[peer.id] = peer
        self._audiences.clear()

    def leave(self, peer: Peer) -> None:
        if self.peers.pop(peer.id, None) is None:
            return
        _unindex(self._by_uid, peer.uid, peer.id)
        _unindex(self._by_callsign, peer.callsign, peer.id)
        self._audiences.clear()

    def assign(self, peer: Peer, groups: GroupKey) -> None:
        """Fix a peer's groups from its authenticated identity."""
        peer.groups = groups
        peer.fixed = True
        self._audiences.clear()

    def observe(self, peer: Peer, event: Event, facts: EventFacts) -> bool:
        """Learn a peer's uid, callsign and groups from its self-report.

        The first ``a-*`` event with a ``<contact>`` that a peer sends is its
        self-report and fixes its uid; later events with that uid update its
        callsign and group.  Returns True when the peer's groups changed.
        """
        callsign = facts.callsign
        if callsign is None or not event.type.startswith("a-"):
            return False
        if peer.uid and peer.uid != event.uid:
            return False  # a marker the client placed, not the client itself
        if not peer.uid:
            peer.uid = event.uid
            self._by_uid[peer.uid].add(peer.id)
        if callsign != peer.callsign:
            _unindex(self._by_callsign, peer.callsign, peer.id)
            peer.callsign = callsign
            self._by_callsign[callsign].add(peer.id)
        if peer.fixed:
            return False
        groups = self.groups_for(peer.uid, peer.callsign, facts.group)
        if groups == peer.groups:
            return False
        peer.groups = groups
        self._audiences.clear()
        return True

    def groups_for(self, uid: str, callsign: str, group: str | None) -> GroupKey:
        members = self.config.members
        configured = members.get(uid) or members.get(callsign)
        if configured:
            return frozenset(configured)
        if self.config.from_cot and group:
            return frozenset({group})
        return self.default_key

    def audience(self, key: GroupKey) -> tuple[Peer, ...]:
        """Every peer sharing at least one group with ``key`` (sender included)."""
        cached = self._audiences.get(key)
        if cached is None:
            cached = tuple(p for p in self.peers.values() if not p.groups.isdisjoint(key))
            self._audiences[key] = cached
        return cached

    def route(self, sender: Peer, event: Event, facts: EventFacts) -> Route:
        cot_type = event.type
        if cot_type == PING:
            return Pong()
        if cot_type.startswith(_NEGOTIATION):
            return Drop("negotiation message outside negotiation")
        if cot_type == DELETE and not facts.link_uids:
            return Drop("delete naming nothing (a client hello)")
        key = sender.groups
        if facts.directed:
            return Directed(key, self._addressees(sender, facts))
        return Broadcast(key)

    def _addressees(self, sender: Peer, facts: EventFacts) -> tuple[int, ...]:
        ids: set[int] = set()
        for callsign in facts.dest_callsigns:
            ids |= self._by_callsign.get(callsign, set())
        for uid in facts.dest_uids:
            ids |= self._by_uid.get(uid, set())
        ids.discard(sender.id)
        peers = self.peers
        return tuple(
            sorted(i for i in ids if i in peers and not peers[i].groups.isdisjoint(sender.groups))
        )


def _unindex(index: dict[str, set[int]], key: str, peer_id: int) -> None:
    """Remove a peer from an index entry, and the entry once it is empty."""
    ids = index.get(key)
    if ids is not None:
        ids.discard(peer_id)
        if not ids:
            del index[key]
