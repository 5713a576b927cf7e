"""Domain value types: frozen, comparable, cheap to build."""

from fieldc2.model.cot import (
    NO_FACTS,
    UNKNOWN_ERROR,
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

__all__ = [
    "NO_FACTS",
    "UNKNOWN_ERROR",
    "Contact",
    "Detail",
    "Event",
    "EventFacts",
    "Group",
    "PrecisionLocation",
    "Status",
    "Takv",
    "Track",
]
