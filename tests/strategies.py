"""Hypothesis strategies and corpus helpers shared by the protocol tests.

``events()`` builds model events whose XML and protobuf forms must both round
trip exactly, together with the routing facts the decoder has to find in them.
The domain is what a peer can legitimately send: text made of characters XML
1.0 can carry, finite numbers, a point on the globe, times between 2000 and
2100 in whole milliseconds, and a detail made of well-formed elements.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import msgspec
from hypothesis import strategies as st

from fieldc2.model.cot import (
    Contact,
    Detail,
    Event,
    EventFacts,
    Group,
    PrecisionLocation,
    Status,
    Takv,
    Track,
)

CORPUS_DIR = Path(__file__).parent / "corpus"


def corpus_files() -> list[Path]:
    """Every corpus message, in a stable order."""
    return sorted(CORPUS_DIR.glob("*.xml"))


def event_bytes(data: bytes) -> bytes:
    """The ``<event>...</event>`` part of a corpus file, without declaration."""
    start = data.index(b"<event")
    end = data.rindex(b"</event>") + len(b"</event>")
    return data[start:end]


# --- text ------------------------------------------------------------------------

#: XML 1.0 ``Char``: tab, newline, carriage return and everything from U+0020
#: except surrogates, U+FFFE and U+FFFF.
xml_chars = st.characters(
    min_codepoint=0x20,
    exclude_categories=("Cs",),
    exclude_characters="\ufffe\uffff",
    include_characters="\t\n\r",
)
xml_text = st.text(xml_chars, max_size=16)
nonempty_xml_text = st.text(xml_chars, min_size=1, max_size=16)

#: Elements whose name the parser treats specially: the six typed ones and the
#: ones routing facts come from.  Random elements never use these names.
SPECIAL_NAMES = frozenset(
    {"contact", "__group", "precisionlocation", "status", "takv", "track",
     "link", "marti", "dest", "emergency"}
)

_NAME_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
_NAME_CHARS = _NAME_START + "0123456789-."
xml_names = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(_NAME_START),
    st.text(st.sampled_from(_NAME_CHARS), max_size=10),
).filter(lambda name: name not in SPECIAL_NAMES and not name.lower().startswith("xml"))


def _attrs_xml(attrs: dict[str, str]) -> str:
    return "".join(f" {name}={quoteattr(value)}" for name, value in attrs.items())


_attr_dicts = st.dictionaries(xml_names, xml_text, max_size=3)


def _leaf(name: str, attrs: dict[str, str], text: str, self_closing: bool) -> str:
    if self_closing and not text:
        return f"<{name}{_attrs_xml(attrs)}/>"
    return f"<{name}{_attrs_xml(attrs)}>{escape(text)}</{name}>"


_leaves = st.builds(_leaf, xml_names, _attr_dicts, xml_text, st.booleans())


def _parent(name: str, attrs: dict[str, str], children: list[str]) -> str:
    return f"<{name}{_attrs_xml(attrs)}>{''.join(children)}</{name}>"


#: One well-formed element with random names, attributes, text and children.
#: Nesting stays far below the parser's depth limit.
unknown_elements = st.recursive(
    _leaves,
    lambda inner: st.builds(_parent, xml_names, _attr_dicts, st.lists(inner, max_size=3)),
    max_leaves=8,
)


# --- detail pieces that carry routing facts ------------------------------------------


def _link(uid: str) -> tuple[str, EventFacts]:
    xml = f'<link uid={quoteattr(uid)} type="a-f-G-U-C" relation="p-p"/>'
    return xml, EventFacts(link_uids=(uid,))


def _marti(callsigns: list[str], uids: list[str]) -> tuple[str, EventFacts]:
    dests = [f"<dest callsign={quoteattr(c)}/>" for c in callsigns]
    dests += [f"<dest uid={quoteattr(u)}/>" for u in uids]
    facts = EventFacts(dest_callsigns=tuple(callsigns), dest_uids=tuple(uids))
    return f"<marti>{''.join(dests)}</marti>", facts


def _emergency(cancel: bool, who: str) -> tuple[str, EventFacts]:
    attr = ' cancel="true"' if cancel else ' type="911 Alert"'
    return f"<emergency{attr}>{escape(who)}</emergency>", EventFacts(emergency_cancel=cancel)


_fact_pieces = st.one_of(
    st.builds(_link, xml_text),
    st.builds(_marti, st.lists(xml_text, max_size=2), st.lists(xml_text, max_size=2)),
    st.builds(_emergency, st.booleans(), xml_text),
)
_plain_pieces = unknown_elements.map(lambda xml: (xml, EventFacts()))


def _merge(pieces: list[tuple[str, EventFacts]]) -> tuple[str, EventFacts]:
    xml = "".join(piece for piece, _ in pieces)
    facts = [f for _, f in pieces]
    return xml, EventFacts(
        dest_callsigns=tuple(c for f in facts for c in f.dest_callsigns),
        dest_uids=tuple(u for f in facts for u in f.dest_uids),
        link_uids=tuple(u for f in facts for u in f.link_uids),
        emergency_cancel=any(f.emergency_cancel for f in facts),
    )


#: ``(Detail.xml, facts)``: well-formed elements back to back (the parser keeps
#: each one verbatim and drops whitespace between them), some of them the
#: elements routing facts are read from.
detail_xml_with_facts = st.lists(
    st.one_of(_plain_pieces, _fact_pieces), max_size=5
).map(_merge)


# --- typed detail and events ---------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)

typed_details = st.fixed_dictionaries(
    {},
    optional={
        "contact": st.builds(Contact, endpoint=xml_text, callsign=xml_text),
        "group": st.builds(Group, name=xml_text, role=xml_text),
        "precision_location": st.builds(
            PrecisionLocation, geopointsrc=xml_text, altsrc=xml_text
        ),
        # The XML parser types at most nine digits (see test_cot_xml for the
        # ten-digit case, kept verbatim instead); real clients send 0-100.
        "status": st.builds(Status, battery=st.integers(0, 999_999_999)),
        "takv": st.builds(Takv, device=xml_text, platform=xml_text, os=xml_text,
                          version=xml_text),
        "track": st.builds(Track, speed=finite, course=finite),
    },
)

#: 2000-01-01 to 2100-01-01, in milliseconds.
EPOCH_MS_2000 = 946_684_800_000
EPOCH_MS_2100 = 4_102_444_800_000
times_ms = st.integers(EPOCH_MS_2000, EPOCH_MS_2100)


def xml_only(facts: EventFacts) -> EventFacts:
    """The facts without those read from the typed contact and group."""
    return msgspec.structs.replace(facts, callsign=None, group=None, role="")


@st.composite
def events(draw: st.DrawFn) -> tuple[Event, EventFacts]:
    """A random event and the routing facts its detail carries."""
    xml, facts = draw(detail_xml_with_facts)
    detail = Detail(xml=xml, **draw(typed_details))
    if detail.contact is not None:
        facts = msgspec.structs.replace(facts, callsign=detail.contact.callsign)
    if detail.group is not None:
        facts = msgspec.structs.replace(facts, group=detail.group.name, role=detail.group.role)
    event = Event(
        uid=draw(nonempty_xml_text),
        type=draw(nonempty_xml_text),
        how=draw(xml_text),
        time=draw(times_ms),
        start=draw(times_ms),
        stale=draw(times_ms),
        lat=draw(st.floats(-90.0, 90.0)),
        lon=draw(st.floats(-180.0, 180.0)),
        hae=draw(finite),
        ce=draw(finite),
        le=draw(finite),
        access=draw(xml_text),
        qos=draw(xml_text),
        opex=draw(xml_text),
        detail=detail,
    )
    return event, facts
