"""tmrl plugin: the REDQ-SAC agent (redqsac) with a batched critic ensemble."""
