"""The current picture: the latest non-stale event per uid, and live alerts.

A client that connects is sent the picture for its groups.  Chat, control
messages and directed messages are not part of it.  Emergency alerts
(``b-a-o-*``) are kept until cancelled, whatever their stale time, so that a
team joining late still sees who called for help.
"""

from __future__ import annotations

from collections.abc import Iterator

from fieldc2.fanout import Outgoing
from fieldc2.router import DELETE, GroupKey

ALERT_PREFIX = "b-a-o-"
ALERT_CANCEL = "b-a-o-can"
_NOT_PICTURE = ("t-x-", "b-t-f")


def is_alert(cot_type: str) -> bool:
    return cot_type.startswith(ALERT_PREFIX)


class Picture:
    """Latest state per uid, with the audience each entry may be shown to."""

    def __init__(self) -> None:
        self.entries: dict[str, Outgoing] = {}
        self.alerts: dict[str, Outgoing] = {}

    def __len__(self) -> int:
        return len(self.entries) + len(self.alerts)

    def apply(self, item: Outgoing, now_ms: int) -> tuple[bool, tuple[str, ...]]:
        """Fold one routed event in.

        Returns ``(kept, removed_uids)``: whether the item is now part of the
        picture, and which uids it removed (deletes and alert cancels).
        """
        event, facts = item.event, item.facts
        cot_type = event.type
        if facts.directed or cot_type.startswith(_NOT_PICTURE):
            if cot_type == DELETE:
                return False, self._remove(facts.link_uids)
            return False, ()
        if is_alert(cot_type):
            if cot_type == ALERT_CANCEL or facts.emergency_cancel:
                return False, self._remove((event.uid,))
            self.alerts[event.uid] = item
            return True, ()
        if event.is_stale(now_ms):
            return False, ()
        current = self.entries.get(event.uid)
        if current is not None and current.event.time > event.time:
            return False, ()  # an older report arriving late does not win
        self.entries[event.uid] = item
        return True, ()

    def _remove(self, uids: tuple[str, ...]) -> tuple[str, ...]:
        removed = []
        for uid in uids:
            if self.entries.pop(uid, None) is not None or self.alerts.pop(uid, None) is not None:
                removed.append(uid)
        return tuple(removed)

    def restore(self, item: Outgoing) -> None:
        """Put back an entry loaded from the store at start-up."""
        target = self.alerts if is_alert(item.event.type) else self.entries
        target[item.event.uid] = item

    def expire(self, now_ms: int) -> list[str]:
        """Drop stale entries (alerts excepted); return their uids."""
        stale = [uid for uid, item in self.entries.items() if item.event.is_stale(now_ms)]
        for uid in stale:
            del self.entries[uid]
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
