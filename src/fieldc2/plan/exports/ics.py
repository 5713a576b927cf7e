"""ICS 204 Assignment Lists and ICS 214 Activity Logs as PDF.

The layout follows the FEMA forms (ICS 204 and ICS 214, FEMA 502-2, public
domain) block by block, with their numbers and titles, because incident staff
read these forms by position: a division supervisor looks for block 7 without
reading the rest.  One 204 is printed per division or group (``Task.division``);
tasks without a division form one group per team, tasks nobody could take a
group of their own, and teams with no work a "Staging" sheet, so every task
and every team of the plan is on paper somewhere.

Blocks the planning model does not hold (operations personnel, the radio plan,
who prepared and approved the form) come in as a :class:`FormInfo`; when left
empty their rows are printed blank, to be filled in by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

from fieldc2.errors import PlanError
from fieldc2.plan.exports.common import (
    ActivitySource,
    activity_of,
    check_plan,
    describe_location,
    fmt_clock,
    fmt_coord,
    fmt_date,
    fmt_span,
    fmt_time,
    task_index,
)
from fieldc2.plan.exports.pdfform import FormPDF, Paper, cell_chars, form_pdf, split_text
from fieldc2.plan.model import Assignment, Incident, Plan, Team

BLANK_LOG_ROWS = 20
"""Empty ruled rows on a 214 without entries: one page for hand entries."""

_WRITE_IN = " \n "
"""A blank cell two lines high: room for a hand-written entry."""

_DEFAULT_OPERATIONS = ("Operations Section Chief", "Branch Director",
                       "Division/Group Supervisor")


class Person(msgspec.Struct, frozen=True, kw_only=True):
    """A name on a form: operations personnel (block 5) or a sign-off."""

    name: str
    role: str = ""
    """ICS position or title, e.g. "Operations Section Chief"."""
    contact: str = ""
    """Phone, pager or radio."""


class CommsEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One line of block 9, usually copied from the ICS 205 radio plan."""

    function: str
    """Name or function, e.g. "Command", "Tactical 1"."""
    contact: str
    """Cell, pager, or radio frequency/system/channel."""


class FormInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the forms need beyond the plan; every field is optional."""

    branch: str = ""
    operations: tuple[Person, ...] = ()
    comms: tuple[CommsEntry, ...] = ()
    prepared_by: Person | None = None
    approved_by: Person | None = None
    prepared_at: int | None = None
    """When the forms were prepared (epoch s); blank when None."""
    home_agency: str = ""
    """Home agency and unit of the teams, for the 214."""
    paper: Paper = "A4"


class Sheet(msgspec.Struct, frozen=True, kw_only=True):
    """The content of one ICS 204: a division or group, its teams and tasks."""

    kind: Literal["division", "group", "staging"]
    name: str
    team_ids: tuple[str, ...]
    task_ids: tuple[str, ...]


def ics204_sheets(incident: Incident, plan: Plan) -> list[Sheet]:
    """Divisions in the incident's order, then a group per team for tasks
    without a division, then unassigned tasks, then the idle teams."""
    check_plan(incident, plan)
    assigned = plan.assignments
    in_plan = set(assigned) | {u.task_id for u in plan.unassigned}
    tasks = [t for t in incident.tasks if t.id in in_plan]
    team_order = [t.id for t in incident.teams]
    sheets: list[Sheet] = []
    for division in dict.fromkeys(t.division for t in tasks if t.division):
        ids = _by_start([t.id for t in tasks if t.division == division], assigned)
        teams = {assigned[i].team_id for i in ids if i in assigned}
        sheets.append(Sheet(kind="division", name=division, task_ids=tuple(ids),
                            team_ids=tuple(t for t in team_order if t in teams)))
    loose = [t.id for t in tasks if not t.division]
    for team in incident.teams:
        ids = _by_start([i for i in loose if i in assigned and assigned[i].team_id == team.id],
                        assigned)
        if ids:
            sheets.append(Sheet(kind="group", name=f"Team {team.callsign}",
                                team_ids=(team.id,), task_ids=tuple(ids)))
    left_out = tuple(i for i in loose if i not in assigned)
    if left_out:
        sheets.append(Sheet(kind="group", name="Unassigned tasks", team_ids=(),
                            task_ids=left_out))
    busy = {a.team_id for a in assigned.values()}
    idle = tuple(t for t in team_order if t not in busy)
    if idle:
        sheets.append(Sheet(kind="staging", name="Staging", team_ids=idle, task_ids=()))
    return sheets


def _by_start(ids: list[str], assigned: dict[str, Assignment]) -> list[str]:
    """Assigned tasks by planned start, unassigned ones after them."""
    return sorted(ids, key=lambda i: (i not in assigned,
                                      assigned[i].start if i in assigned else 0))


def ics204_pdf(incident: Incident, plan: Plan, *, info: FormInfo | None = None) -> bytes:
    """Every ICS 204 of the plan in one PDF, each sheet starting a new page."""
    info = info or FormInfo()
    sheets = ics204_sheets(incident, plan) or [
        Sheet(kind="staging", name="(no teams or tasks)", team_ids=(), task_ids=())]
    with form_pdf(info.paper) as pdf:
        for sheet in sheets:
            _draw_204(pdf, incident, plan, sheet, info)
        return pdf.to_bytes()


def _period_text(incident: Incident) -> str:
    p = incident.period
    return (f"Date From: {fmt_date(p.start)}  To: {fmt_date(p.end)}\n"
            f"Time From: {fmt_clock(p.start)}  To: {fmt_clock(p.end)}"
            + (f"\nPeriod: {p.id}" if p.id else ""))


def _title(pdf: FormPDF, x: float, y: float, w: float, h: float, form: str, num: str) -> None:
    pdf.rect(x, y, w, h)
    pdf.set_xy(x, y + h / 2 - 5)
    pdf.use(11, bold=True)
    pdf.cell(w, 5, form, align="C")
    pdf.set_xy(x, y + h / 2 + 0.5)
    pdf.use(9, bold=True)
    pdf.cell(w, 4, num, align="C")


def _draw_204(pdf: FormPDF, incident: Incident, plan: Plan, sheet: Sheet,
              info: FormInfo) -> None:
    pdf.start_form(f"ICS 204   |   IAP Page ____   |   {sheet.name}",
                   f"ICS 204 Assignment List (continued) - {incident.name} - {sheet.name}")
    x, y, w = pdf.l_margin, pdf.t_margin, pdf.epw
    _title(pdf, x, y, 42, 22, "ASSIGNMENT LIST", "ICS 204")
    pdf.box(x + 42, y, 58, 22, "1. Incident Name:", incident.name, size=10, bold=True)
    pdf.box(x + 100, y, 52, 22, "2. Operational Period:", _period_text(incident), size=7.5)
    pdf.box(x + 152, y, w - 152, 11, "3. Branch:", info.branch)
    label = {"division": "4. Division:", "group": "4. Group:", "staging": "4. Staging Area:"}
    pdf.box(x + 152, y + 11, w - 152, 11, label[sheet.kind], sheet.name, bold=True)
    pdf.set_xy(x, y + 24)
    pdf.block("5. Operations Personnel:")
    ops = info.operations or tuple(Person(name="", role=r) for r in _DEFAULT_OPERATIONS)
    pdf.grid(("Position", "Name", "Contact Number(s)"), (60, 65, 65),
             [(p.role, p.name, p.contact) for p in ops])
    pdf.ln(2)
    pdf.block("6. Resources Assigned:")
    teams = [incident.team(t) for t in sheet.team_ids]
    pdf.grid(("Resource Identifier", "Leader", "# of Persons",
              "Contact (e.g., phone, pager, radio frequency)",
              "Reporting Location, Special Equipment and Supplies, Remarks, Notes"),
             (30, 28, 14, 46, 72), [_resource_row(t) for t in teams] or [("None", "", "", "", "")])
    pdf.ln(2)
    _work_block(pdf, incident, plan, sheet)
    _instructions_block(pdf, incident, sheet)
    pdf.ensure_room(30)
    pdf.block("9. Communications (radio and/or phone contact numbers needed for this assignment):")
    comms = [(c.function, c.contact) for c in info.comms] or [(_WRITE_IN, _WRITE_IN)] * 3
    pdf.grid(("Name/Function", "Primary Contact: indicate cell, pager, or radio "
              "(frequency/system/channel)"), (60, 130), comms)
    pdf.ln(2)
    _signoff(pdf, info, approve=True)


def _resource_row(team: Team) -> tuple[str, ...]:
    ident = team.callsign if team.callsign == team.id else f"{team.callsign} ({team.id})"
    notes = [f"Start {fmt_coord(team.position)}",
             f"shift {fmt_span(team.shift_start, team.shift_end)}"]
    if team.capabilities:
        notes.append("equipment: " + ", ".join(sorted(team.capabilities)))
    if team.status != "available":
        notes.append(f"status: {team.status}")
    contact = "TAK: " + ", ".join(team.tak_uids) if team.tak_uids else ""
    leader = team.members[0] if team.members else ""
    return (ident, leader, str(len(team.members)), contact, "; ".join(notes))


def _work_block(pdf: FormPDF, incident: Incident, plan: Plan, sheet: Sheet) -> None:
    pdf.ensure_room(25)
    pdf.block("7. Work Assignments:")
    tasks, assigned = task_index(incident), plan.assignments
    reasons = {u.task_id: u.reason for u in plan.unassigned}
    rows: list[tuple[str, ...]] = []
    for n, task_id in enumerate(sheet.task_ids, 1):
        task = tasks[task_id]
        a = assigned.get(task_id)
        if a is None:
            when, team = f"not planned ({reasons.get(task_id, 'dropped')})", "UNASSIGNED"
        else:
            when, team = fmt_span(a.start, a.end), incident.team(a.team_id).callsign
            if a.arrival < a.start:
                when += f" (arrive {fmt_clock(a.arrival)})"
        name = f"{task.id}: {task.name}" if task.name else task.id
        rows.append((str(n), name, task.kind.replace("_", " "), describe_location(task), when,
                     team, ", ".join(sorted(task.capabilities)), str(task.priority)))
    pdf.grid(("#", "Task", "Kind", "Location", "Planned (UTC)", "Team", "Needs", "Prio"),
             (6, 32, 17, 55, 30, 22, 19, 9), rows or [("", "None", "", "", "", "", "", "")])
    pdf.ln(2)


def _instructions_block(pdf: FormPDF, incident: Incident, sheet: Sheet) -> None:
    tasks = task_index(incident)
    lines = [f"{i}: {tasks[i].instructions}" for i in sheet.task_ids if tasks[i].instructions]
    pdf.ensure_room(15)
    pdf.block("8. Special Instructions:")
    pdf.use(8.5)
    pdf.multi_cell(0, 4, pdf.clean("\n".join(lines) or "None."), border=1,
                   new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)


def _signoff(pdf: FormPDF, info: FormInfo, *, approve: bool) -> None:
    """Block 10 of the 204 (prepared and approved) or block 8 of the 214."""
    pdf.ensure_room(24 if approve else 12)
    x, y, w = pdf.l_margin, pdf.get_y(), pdf.epw
    p = info.prepared_by or Person(name="")
    when = fmt_time(info.prepared_at) if info.prepared_at is not None else ""
    num = "10" if approve else "8"
    pdf.box(x, y, 60, 11, f"{num}. Prepared by: Name:", p.name)
    pdf.box(x + 60, y, 50, 11, "Position/Title:", p.role)
    pdf.box(x + 110, y, 40, 11, "Signature:")
    pdf.box(x + 150, y, w - 150, 11, "Date/Time:", when)
    if approve:
        a = info.approved_by or Person(name="")
        pdf.box(x, y + 11, 110, 11, "Approved by (Planning Section Chief): Name:", a.name)
        pdf.box(x + 110, y + 11, 40, 11, "Signature:")
        pdf.box(x + 150, y + 11, w - 150, 11, "Date/Time:")
    pdf.set_y(y + (22 if approve else 11))


def ics214_pdf(incident: Incident, activity: ActivitySource | None = None, *,
               team_ids: Sequence[str] | None = None, position: str = "Team Leader",
               info: FormInfo | None = None) -> bytes:
    """ICS 214 Activity Logs, one form per team (all teams when ``team_ids``
    is None), each starting a new page and running over as many as needed."""
    info = info or FormInfo()
    ids = [t.id for t in incident.teams] if team_ids is None else list(team_ids)
    teams = [_team(incident, i) for i in ids]
    with form_pdf(info.paper) as pdf:
        for team in teams:
            _draw_214(pdf, incident, team, activity_of(activity, team.id), position, info)
        if pdf.page_no() == 0:
            pdf.start_form("ICS 214", "")
        return pdf.to_bytes()


def _team(incident: Incident, team_id: str) -> Team:
    try:
        return incident.team(team_id)
    except KeyError as exc:
        raise PlanError(f"no team {team_id!r} in incident {incident.name!r}") from exc


def _draw_214(pdf: FormPDF, incident: Incident, team: Team, log: list[tuple[int, str]],
              position: str, info: FormInfo) -> None:
    pdf.start_form(f"ICS 214   |   {team.callsign}",
                   f"ICS 214 Activity Log (continued) - {incident.name} - {team.callsign}")
    x, y, w = pdf.l_margin, pdf.t_margin, pdf.epw
    _title(pdf, x, y, 42, 16, "ACTIVITY LOG", "ICS 214")
    pdf.box(x + 42, y, 74, 16, "1. Incident Name:", incident.name, size=10, bold=True)
    pdf.box(x + 116, y, w - 116, 16, "2. Operational Period:", _period_text(incident), size=7.5)
    leader = team.members[0] if team.members else team.callsign
    pdf.box(x, y + 16, 63, 11, "3. Name:", leader)
    pdf.box(x + 63, y + 16, 63, 11, "4. ICS Position:", f"{position}, {team.callsign}")
    pdf.box(x + 126, y + 16, w - 126, 11, "5. Home Agency (and Unit):", info.home_agency)
    pdf.set_xy(x, y + 29)
    pdf.block("6. Resources Assigned:")
    members = [(m, position if i == 0 else "Team Member", info.home_agency)
               for i, m in enumerate(team.members)]
    pdf.grid(("Name", "ICS Position", "Home Agency (and Unit)"), (70, 60, 60),
             members or [("", "", "")])
    pdf.ln(2)
    pdf.block("7. Activity Log:")
    rows = [(fmt_time(t) if i == 0 else "", piece) for t, text in log
            for i, piece in enumerate(split_text(text, cell_chars(158)))]
    rows = rows or [(_WRITE_IN, _WRITE_IN)] * BLANK_LOG_ROWS
    pdf.grid(("Date/Time", "Notable Activities"), (32, 158), rows)
    pdf.ln(2)
    _signoff(pdf, info, approve=False)
