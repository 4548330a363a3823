"""`unindexed(column)`: a column SQLite may not reach rows through an index of.

SQLite plans without statistics (the dispatcher never runs ANALYZE), and then
prefers an index with an equality term over one with a range: `state IN (...)`
takes `ix_runs_state_queue`. For the periodic scans that is a walk of every live
row on each pass. On a table of 460,000 queued jobs the reaper's start-deadline
check read them all (78 ms, every 0.5 s: an idle server spent 10-17% of a core
on it) and each reconciler page read and sorted them all to return 1,000 (45
ms; a rebuild of the index is all its pages). Written `+state`, the term cannot
use an index (SQLite's documented way to disqualify one), so the first scan
takes the partial index of jobs with a deadline and the second walks the
primary key from its cursor. Other dialects get the column as it is:
PostgreSQL plans with the statistics autovacuum keeps.

The walk's cost is the rows it passes, live or not: where finished jobs
precede the live ones (455,000 finished, then 5,000 queued), the first page
of each pass read 64-70 ms of finished rows where the state index took
1.3-1.6 ms; later pages cost under 1 ms either way. A pass is one such page
per 5,000 live jobs, a rebuild one walk of the table (where the state index
read every live row for each page of 1,000), and the retention sweep bounds
the finished rows.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

T = TypeVar("T")


class Unindexed(ColumnElement[T]):
    """The column, rendered `+column` on SQLite."""

    inherit_cache = True
    # The column is part of the statement's cache key.
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]  # noqa: RUF012

    def __init__(self, column: ColumnElement[T]) -> None:
        self.column = column
        self.type = column.type


def unindexed(column: ColumnElement[T]) -> Unindexed[T]:
    return Unindexed(column)


@compiles(Unindexed)
def _as_is(element: Unindexed[Any], compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(Unindexed, "sqlite")
def _with_plus(element: Unindexed[Any], compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.column, **kw)
