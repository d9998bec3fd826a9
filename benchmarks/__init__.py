"""Benchmark scripts; each writes its results under benchmarks/results/."""
