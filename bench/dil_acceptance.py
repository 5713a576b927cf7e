#!/usr/bin/env python3
"""Acceptance scenario (tests/test_dil_exercise.py::acceptance) over many seeds, link defaults.

Run: .venv/bin/python bench/dil_acceptance.py [FIRST_SEED LAST_SEED]   (default 1 8)
Prints per seed: convergence after the heal, digest share of body bytes, IMMEDIATE p95,
and any urgent message not delivered exactly once or expired.
"""
from __future__ import annotations

import sys

from fieldc2.model.precedence import Precedence
from fieldc2.sim.exercise import PartitionSpec, Scenario, run_exercise

HEAL = 1500.0


def main() -> None:
    first, last = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (1, 8)
    for seed in range(first, last + 1):
        r = run_exercise(Scenario(seed=seed, nodes=20, link="lora-long-fast", duration=2400.0,
                                  loss=0.30, duplicate=0.02, jitter=1.0,
                                  partitions=(PartitionSpec(HEAL - 600.0, HEAL, "relay"),),
                                  attack_rate=120.0, restart_at=1700.0))
        bad = [m.key for m in r.ledger.messages.values()
               if m.precedence >= Precedence.IMMEDIATE and len(m.deliveries) != 1]
        print(f"seed {seed}: convergence {r.convergence[0]:.0f} s, digests "
              f"{r.digest_share:.0%} of body bytes, IMMEDIATE p95 "
              f"{r.by_class[Precedence.IMMEDIATE].p95:.0f} s, not exactly once {bad}, "
              f"expired {dict(r.ledger.expired)}, undecodable {r.ledger.undecodable}, "
              f"future {r.ledger.future_fixes}", flush=True)


if __name__ == "__main__":
    main()
