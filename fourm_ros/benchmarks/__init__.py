"""Benchmark scripts (``python -m fourm_ros.benchmarks.<name>``): figures are printed, never asserted."""
