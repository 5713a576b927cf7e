"""Sans-I/O protocol cores: codecs, framers and connection state machines.

Nothing here imports asyncio or reads a clock: bytes and ``now`` go in,
events and bytes come out.
"""
