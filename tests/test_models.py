"""The schema the migrations build is the one ``listener.models`` describes, on both databases."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from listener.db import get_engine
from listener.models import metadata


def test_the_migrations_build_the_tables_the_code_queries(database_url, clean):
    with get_engine(database_url).connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []
