"""``verify``: the restore drill, and ``verify --repo``, the repository check."""
