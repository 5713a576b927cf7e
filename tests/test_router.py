"""Routing decisions and the picture, without sockets."""

from __future__ import annotations

from fieldc2.config import GroupConfig
from fieldc2.fanout import Outgoing
from fieldc2.model.cot import Contact, Detail, Event, EventFacts, Group
from fieldc2.picture import Picture
from fieldc2.router import Broadcast, Directed, Drop, Peer, Pong, Router

NOW = 1_800_000_000_000


def report(uid: str, callsign: str, group: str | None = None, *, cot_type: str = "a-f-G-U-C",
           t: int = NOW, stale: int = NOW + 60_000) -> Event:
    detail = Detail(contact=Contact(callsign=callsign, endpoint="*:-1:stcp"),
                    group=Group(name=group, role="Team Member") if group else None)
    return Event(uid=uid, type=cot_type, time=t, start=t, stale=stale, detail=detail)


def facts_of(event: Event) -> EventFacts:
    contact, group = event.detail.contact, event.detail.group
    return EventFacts(callsign=contact.callsign if contact else None,
                      group=group.name if group else None)


def plain(uid: str, cot_type: str, *, t: int = NOW, stale: int = NOW + 60_000) -> Event:
    return Event(uid=uid, type=cot_type, time=t, start=t, stale=stale)


def joined(router: Router, pid: int, uid: str, callsign: str, group: str | None) -> Peer:
    peer = Peer(pid, router.initial_groups())
    router.join(peer)
    event = report(uid, callsign, group)
    router.observe(peer, event, facts_of(event))
    return peer


def test_self_report_sets_identity_and_group() -> None:
    router = Router(GroupConfig())
    peer = joined(router, 1, "ANDROID-1", "ALPHA", "Cyan")
    assert (peer.uid, peer.callsign, peer.groups) == ("ANDROID-1", "ALPHA", frozenset({"Cyan"}))
    # A marker the client drops (another uid) does not change who it is.
    marker = report("MARKER-9", "Rally point", "Red")
    assert not router.observe(peer, marker, facts_of(marker))
    assert peer.uid == "ANDROID-1" and peer.groups == frozenset({"Cyan"})


def test_no_group_means_the_default_group_and_config_overrides_cot() -> None:
    router = Router(GroupConfig(members={"BRAVO": ("Command", "Red")}))
    anon = joined(router, 1, "U1", "ALPHA", None)
    boss = joined(router, 2, "U2", "BRAVO", "Cyan")
    assert anon.groups == frozenset({"__ANON__"})
    assert boss.groups == frozenset({"Command", "Red"})


def test_group_from_cot_can_be_switched_off() -> None:
    router = Router(GroupConfig(from_cot=False))
    assert joined(router, 1, "U1", "ALPHA", "Cyan").groups == frozenset({"__ANON__"})


def test_audience_is_everyone_sharing_a_group_and_follows_changes() -> None:
    router = Router(GroupConfig())
    a = joined(router, 1, "U1", "A", "Cyan")
    b = joined(router, 2, "U2", "B", "Cyan")
    c = joined(router, 3, "U3", "C", "Red")
    assert {p.id for p in router.audience(a.groups)} == {1, 2}
    moved = report("U3", "C", "Cyan")
    assert router.observe(c, moved, facts_of(moved))  # C changes team
    assert {p.id for p in router.audience(a.groups)} == {1, 2, 3}
    router.leave(b)
    assert {p.id for p in router.audience(a.groups)} == {1, 3}


