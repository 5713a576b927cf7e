"""The current picture: the latest non-stale event per uid and audience,
and live alerts.

A client that connects is sent the picture for its groups.  Chat, control
messages and directed messages are not part of it.  Emergency alerts
(``b-a-o-*``) are kept until cancelled, whatever their stale time, so that a
team joining late still sees who called for help.

Entries are keyed by ``(uid, audience)``, not by uid alone: a client in one
group can neither overwrite nor delete what another group sees by reusing a
uid.  A delete or cancel removes the entries with that uid whose audience
shares a group with the sender.
"""

from __future__ import annotations

from collections.abc import Iterator

from fieldc2.fanout import Outgoing
from fieldc2.router import DELETE, GroupKey

ALERT_PREFIX = "b-a-o-"
ALERT_CANCEL = "b-a-o-can"
_NOT_PICTURE = ("t-x-", "b-t-f")

EntryKey = tuple[str, GroupKey]


def is_alert(cot_type: str) -> bool:
    return cot_type.startswith(ALERT_PREFIX)


class Picture:
    """Latest state per uid and audience."""

    def __init__(self) -> None:
        self.entries: dict[EntryKey, Outgoing] = {}
        self.alerts: dict[EntryKey, Outgoing] = {}

    def __len__(self) -> int:
        return len(self.entries) + len(self.alerts)

    def apply(self, item: Outgoing, now_ms: int) -> tuple[bool, tuple[EntryKey, ...]]:
        """Fold one routed event in.

        Returns ``(kept, removed)``: whether the item is now part of the
        picture, and which entries it removed (deletes and alert cancels).
        """
        event, facts = item.event, item.facts
        cot_type = event.type
        if facts.directed or cot_type.startswith(_NOT_PICTURE):
            if cot_type == DELETE:
                return False, self._remove(facts.link_uids, item.key)
            return False, ()
        if is_alert(cot_type):
            if cot_type == ALERT_CANCEL or facts.emergency_cancel:
                return False, self._remove((event.uid,), item.key)
            self.alerts[(event.uid, item.key)] = item
            return True, ()
        if event.is_stale(now_ms):
            return False, ()
        entry = (event.uid, item.key)
        current = self.entries.get(entry)
        if current is not None and current.event.time > event.time:
            return False, ()  # an older report arriving late does not win
        self.entries[entry] = item
        return True, ()

    def _remove(self, uids: tuple[str, ...], sender: GroupKey) -> tuple[EntryKey, ...]:
        wanted = set(uids)
        removed: list[EntryKey] = []
        for table in (self.entries, self.alerts):
            for entry in [e for e in table if e[0] in wanted and not e[1].isdisjoint(sender)]:
                del table[entry]
                removed.append(entry)
        return tuple(removed)

    def restore(self, item: Outgoing) -> None:
        """Put back an entry loaded from the store at start-up."""
        target = self.alerts if is_alert(item.event.type) else self.entries
        target[(item.event.uid, item.key)] = item

    def expire(self, now_ms: int) -> list[EntryKey]:
        """Drop stale entries (alerts excepted); return them."""
        stale = [e for e, item in self.entries.items() if item.event.is_stale(now_ms)]
        for entry in stale:
            del self.entries[entry]
        return stale

    def visible(self, groups: GroupKey, now_ms: int, exclude_uid: str = "") -> Iterator[Outgoing]:
        """What a client in ``groups`` may see now, oldest first."""
        for item in self.entries.values():
            event = item.event
            if event.uid != exclude_uid and not item.key.isdisjoint(groups) \
                    and not event.is_stale(now_ms):
                yield item
        for item in self.alerts.values():
            if not item.key.isdisjoint(groups):
                yield item
