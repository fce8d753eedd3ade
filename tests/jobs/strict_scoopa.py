"""scoopa's handler on a second endpoint, so one end-to-end config can hold a second scoopa source.

That source keeps the default ``allow_private_hosts: false`` while the main one
allows the test peers on 127.0.0.1: both behaviours against the same processes.
"""
from __future__ import annotations

from handlers.scoopa import BODY, DEFAULT_ON, STATES, apply, parse

ENDPOINTS = {"/scoopa-strict": ("POST",)}

__all__ = ["BODY", "DEFAULT_ON", "ENDPOINTS", "STATES", "apply", "parse"]
