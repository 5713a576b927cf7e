"""Certificates and keys: the built-in authority, TLS contexts (later:
enrollment, radio-frame AEAD, signatures)."""
