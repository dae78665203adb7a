"""janua-backup: PostgreSQL base backups, WAL archiving and point-in-time recovery."""

__version__ = "0.1.0"
