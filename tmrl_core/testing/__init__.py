"""A testing kit for plugin authors: fixtures (via the ``tmrl`` pytest plugin) and contract test classes."""
