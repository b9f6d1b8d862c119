"""tmrl-broken: a plugin that fails at import, as a plugin with a missing dependency does."""
