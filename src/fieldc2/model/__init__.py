"""Domain value types: frozen, comparable, cheap to build."""

from fieldc2.model.cot import (
    NO_FACTS,
    EventFacts,
    UNKNOWN_ERROR,
    Contact,
    Detail,
    Event,
    Group,
    PrecisionLocation,
    Status,
    Takv,
    Track,
)

__all__ = [
    "NO_FACTS",
    "EventFacts",
    "UNKNOWN_ERROR",
    "Contact",
    "Detail",
    "Event",
    "Group",
    "PrecisionLocation",
    "Status",
    "Takv",
    "Track",
]
