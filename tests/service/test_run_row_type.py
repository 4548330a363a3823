"""PostgreSQL's insert sends new jobs as an array of the composite type
`run_row` (migration 0011, store/sql/pg_bulk.py): the type must have the
columns of runs, in the order and with the types the insert builds its tuples
in. A column added to runs without the type fails here."""

from __future__ import annotations

from dispatcher.store.sql import pg_bulk
from dispatcher.store.sql.tables import runs
from tests.backends import PostgresDatabase, pg_connect


async def test_the_run_row_type_has_every_column_of_runs_in_order_with_its_type(
    postgres: PostgresDatabase,
) -> None:
    conn = await pg_connect(postgres.url)
    try:
        attributes = await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
            " WHERE attrelid = 'run_row'::regclass AND attnum > 0 AND NOT attisdropped"
            " ORDER BY attnum"
        )
    finally:
        await conn.close()

    expected = [(c, pg_bulk.pg_type(runs.c[c].type)) for c in pg_bulk.COLUMNS]
    assert [(a["attname"], a["type"]) for a in attributes] == expected
    assert pg_bulk.COLUMNS == [c.name for c in runs.columns]
