"""Orders sent to field teams and tracked per recipient (issue 5, tasking).

``model`` (value types), ``lifecycle`` (the per-recipient state table),
``cot`` (the CoT a published plan sends, and reading receipts, replies and
status reports), ``book`` (the SQLite order book: history, overdue
acknowledgements, activity logs) and ``service`` (wiring into a running
:class:`~fieldc2.server.CommandPost`).
"""

from __future__ import annotations
