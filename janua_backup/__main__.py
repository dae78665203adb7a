"""Allows ``python -m janua_backup``."""

from janua_backup.cli import main

main()
