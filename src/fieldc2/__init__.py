"""fieldc2: command and control for field teams on bad networks."""

__version__ = "0.1.0"
