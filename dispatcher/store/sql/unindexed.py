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
