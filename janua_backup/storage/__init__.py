"""Bytes at keys: the storage contract (``base``) and its drivers (posix, s3, memory)."""
