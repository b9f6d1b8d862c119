"""tmrl-faulty: a third-party plugin whose components fail on purpose, for the journey tests (tests/test_journeys.py).

It is not installed: the tests put this folder on PYTHONPATH, where its ``.dist-info`` makes its entry point visible
to ``importlib.metadata`` as an installed distribution's would be.
"""
