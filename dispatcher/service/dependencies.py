"""Job dependencies: a job WAITING on others becomes ready when all succeeded,
and is cancelled when one of them is dead-lettered or cancelled.

Propagation happens inside the transaction that makes a job terminal, so a
crash cannot leave a dependent waiting forever; cancellation cascades to the
dependents of dependents in the same transaction. Only jobs flagged
`has_dependents` cost a lookup.
"""

from __future__ import annotations

from collections.abc import Sequence

from dispatcher.domain import transitions
from dispatcher.domain.errors import FieldViolation, InvalidArgument
from dispatcher.domain.models import Job, JobChange, JobSpec, JobState
from dispatcher.store.sql.runs import RunsTx

FAILED = (JobState.DEAD_LETTERED, JobState.CANCELLED)


async def propagate(tx: RunsTx, changes: Sequence[JobChange], now_ms: int) -> list[JobChange]:
    """The further changes that `changes` cause in waiting dependents (not yet saved)."""
    extra: list[JobChange] = []
    finished = [c.after for c in changes if _newly_finished(c) and c.after.has_dependents]
    while finished:
        waiting = await tx.lock(await tx.dependents_of([j.id for j in finished]))
        deps = {d for job in waiting.values() for d in job.depends_on}
        states = await tx.states(sorted(deps))
        states.update({j.id: j.state for j in finished})
        next_round: list[Job] = []
        for job in waiting.values():
            after = _resolve(job, states, now_ms)
            if after is not None:
                extra.append(JobChange(job, after, now_ms))
                if after.state.terminal and after.has_dependents:
                    next_round.append(after)
        finished = next_round
    return extra


def _newly_finished(c: JobChange) -> bool:
    return c.after.state.terminal and not c.before.state.terminal


def _resolve(job: Job, states: dict[str, JobState], now_ms: int) -> Job | None:
    if job.state is not JobState.WAITING:
        return None
    for dep in job.depends_on:
        if states.get(dep) in FAILED:
            return transitions.fail_dependency(job, dep, states[dep], now_ms)
    if all(states.get(dep) is JobState.SUCCEEDED for dep in job.depends_on):
        return transitions.unblock(job, now_ms)
    return None


async def initial_state(
    tx: RunsTx, ns: str, spec: JobSpec, prefix: str
) -> tuple[JobState | None, str]:
    """For a new job with dependencies: WAITING, CANCELLED (a dependency failed) or None
    (all succeeded: start normally), with the failed dependency's id if any."""
    deps = await tx.lock(spec.depends_on)
    missing = [
        FieldViolation(f"{prefix}.depends_on[{i}]", "no job with this id in the namespace")
        for i, d in enumerate(spec.depends_on)
        if d not in deps or deps[d].namespace != ns
    ]
    if missing:
        raise InvalidArgument(missing)
    for d in spec.depends_on:
        if deps[d].state in FAILED:
            return JobState.CANCELLED, d
    if all(deps[d].state is JobState.SUCCEEDED for d in spec.depends_on):
        return None, ""
    return JobState.WAITING, ""
