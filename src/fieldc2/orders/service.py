"""Orders inside a running command post: publish, track, alert.

The thin shell around the order book and the CoT builders.  The command
post calls :meth:`OrderService.observe` for every event it receives
(stream clients, relays, other instances) and :meth:`OrderService.written`
for every directed event it wrote to a client's connection; everything else
is driven from here:

- :meth:`publish` turns a plan into orders, stores them and sends each team
  its markers, route and orders (directed, via the router);
- receipts, replies and status events move each recipient through the
  lifecycle table; every change is stored and audited, and a team starting
  or finishing a task becomes a plan :class:`~fieldc2.plan.model.Change`;
- an order still unacknowledged after ``ack_timeout`` raises an alert
  (:meth:`check_overdue`, every ``check_interval`` with the clock's time);
- a device that was offline at publish time gets its orders when it shows up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from fieldc2.config import Config, OrdersConfig
from fieldc2.errors import FieldC2Error, PlanError, ProtocolError
from fieldc2.model.cot import Event, EventFacts
from fieldc2.orders import cot
from fieldc2.orders.book import BOOK_NAME, OrderBook
from fieldc2.orders.compose import compose, route_coords
from fieldc2.orders.model import (
    Order,
    OrderState,
    OrderStatus,
    Overdue,
    Signal,
    Transition,
)
from fieldc2.orders.sign import OrderSigner
from fieldc2.plan.geo import Coord
from fieldc2.plan.model import (
    Change,
    Incident,
    Plan,
    Task,
    TaskDone,
    TaskFailed,
    TaskStarted,
)
from fieldc2.plan.segments import task_pattern

if TYPE_CHECKING:
    from fieldc2.server import CommandPost

log = logging.getLogger("fieldc2.orders")

#: Plan changes reported by teams and not yet taken by a re-plan.  A period
#: has at most a few hundred tasks, each giving two changes.
MAX_CHANGES = 2000
#: Audit records waiting to be written (each one fsyncs, in a thread).  A
#: publish of a large plan queues a few hundred; past this a record is
#: dropped with an error logged (the order book still holds every change),
#: since blocking would stall the event loop that serves the teams.
MAX_AUDIT_BACKLOG = 10_000
#: Stale time of published markers and chats beyond the period's end: they
#: stay on the devices' maps for the whole operational period.
STALE_MARGIN_S = 3600
#: Items a published plan's devices are still waiting for (see _waiting).
MAX_WAITING = 10_000


#: Search areas whose track is remembered: more than a period's areas.  A
#: track is laid out once per task, not again for every device, resend or
#: cancellation (a large area's pattern takes a noticeable fraction of a second).
TRACK_CACHE_SIZE = 512


@functools.lru_cache(maxsize=TRACK_CACHE_SIZE)
def _track(task: Task) -> tuple[Coord, ...] | None:
    """A search area's pattern waypoints; None for other tasks, or when the
    pattern is refused (the area marker is still sent)."""
    try:
        pattern = task_pattern(task)
    except PlanError as exc:
        log.warning("no search pattern for %s: %s", task.id, exc)
        return None
    return pattern.waypoints if pattern is not None and len(pattern.waypoints) >= 2 else None


class PublishResult(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`OrderService.publish` did."""

    plan_id: str
    orders: tuple[Order, ...]
    """The new orders."""
    warnings: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    """Ids of earlier orders kept because their team is already on the task."""


def signing_identity(config: Config) -> tuple[Path, str]:
    """Where the command post's order-signing key lives, and the originator uid
    it signs as (what field nodes' rosters must list with its public key)."""
    orders = config.orders
    key = Path(orders.signing_key) if orders.signing_key else \
        config.data_dir / "orders" / "signing.key"
    return key, orders.origin_uid or f"fieldc2-{config.server_name}"


