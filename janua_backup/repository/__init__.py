"""The repository format: object keys, manifests, the catalog, WAL archive, transfers."""
