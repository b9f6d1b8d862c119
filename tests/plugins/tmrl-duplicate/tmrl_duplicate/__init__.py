"""tmrl-duplicate: a plugin that registers the env name `pendulum`, which tmrl-core already registers."""
