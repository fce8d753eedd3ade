"""Benchmarks of the listener against reference apps and tools (issue 6); run ``python bench/run.py``."""
