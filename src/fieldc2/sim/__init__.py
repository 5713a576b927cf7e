"""Simulation: field units that behave like TAK clients (later: virtual
clock, simulated links, scenarios, replay)."""
