"""The router's job queue: priorities, largest file first, fairness between batches.

Owns the order in which queued jobs are offered for dispatch: higher priority
first; within one priority, batches take turns round-robin so a big batch
never starves a small one; within a batch, retries and jobs handed back
first (in the order they came back), then the **largest input first** — the
file's size at submit is the proxy for its work — so that one 24 MP image
does not start last and leave the other cores idle at the end of a batch;
equal sizes keep submit order. The in-process worker that covers the pool's
start asks for the *smallest* job instead (:meth:`JobQueue.candidates`
``smallest=True``): quick jobs that keep its process's GIL free. Paused
batches and jobs whose retry backoff has not expired are passed over, not
removed. Each step of dispatch costs O(log n) whatever a batch holds: the
sizes sit in two heaps whose taken entries are dropped lazily, and only the
first :data:`LOOK_AHEAD` handed-back jobs of a batch are looked at.
"""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Callable, Iterator

__all__ = ["JobQueue"]


#: How far into one batch's handed-back jobs dispatch looks for one whose retry
#: back-off has expired: every step stays O(1), however many a batch holds.
LOOK_AHEAD = 64


class _Lane:
    """One batch's queued jobs at one priority."""

    __slots__ = ("front", "big", "small", "count")

    def __init__(self) -> None:
        self.front: collections.deque[tuple[str, int]] = collections.deque()  # (job, token)
        self.big: list[tuple[int, int, str, int]] = []  # (-size, seq, job, token): a max-heap
        self.small: list[tuple[int, int, str, int]] = []  # (size, seq, job, token): a min-heap
        self.count = 0


class JobQueue:
    """Priority → round-robin ring of batches → (handed-back FIFO, then largest first)."""

    def __init__(self) -> None:
        # priority -> OrderedDict(batch id -> lane); the dict order is the ring
        self._levels: dict[int, collections.OrderedDict[str, _Lane]] = {}
        self._where: dict[str, tuple[int, str, int]] = {}  # job -> (priority, batch, token)
        self._counts: collections.Counter[int] = collections.Counter()
        self._tokens = itertools.count(1)
        self._stale = 0  # heap entries of jobs no longer queued (dropped lazily)
        self._entries = 0  # heap entries in all lanes

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, job: str) -> bool:
        return job in self._where

    def push(self, job: str, batch: str, priority: int, *, front: bool = False, size: int = 0) -> None:
        """Queue ``job`` of ``size`` input bytes (``front=True`` for a retry or a job
        handed back: it goes before the batch's fresh jobs, in the order they came)."""
        if job in self._where:
            self.remove(job)
        ring = self._levels.setdefault(priority, collections.OrderedDict())
        lane = ring.get(batch)
        if lane is None:
            lane = ring[batch] = _Lane()
        token = next(self._tokens)
        if front:
            lane.front.append((job, token))
        else:
            heapq.heappush(lane.big, (-size, token, job, token))
            heapq.heappush(lane.small, (size, token, job, token))
            self._entries += 2
        lane.count += 1
        self._where[job] = (priority, batch, token)
        self._counts[priority] += 1

    def remove(self, job: str) -> bool:
        """Drop ``job`` if queued; return whether it was."""
        where = self._where.pop(job, None)
        if where is None:
            return False
        priority, batch, token = where
        self._counts[priority] -= 1
        if not self._counts[priority]:
            del self._counts[priority]
        ring = self._levels[priority]
        lane = ring[batch]
        lane.count -= 1
        if lane.front and lane.front[0][1] == token:  # dispatch takes from the front: O(1)
            lane.front.popleft()
        elif any(t == token for _, t in lane.front):
            lane.front.remove((job, token))
        else:
            self._stale += 2  # its heap entries go when they reach the top, or at a compaction
        if not lane.count:
            self._entries -= len(lane.big) + len(lane.small)
            self._stale -= len(lane.big) + len(lane.small)
            del ring[batch]
            if not ring:
                del self._levels[priority]
        elif self._stale > 4096 and self._stale > self._entries // 2:
            self._compact()
        return True

    def _valid(self, job: str, token: int) -> bool:
        where = self._where.get(job)
        return where is not None and where[2] == token

    def _top(self, heap: list[tuple[int, int, str, int]]) -> str | None:
        """The job at the top of ``heap``, dropping entries of jobs no longer queued."""
        while heap:
            _, _, job, token = heap[0]
            if self._valid(job, token):
                return job
            heapq.heappop(heap)
            self._stale -= 1
            self._entries -= 1
        return None

    def _compact(self) -> None:
        """Rebuild every heap from its live entries (taken jobs' entries pile up otherwise)."""
        entries = 0
        for ring in self._levels.values():
            for lane in ring.values():
                lane.big = [e for e in lane.big if self._valid(e[2], e[3])]
                lane.small = [e for e in lane.small if self._valid(e[2], e[3])]
                heapq.heapify(lane.big)
                heapq.heapify(lane.small)
                entries += len(lane.big) + len(lane.small)
        self._entries = entries
        self._stale = 0

    def jobs_of(self, batch: str) -> list[str]:
        """Queued jobs of ``batch``."""
        return [j for j, (_, b, _) in self._where.items() if b == batch]

    def by_priority(self) -> dict[int, int]:
        """Queue length per priority."""
        return dict(self._counts)

    def candidates(self, eligible: Callable[[str, str], bool], *,
                   smallest: bool = False) -> Iterator[str]:
        """Yield queued jobs in dispatch order, at most one per batch; ``eligible(job, batch)`` filters.

        Per batch: the first eligible handed-back job (among the first
        :data:`LOOK_AHEAD`), else its largest fresh job — its smallest with
        ``smallest=True``. Taking a yielded job (``take``) rotates its batch
        to the back of its priority's ring, which is what makes
        equal-priority batches alternate.
        """
        for priority in sorted(self._levels, reverse=True):
            ring = self._levels.get(priority)
            if not ring:
                continue
            for batch in list(ring):
                lane = ring.get(batch)
                if lane is None:
                    continue
                found = None
                for job, token in list(itertools.islice(lane.front, LOOK_AHEAD)):
                    if self._valid(job, token) and eligible(job, batch):
                        found = job
                        break
                if found is None:
                    top = self._top(lane.small if smallest else lane.big)
                    if top is not None and eligible(top, batch):
                        found = top
                if found is not None:
                    yield found

    def take(self, job: str) -> None:
        """Remove ``job`` for dispatch and rotate its batch to the back of its ring."""
        priority, batch, _ = self._where[job]
        self.remove(job)
        ring = self._levels.get(priority)
        if ring is not None and batch in ring:
            ring.move_to_end(batch)
