"""Garbage-collector settings for a process whose whole job is serving: `dispatcher
serve` and `Worker.run()` apply them once they have started.

CPython's cyclic collector runs a young collection every 700 allocations of
container objects, and every so often a full one that walks every tracked
object in the process: each imported module's functions, classes and
constants, about 120,000 of them once the server's modules are imported. A
server or worker allocates and frees a task, a coroutine and a few messages
per job, almost all freed by reference counting alone, so those passes find
little to collect. Measured
with `gc.callbacks` over a drain of 20,000 no-op jobs (2 SDK workers,
Redis + PostgreSQL, 2-core VM): with the defaults each worker spent
0.28-0.33 s in the collector and the server 0.19-0.20 s, of which one full
collection alone took 70 ms, a pause that every process on the job's path
waits out; with these settings a worker spent 0.03 s in its whole life and
the server 0.004 s during the drain.

So: collect once, then `gc.freeze()` what is alive (it is never scanned
again, and never freed by the collector: the startup objects live as long as
the process anyway), and collect the young generation every `YOUNG_THRESHOLD`
allocations instead of 700. Cyclic garbage still goes, a little later.
"""

from __future__ import annotations

import gc

# A young collection costs about what the young objects still alive cost to
# walk (the jobs in flight), however many were allocated and freed since the
# last one: fewer collections, each about as cheap.
YOUNG_THRESHOLD = 10_000


def tune_for_service() -> None:
    """Freeze the objects alive now and collect young objects less often.

    For a process that is only a server or a worker, called once it has
    started; calling it again freezes what has been added since. An
    application that runs a worker with `async with Worker(...)` in a
    process of its own may call it too; one that also does other work with
    long-lived objects it later drops in cycles should not.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
