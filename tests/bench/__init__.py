"""Benchmarks against the real local servers: `make bench` (python -m tests.bench). See docs/benchmarks.md."""
