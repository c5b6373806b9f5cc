"""Keeping tokens fresh: the Redis schedule, claiming with leases, per-account locks, the worker loop."""
