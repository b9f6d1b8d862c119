"""tmrl plugin: the Soft Actor-Critic agent (sac)."""
