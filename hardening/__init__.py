"""The hardening suites: API fuzzing, fault injection and attacks.

Each runs as one command (``./dev suite NAME``); a fast subset of each runs
in the test command. The load suite lives with the other benchmarks in
``bench/bench_load.py`` (``./dev suite load``). Figures: docs/hardening.md.
"""
