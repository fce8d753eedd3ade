"""Database migrations with Alembic, run as ``python -m listener migrate`` (the Procfile's release)."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from listener.db import get_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str) -> None:
    config = alembic_config(database_url)
    config.attributes["engine"] = get_engine(database_url)
    command.upgrade(config, "head")
