"""One exception tree for the whole package.

::

    FieldC2Error
    ├── ConfigError            the operator's configuration is wrong (local misuse)
    ├── BackendError           a store or bus backend failed or is not installed
    │   └── MissingExtraError  the backend's optional dependency is absent
    ├── PlanError              an incident, task or team definition is invalid (local misuse)
    ├── LinkError              a radio link or adapter failed or was misused locally
    └── ProtocolError          a peer sent something we cannot accept (remote misbehaviour)
        ├── FramingError       the byte stream cannot be split into messages
        │   └── OversizeError  a message is larger than the configured limit
        ├── CotError           a message was framed but is not a valid CoT event
        ├── RadioFrameError    a compact radio frame or record cannot be decoded
        ├── FrameRejected      a radio frame failed authentication, replay or window checks
        └── NmeaError          a GNSS sentence is malformed or fails its checksum

Local misuse and remote misbehaviour are different branches on purpose: a
``ProtocolError`` is logged and the message dropped, a ``ConfigError`` stops
the command before it starts.  Foreign exceptions (expat, protobuf, sqlite) are
translated at the boundary with ``raise Ours(...) from exc``.
"""

from __future__ import annotations


class FieldC2Error(Exception):
    """Root of every exception fieldc2 raises on purpose."""


class ConfigError(FieldC2Error):
    """The configuration or command line asks for something impossible."""


class BackendError(FieldC2Error):
    """A store or bus backend failed."""


class MissingExtraError(BackendError):
    """A backend was chosen whose optional dependency is not installed."""


class ProtocolError(FieldC2Error):
    """A peer sent bytes we cannot accept.  Never fatal to the server."""


class FramingError(ProtocolError):
    """The stream cannot be split into messages."""


class OversizeError(FramingError):
    """A message exceeds the configured size limit."""


class CotError(ProtocolError):
    """A framed message is not a valid CoT event."""


class PlanError(FieldC2Error):
    """An incident file, task, team or plan request is invalid."""


class LinkError(FieldC2Error):
    """A radio link, adapter or queue was misused or failed locally."""


class RadioFrameError(ProtocolError):
    """A compact radio frame or one of its records cannot be decoded."""


class FrameRejected(ProtocolError):
    """A radio frame failed authentication, or its counter is replayed or out of window.

    ``reason`` is a short machine-readable cause (``"tag"``, ``"replay"``,
    ``"window"``, ``"epoch"``, ``"signature"``) so receivers can count by cause.
    """

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


class NmeaError(ProtocolError):
    """An NMEA 0183 sentence is malformed or fails its checksum."""
