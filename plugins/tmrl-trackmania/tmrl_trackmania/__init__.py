"""tmrl plugin: the TrackMania 2020 environments, their memories, compressors and models."""