class OrderService:
    """Orders of one command post."""

    def __init__(self, post: CommandPost, config: OrdersConfig) -> None:
        self.post = post
        self.config = config
        data_dir = post.config.data_dir
        key, uid = signing_identity(post.config)
        self.sender = cot.Sender(uid=uid, callsign=config.callsign)
        self.signer = OrderSigner.load_or_create(key, self.sender.uid)
        self.book = OrderBook(data_dir / BOOK_NAME, ack_timeout=config.ack_timeout)
        self.changes: deque[Change] = deque(maxlen=MAX_CHANGES)
        self._audits: asyncio.Queue[tuple[str, str, str, dict[str, str]]] = \
            asyncio.Queue(MAX_AUDIT_BACKLOG)
        self._tasks: list[asyncio.Task[None]] = []
        self._published: tuple[Incident, Plan] | None = None
        # Devices with orders still only "issued": checked on every event
        # from them, so only a set lookup is paid per position report.
        self._waiting: set[str] = set()

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self._published = self._load_published()
        for status in self.book.status():
            for r in status.recipients:
                if r.state is OrderState.ISSUED and len(self._waiting) < MAX_WAITING:
                    self._waiting.add(r.recipient)
        self._tasks = [asyncio.create_task(self._auditor(), name="fieldc2-orders-audit"),
                       asyncio.create_task(self._overdue_loop(), name="fieldc2-orders-due")]

    async def stop(self) -> None:
        """Stop checking, write every queued audit record, close the book."""
        if self._tasks:
            auditor, due = self._tasks
            due.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await due
            await self._audits.join()
            auditor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await auditor
        self.book.close()

    async def _auditor(self) -> None:
        while True:
            kind, actor, subject, detail = await self._audits.get()
            try:
                await self.post.audit(kind, actor, subject, **detail)
            finally:
                self._audits.task_done()

    def _audit(self, kind: str, actor: str, subject: str, **detail: str) -> None:
        try:
            self._audits.put_nowait((kind, actor, subject, detail))
        except asyncio.QueueFull:
            log.error("audit backlog full (%d): %s %s not audited", MAX_AUDIT_BACKLOG,
                      kind, subject)

    async def flush_audit(self) -> None:
        """Wait until every queued audit record is written (tests, shutdown)."""
        await self._audits.join()

    async def _overdue_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval)
            try:
                self.check_overdue(self.post.clock())
            except FieldC2Error as exc:
                log.error("overdue check failed: %s", exc)

    def _load_published(self) -> tuple[Incident, Plan] | None:
        raw = self.book.get_state("published")
        if raw is None:
            return None
        try:
            return msgspec.json.decode(raw, type=tuple[Incident, Plan])
        except msgspec.DecodeError as exc:
            log.error("the published plan in the order book is unreadable: %s", exc)
            return None

    # --- publishing ------------------------------------------------------------

    def publish(self, incident: Incident, plan: Plan, *, actor: str = "") -> PublishResult:
        """Store an order per served task and send every team its assignment.

        Orders of earlier plans that are still open are superseded: one whose
        team is already working on the task (in progress) and keeps it in the
        new plan stays as it is; every other one is cancelled and its devices
        told so (and the task's marker removed when the task left the team).
        """
        if plan.incident != incident.name:
            raise PlanError(f"the plan is for incident {plan.incident!r}, not "
                            f"{incident.name!r}; solve this incident first")
        now = int(self.post.clock())
        plan_id = f"PLAN-{uuid.uuid4().hex[:8].upper()}"
        kept = self._supersede(plan, now, plan_id)
        orders, warnings = compose(incident, plan, now=now, origin=self.sender.uid,
                                   plan_id=plan_id, keep=frozenset(kept))
        self.book.put_state("published", msgspec.json.encode((incident, plan)))
        self._published = (incident, plan)
        for order in orders:
            self.book.add(order, now)
            self._audit("order_issued", actor or "api", order.id, task=order.task_id,
                        team=order.team_id, recipients=",".join(order.recipients),
                        plan=plan_id, text=order.text)
            if len(self._waiting) < MAX_WAITING:
                self._waiting.update(order.recipients)
        for route in plan.routes:
            mine = [o for o in orders if o.team_id == route.team_id]
            if mine:
                self._send_team(incident, plan, route.team_id, mine)
        for warning in warnings:
            log.warning("publish %s: %s", plan_id, warning)
        log.info("published %s: %d new orders to %d teams, %d kept", plan_id, len(orders),
                 len({o.team_id for o in orders}), len(kept))
        return PublishResult(plan_id=plan_id, orders=tuple(orders), warnings=tuple(warnings),
                             kept=tuple(kept.values()))

    def _supersede(self, plan: Plan, now: int, plan_id: str) -> dict[str, str]:
        """Cancel open orders the new plan replaces; task id -> kept order id."""
        assigned = plan.assignments
        kept: dict[str, str] = {}
        for status in self.book.open_orders():
            order = status.order
            new = assigned.get(order.task_id)
            same_team = new is not None and new.team_id == order.team_id
            if same_team and order.task_id not in kept and any(
                    r.state is OrderState.IN_PROGRESS for r in status.recipients):
                kept[order.task_id] = order.id
                continue
            why = (f"superseded by {plan_id}" if same_team else
                   f"task {order.task_id} reassigned to {new.team_id}" if new is not None
                   else f"task {order.task_id} is not in the new plan {plan_id}")
            self._cancel(status, why, now, remove_marker=not same_team)
        return kept

    def _cancel(self, status: OrderStatus, why: str, now: int, *, remove_marker: bool) -> None:
        order = status.order
        told: list[str] = []
        for r in status.recipients:
            if r.state.terminal:
                continue
            change = self._move(order.id, r.recipient, Signal.CANCELLED, now, "superseded", why)
            if change is not None and change.before is not OrderState.ISSUED:
                told.append(r.recipient)  # a device that never had it needs no word
        now_ms = now * 1000
        for uid in told:
            mid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"cancel/{order.id}/{uid}"))
            self._inject(*cot.text_chat(
                self.sender, f"{order.id} CANCELLED: {why}. Do not start it.", mid, now_ms,
                now_ms + STALE_MARGIN_S * 1000, to_uid=uid, to_callsign=self._callsign(uid)))
        if told and remove_marker:
            uids = [f"fieldc2.task.{order.task_id}"]
            track = self._track_of(order.task_id)
            uids += [cot.track_uid(order.task_id, n) for n in range(len(cot.track_parts(track)))
                     ] if track else []
            for uid in uids:
                self._inject(*cot.delete_marker(uid, tuple(told), now_ms))

    def _stale_ms(self, incident: Incident, now_ms: int) -> int:
        return max(incident.period.end + STALE_MARGIN_S, now_ms // 1000 + STALE_MARGIN_S) * 1000

    def _send_team(self, incident: Incident, plan: Plan, team_id: str,
                   orders: list[Order]) -> None:
        team = incident.team(team_id)
        route = plan.route(team_id)
        now_ms = self.post.now_ms()
        stale = self._stale_ms(incident, now_ms)
        lon, lat = incident.staging or team.position
        self._inject(*cot.presence(self.sender, lat, lon, team.tak_uids, now_ms, stale))
        for order in orders:
            self._send_task(incident.task(order.task_id), order, now_ms, stale)
        if route is not None and route.visits:
            self._inject(*cot.team_route(team, route_coords(incident, route), now_ms, stale))
        for order in orders:
            for uid in order.recipients:
                self._send_chat(order, uid, now_ms, stale)

    def _send_task(self, task: Task, order: Order, now_ms: int, stale: int) -> None:
        """The task's marker and, for a search area, the pattern to walk."""
        self._inject(*cot.task_marker(task, order, now_ms, stale))
        track = _track(task)
        for event in cot.search_track(task, order, track, now_ms, stale) if track else ():
            self._inject(*event)

    def _track_of(self, task_id: str) -> tuple[Coord, ...] | None:
        """The track sent for a task of the published plan, if any."""
        if self._published is None:
            return None
        try:
            return _track(self._published[0].task(task_id))
        except KeyError:
            return None

    def _send_chat(self, order: Order, uid: str, now_ms: int, stale: int) -> None:
        callsign = self._callsign(uid)
        self._inject(*cot.order_chat(order, uid, callsign, self.sender,
                                     self.signer.sign(order, uid), now_ms, stale))

    def _callsign(self, uid: str) -> str:
        endpoint = self.post.endpoints.get(uid)
        return endpoint.callsign if endpoint is not None else ""

    def _inject(self, event: Event, facts: EventFacts) -> None:
        """Hand a directed event to the router, as the command post."""
        key = frozenset(self.post.known_groups())
        self.post.inject_event(event, facts, key, sender=0)

    def _resend(self, uid: str) -> None:
        """Send a device the orders it missed while it was away."""
        self._waiting.discard(uid)
        pending = self.book.undelivered(uid)
        if not pending:
            return
        now_ms = self.post.now_ms()
        published = self._published
        stale = now_ms + STALE_MARGIN_S * 1000
        if published is not None:
            stale = self._stale_ms(published[0], now_ms)
        for order in pending:
            if published is not None:
                with contextlib.suppress(KeyError):
                    self._send_task(published[0].task(order.task_id), order, now_ms, stale)
            self._send_chat(order, uid, now_ms, stale)
        log.info("sent %d waiting order(s) to %s", len(pending), uid)

    # --- tracking --------------------------------------------------------------

    def observe(self, event: Event, facts: EventFacts, sender_uid: str) -> None:
        """Every event the command post receives (the server's observer hook)."""
        if sender_uid in self._waiting:
            self._resend(sender_uid)
        try:
            report = cot.read_report(event, facts, sender_uid, self.sender)
        except ProtocolError as exc:
            log.warning("unreadable order report from %s: %s", sender_uid or "?", exc)
            return
        if report is None or report.by == self.sender.uid:
            return
        now = int(self.post.clock())
        match report:
            case cot.Receipt(message_id=mid, signal=signal, by=by):
                found = self.book.find_message(mid)
                if found is not None and found[1] == by:
                    self._move(found[0], by, signal, now, "receipt")
            case cot.Reply(signal=signal, by=by, text=text, order_id=oid):
                oid = oid or self.book.latest_open(by)
                if oid is not None:
                    self._move(oid, by, signal, now, "reply", text)
            case cot.StatusReport(order_id=oid, signal=signal, by=by, at=at):
                self._move(oid, by, signal, at if at is not None else now, "status")

    def written(self, event: Event, recipient_uid: str) -> None:
        """A directed event was written to a client (the server's delivery hook)."""
        if event.type != cot.CHAT_TYPE or not event.uid.startswith(
                f"GeoChat.{self.sender.uid}."):
            return
        found = self.book.find_message(event.uid.rsplit(".", 1)[-1])
        if found is not None and found[1] == recipient_uid:
            self._waiting.discard(recipient_uid)
            self._move(found[0], recipient_uid, Signal.WRITTEN, int(self.post.clock()),
                       "written")

    def _move(self, order_id: str, uid: str, signal: Signal, now: int, source: str,
              note: str = "") -> Transition | None:
        change = self.book.apply(order_id, uid, signal, now, source=source, note=note)
        if change is None:
            log.debug("order %s: %s from %s changes nothing", order_id, signal.value, uid)
            return None
        log.info("order %s: %s %s -> %s (%s)", order_id, uid,
                 change.before.value if change.before else "-", change.after.value, source)
        self._audit("order_state", uid, order_id, before=str(change.before or ""),
                    after=change.after.value, source=source, note=note)
        self._plan_change(order_id, change)
        return change

    def _plan_change(self, order_id: str, change: Transition) -> None:
        """A team's first start, completion or failure of a task, as a plan change."""
        if change.after not in (OrderState.IN_PROGRESS, OrderState.DONE, OrderState.FAILED):
            return
        order = self.book.order(order_id)
        if order is None:
            return
        reached = [r for r in self.book.recipients(order_id)
                   if r.state is change.after or (change.after is OrderState.IN_PROGRESS
                                                  and r.state is OrderState.DONE)]
        if len(reached) != 1:
            return  # another device of the team said so first
        if change.after is OrderState.DONE:
            self.changes.append(TaskDone(task_id=order.task_id, at=change.at,
                                         team_id=order.team_id))
        elif change.after is OrderState.FAILED:
            self.changes.append(TaskFailed(task_id=order.task_id, team_id=order.team_id,
                                           at=change.at))
        else:
            self.changes.append(TaskStarted(task_id=order.task_id, team_id=order.team_id,
                                            at=change.at))

    def take_changes(self) -> list[Change]:
        """The plan changes reported so far, removed from the queue."""
        taken = list(self.changes)
        self.changes.clear()
        return taken

    # --- overdue ---------------------------------------------------------------

    def check_overdue(self, now: float) -> list[Overdue]:
        """Alert for every recipient past the acknowledgement timeout (once each)."""
        due = self.book.due_alerts(int(now))
        for item in due:
            self._alert(item, int(now))
        return due

    def _alert(self, item: Overdue, now: int) -> None:
        order = item.order
        who = self._callsign(item.recipient) or item.recipient
        waited = max(0, now - item.since)
        after = f"{waited // 60} min" if waited >= 60 else f"{waited} s"
        text = (f"OVERDUE: {order.team_id} ({who}) has not acknowledged {order.id} "
                f"(task {order.task_id}) after {after}; state {item.state.value}.")
        log.warning("%s", text)
        self._audit("order_overdue", self.sender.uid, order.id, recipient=item.recipient,
                    team=order.team_id, task=order.task_id, state=item.state.value)
        groups = self.config.alert_groups or (self.post.config.groups.default,)
        now_ms = int(now * 1000)
        alert_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"overdue/{order.id}/{item.recipient}"))
        event, facts = cot.text_chat(self.sender, text, alert_id, now_ms,
                                     now_ms + STALE_MARGIN_S * 1000)
        self.post.inject_event(event, facts, frozenset(groups), sender=0)

    # --- views -----------------------------------------------------------------

    def status(self, order_id: str | None = None) -> list[OrderStatus]:
        return self.book.status(order_id)

    def activity(self, team_id: str) -> list[tuple[int, str]]:
        return self.book.activity(team_id)
