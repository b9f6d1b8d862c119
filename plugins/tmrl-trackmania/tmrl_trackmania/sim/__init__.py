"""A small simulated TrackMania for tests, benchmarks and contributors (``trackmania.backend = "simulated"``)."""
