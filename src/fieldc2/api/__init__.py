"""HTTP: the Marti endpoints TAK clients call (later: REST API, WebSocket feed)."""
