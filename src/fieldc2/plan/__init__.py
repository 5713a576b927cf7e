"""Mission planning: tasks, teams, an optimised plan, re-planning, search patterns.

Import the pieces from their modules: ``fieldc2.plan.model`` (value types),
``fieldc2.plan.solver`` (``solve``, ``validate``), ``fieldc2.plan.replan``,
``fieldc2.plan.search`` (IAMSAR patterns, POD/POA) and ``fieldc2.plan.incident``
(incident files).  This package module stays import-light on purpose: the
solver pulls in PyVRP and numpy only where it is used.
"""

from __future__ import annotations
