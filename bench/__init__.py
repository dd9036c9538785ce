"""Benchmarks of fastsoftmax against its peers (kept out of the default test run)."""
