"""Configuration: environment settings and the YAML file.

This package is the only place that reads ``os.environ``.
"""
from __future__ import annotations

from config.loader import ConfigError, load_config, mask_secrets
from config.model import FtpServer, ListenerConfig, SourceConfig, Workflow
from config.settings import Settings

__all__ = [
    "ConfigError",
    "FtpServer",
    "ListenerConfig",
    "Settings",
    "SourceConfig",
    "Workflow",
    "load_config",
    "mask_secrets",
]
