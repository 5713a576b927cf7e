"""asyncio shells: sockets in, sans-I/O cores, sockets out."""
