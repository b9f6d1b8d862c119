"""tmrl-example: the example plugin of the plugin author's guide (docs/plugins.md)."""
