"""Byte-stream transforms: compression, encryption, self-describing headers, checksum taps."""
