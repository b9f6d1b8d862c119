"""tmrl plugin: TrackMania 2020 environments, a simulated TrackMania, their encoders, and `tmrl trackmania` tools."""
