"""One module per CLI verb: orchestration only; each returns a result dataclass."""