def test_routes() -> None:
    router = Router(GroupConfig())
    a = joined(router, 1, "U1", "ALPHA", "Cyan")
    joined(router, 2, "U2", "BRAVO", "Cyan")
    joined(router, 3, "U3", "CHARLIE", "Red")
    joined(router, 4, "U4", "DELTA", "Cyan")
    assert router.route(a, plain("p", "t-x-c-t"), EventFacts()) == Pong()
    assert isinstance(router.route(a, plain("takPing", "t-x-d-d"), EventFacts()), Drop)
    assert router.route(a, plain("x", "t-x-d-d"), EventFacts(link_uids=("M",))) \
        == Broadcast(frozenset({"Cyan"}))
    assert router.route(a, report("U1", "ALPHA", "Cyan"), EventFacts()) \
        == Broadcast(frozenset({"Cyan"}))
    # Directed by callsign and uid; CHARLIE is in another group and the
    # sender never gets its own message.
    facts = EventFacts(dest_callsigns=("BRAVO", "CHARLIE", "ALPHA"), dest_uids=("U4",))
    assert router.route(a, plain("GeoChat.x", "b-t-f"), facts) \
        == Directed(frozenset({"Cyan"}), (2, 4))
    assert router.route(a, plain("c", "b-t-f"), EventFacts(dest_callsigns=("NOBODY",))) \
        == Directed(frozenset({"Cyan"}), ())


def item(event: Event, facts: EventFacts | None = None, key: str = "Cyan") -> Outgoing:
    return Outgoing(event, facts or EventFacts(), frozenset({key}), 1)


def test_picture_keeps_latest_non_stale_per_uid_for_its_groups() -> None:
    pic = Picture()
    assert pic.apply(item(report("U1", "A", t=NOW)), NOW) == (True, ())
    assert pic.apply(item(report("U1", "A", t=NOW - 5)), NOW) == (False, ())  # late and older
    pic.apply(item(report("U2", "B"), key="Red"), NOW)
    pic.apply(item(plain("chat", "b-t-f")), NOW)
    pic.apply(item(plain("U3", "a-f-G", stale=NOW - 1)), NOW)
    pic.apply(item(plain("dm", "a-f-G"), EventFacts(dest_uids=("U2",))), NOW)
    assert [i.event.uid for i in pic.visible(frozenset({"Cyan"}), NOW)] == ["U1"]
    assert [i.event.uid for i in pic.visible(frozenset({"Cyan", "Red"}), NOW)] == ["U1", "U2"]
    assert list(pic.visible(frozenset({"Cyan"}), NOW, exclude_uid="U1")) == []
    assert [uid for uid, _ in pic.expire(NOW + 60_000)] == ["U1", "U2"]


def test_picture_keeps_groups_apart_for_the_same_uid() -> None:
    pic = Picture()
    pic.apply(item(report("X", "cyan view")), NOW)
    pic.apply(item(report("X", "red view", t=NOW + 5), key="Red"), NOW)
    assert [i.event.callsign for i in pic.visible(frozenset({"Cyan"}), NOW)] == ["cyan view"]
    deleted = pic.apply(item(plain("d", "t-x-d-d"), EventFacts(link_uids=("X",)), key="Red"), NOW)
    assert deleted == (False, (("X", frozenset({"Red"})),))
    assert [i.event.callsign for i in pic.visible(frozenset({"Cyan"}), NOW)] == ["cyan view"]


def test_picture_delete_and_alert_lifecycle() -> None:
    pic = Picture()
    pic.apply(item(plain("M1", "b-m-p-s-m")), NOW)
    kept, removed = pic.apply(item(plain("d", "t-x-d-d"), EventFacts(link_uids=("M1",))), NOW)
    assert (kept, removed) == (False, (("M1", frozenset({"Cyan"})),))
    pic.apply(item(plain("U1-9-1-1", "b-a-o-tbl", stale=NOW + 10)), NOW)
    pic.expire(NOW + 100_000)  # alerts outlive their stale time
    assert [i.event.uid for i in pic.visible(frozenset({"Cyan"}), NOW + 100_000)] == ["U1-9-1-1"]
    # Another group cannot cancel it; its own group can.
    assert pic.apply(item(plain("U1-9-1-1", "b-a-o-can"), key="Red"), NOW) == (False, ())
    assert pic.apply(item(plain("U1-9-1-1", "b-a-o-can")), NOW) \
        == (False, (("U1-9-1-1", frozenset({"Cyan"})),))
    assert len(pic) == 0
