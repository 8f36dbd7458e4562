"""Benchmarks (`make bench`) and evaluations (`make eval`)."""
