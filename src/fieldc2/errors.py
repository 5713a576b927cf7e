"""One exception tree for the whole package.

::

    FieldC2Error
    ├── ConfigError            the operator's configuration is wrong (local misuse)
    ├── BackendError           a store or bus backend failed or is not installed
    │   └── MissingExtraError  the backend's optional dependency is absent
    └── ProtocolError          a peer sent something we cannot accept (remote misbehaviour)
        ├── FramingError       the byte stream cannot be split into messages
        │   └── OversizeError  a message is larger than the configured limit
        └── CotError           a message was framed but is not a valid CoT event

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
