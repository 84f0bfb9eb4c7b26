"""The router's job queue: priorities, FIFO within a batch, fairness between batches.

Owns the order in which queued jobs are offered for dispatch: higher priority
first; within one priority, batches take turns round-robin so a big batch
never starves a small one; within a batch, first in first out. Paused batches
and jobs whose retry backoff has not expired are passed over, not removed.
Each step of dispatch costs the same whatever a batch holds (one of 200,000
queued jobs costs what one of ten does): only the first :data:`LOOK_AHEAD`
jobs of a batch are looked at, and counts per priority are kept as they change.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterator

__all__ = ["JobQueue"]


#: How far into one batch's queue dispatch looks for a job whose retry
#: back-off has expired (retries go to the front): every step stays O(1),
#: however many jobs a batch holds.
LOOK_AHEAD = 64


class JobQueue:
    """Priority → round-robin ring of batches → FIFO of job ids."""

    def __init__(self) -> None:
        # priority -> OrderedDict(batch id -> deque of job ids); the dict order is the ring
        self._levels: dict[int, collections.OrderedDict[str, collections.deque[str]]] = {}
        self._where: dict[str, tuple[int, str]] = {}
        self._counts: collections.Counter[int] = collections.Counter()

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, job: str) -> bool:
        return job in self._where

    def push(self, job: str, batch: str, priority: int, *, front: bool = False) -> None:
        """Queue ``job`` (``front=True`` for a retry, so it is not sent to the back)."""
        ring = self._levels.setdefault(priority, collections.OrderedDict())
        fifo = ring.setdefault(batch, collections.deque())
        if front:
            fifo.appendleft(job)
        else:
            fifo.append(job)
        self._where[job] = (priority, batch)
        self._counts[priority] += 1

    def remove(self, job: str) -> bool:
        """Drop ``job`` if queued; return whether it was."""
        where = self._where.pop(job, None)
        if where is None:
            return False
        priority, batch = where
        self._counts[priority] -= 1
        if not self._counts[priority]:
            del self._counts[priority]
        ring = self._levels[priority]
        fifo = ring[batch]
        if fifo[0] == job:  # the usual case (dispatch takes from the front): O(1)
            fifo.popleft()
        else:
            fifo.remove(job)
        if not fifo:
            del ring[batch]
            if not ring:
                del self._levels[priority]
        return True

    def jobs_of(self, batch: str) -> list[str]:
        """Queued jobs of ``batch``."""
        return [j for j, (_, b) in self._where.items() if b == batch]

    def by_priority(self) -> dict[int, int]:
        """Queue length per priority."""
        return dict(self._counts)

    def candidates(self, eligible: Callable[[str, str], bool]) -> Iterator[str]:
        """Yield queued jobs in dispatch order; ``eligible(job, batch)`` filters.

        Taking a yielded job (``take``) rotates its batch to the back of its
        priority's ring, which is what makes equal-priority batches alternate.
        """
        for priority in sorted(self._levels, reverse=True):
            ring = self._levels.get(priority)
            if not ring:
                continue
            for batch in list(ring):
                fifo = ring.get(batch)
                if not fifo:
                    continue
                for job in list(itertools.islice(fifo, LOOK_AHEAD)):
                    if eligible(job, batch):
                        yield job
                        break

    def take(self, job: str) -> None:
        """Remove ``job`` for dispatch and rotate its batch to the back of its ring."""
        priority, batch = self._where[job]
        self.remove(job)
        ring = self._levels.get(priority)
        if ring is not None and batch in ring:
            ring.move_to_end(batch)
