"""``check``: is this setup able to back up and archive, right now."""
