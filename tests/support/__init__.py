"""Helpers for the tests: backends, live servers and fixtures."""
