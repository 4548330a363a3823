"""PostgreSQL's insert sends new jobs as an array of the composite type
`run_row` (migration 0011, store/sql/pg_bulk.py), newborn jobs as one of
`newborn_row` (migration 0013, store/sql/newborn.py): each type must have its
columns of runs, in the order and with the types the insert builds its tuples
in. A column added to runs without the type fails here."""

from __future__ import annotations

from dispatcher.store.sql import pg_bulk
from dispatcher.store.sql.newborn import NEWBORN_COLUMNS
from dispatcher.store.sql.tables import runs
from tests.backends import PostgresDatabase, pg_connect


async def _attributes(postgres: PostgresDatabase, type_name: str) -> list[tuple[str, str]]:
    conn = await pg_connect(postgres.url)
    try:
        attributes = await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
            " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped"
            " ORDER BY attnum",
            type_name,
        )
    finally:
        await conn.close()
    return [(a["attname"], a["type"]) for a in attributes]


async def test_the_run_row_type_has_every_column_of_runs_in_order_with_its_type(
    postgres: PostgresDatabase,
) -> None:
    expected = [(c, pg_bulk.pg_type(runs.c[c].type)) for c in pg_bulk.COLUMNS]
    assert await _attributes(postgres, "run_row") == expected
    assert pg_bulk.COLUMNS == [c.name for c in runs.columns]


async def test_the_newborn_row_type_has_the_columns_a_newborn_job_carries_in_order(
    postgres: PostgresDatabase,
) -> None:
    """Migration 0013: the columns of runs but those newborn jobs share."""
    expected = [(c, pg_bulk.pg_type(runs.c[c].type)) for c in NEWBORN_COLUMNS]
    assert await _attributes(postgres, "newborn_row") == expected
