"""PostgreSQL knowledge: WAL names and LSNs, pg_control, the data directory, recovery settings."""
