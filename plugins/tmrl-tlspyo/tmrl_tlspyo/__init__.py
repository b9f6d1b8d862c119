"""tmrl plugin: the tlspyo transport (TLS, password, signed weights)."""
