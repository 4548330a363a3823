"""A new job as most are born, and its row without the columns every such job
holds the same value in.

No attempt, lease, progress, result or error yet, and no callback, deadline,
dependencies, trace context or concurrency key: 22 of the 40 columns of
`runs` hold one value across such jobs. Both stores' inserts of new jobs write
those as literals in the statement and send each row's other 18 values alone:
SQLite (`sqlite_driver.NewbornInsert`) converts and binds each value of each
row, and PostgreSQL (`pg_bulk.newborn_inserts`) receives the rows as an array
of the composite type `newborn_row` (migration 0013) instead of `run_row`,
which asyncpg encodes and PostgreSQL decodes field by field. A job that
differs in any of these columns (handed to a waiting Lease at birth, say, or
with a callback URL) takes the insert that binds all 40.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from dispatcher.store.sql.tables import RUNS_COLUMN_NAMES

NEWBORN_LITERALS = (
    # The state machine's: no attempt, lease, progress, result or error yet.
    "attempt", "version", "progress_percent", "progress_message", "started_at",
    "finished_at", "last_error", "result", "result_content_type", "lease_holder",
    "lease_token", "lease_expires_at", "cancel_requested", "terminal_reason",
    "has_dependents", "lease_principal",
    # Options most jobs leave unset.
    "trace_context", "callback_url", "start_deadline_at", "max_run_ms", "depends_on",
    "concurrency_key",
)  # fmt: skip
# The columns a newborn job's row carries, in `runs.columns` order.
NEWBORN_COLUMNS = tuple(c for c in RUNS_COLUMN_NAMES if c not in NEWBORN_LITERALS)


class Newborn:
    """Tells rows (in `runs.columns` order) of newborn jobs from others, and
    shortens them to NEWBORN_COLUMNS; `row` is a newborn job's."""

    def __init__(self, row: Sequence[Any]) -> None:
        self._literals_of = operator.itemgetter(*map(RUNS_COLUMN_NAMES.index, NEWBORN_LITERALS))
        self._literals = self._literals_of(row)
        self.bound = operator.itemgetter(*map(RUNS_COLUMN_NAMES.index, NEWBORN_COLUMNS))
        # column -> the value every newborn job holds in it
        self.values: dict[str, Any] = dict(zip(NEWBORN_LITERALS, self._literals, strict=True))

    def __call__(self, row: Sequence[Any]) -> bool:
        """Whether `row` is a newborn job's (compared as Python compares: 0 == 0.0)."""
        return bool(self._literals_of(row) == self._literals)


def sql_literal(value: Any, postgres: bool) -> str:
    """A value of `Newborn.values` as a literal of PostgreSQL's or SQLite's SQL.
    Not SQLAlchemy's `literal_binds`: it writes b"" as '', which SQLite would
    store as text and read back as a str."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return ("true" if value else "false") if postgres else str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes):
        return f"decode('{value.hex()}', 'hex')" if postgres else f"X'{value.hex()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {value!r}")
