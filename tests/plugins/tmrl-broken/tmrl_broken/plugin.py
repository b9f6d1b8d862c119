"""Fails at import on purpose, like a plugin whose dependency is not installed."""

raise ImportError("tmrl-broken fails to import on purpose (stands for a missing dependency)")
