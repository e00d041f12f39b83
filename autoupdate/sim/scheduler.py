"""Batch schedulers for the simulated cluster.

Both see the cluster through four calls: `cluster.queue` (FIFO list of SimJob),
`cluster.allocate(job, t)` (where it could start now, honouring drains, reboots and maintenance
reservations, or None), `cluster.start_job(job, alloc, t)` and `cluster.free_cores`.
"""
from __future__ import annotations

from operator import attrgetter


class FCFS:
    """First come, first served: start queued jobs in order while the head fits."""

    name = "fcfs"

    def schedule(self, cluster, t: float) -> None:
        queue = cluster.queue
        while queue:
            alloc = cluster.allocate(queue[0], t)
            if alloc is None:
                return
            cluster.start_job(queue.pop(0), alloc, t)


class EasyBackfill(FCFS):
    """FCFS plus EASY backfill (Lifka 1995, as in Slurm's sched/backfill with one reservation):
    the blocked head job gets a start time (the shadow time, from the running jobs' time limits);
    a later job may jump ahead if it fits now and either ends, by its own limit, before the
    shadow time or uses only cores the head will not need. Actual run times decide when jobs
    end, so the head often starts earlier than promised, never later.

    `max_job_test` bounds the jobs looked at per pass, like Slurm's bf_max_job_test.
    """

    name = "easy"

    def __init__(self, max_job_test: int = 200):
        self.max_job_test = max_job_test

    def schedule(self, cluster, t: float) -> None:
        super().schedule(cluster, t)
        queue = cluster.queue
        if len(queue) < 2 or cluster.free_cores <= 0:
            return
        shadow, extra = self.shadow(cluster, queue[0], t)
        started = []
        for job in queue[1:self.max_job_test]:
            free = cluster.free_cores
            if free <= 0:
                break
            need = cluster.cores_needed(job)
            if need > free:
                continue
            past_shadow = t + job.limit > shadow
            if past_shadow and need > extra:
                continue
            alloc = cluster.allocate(job, t)
            if alloc is None:
                continue
            cluster.start_job(job, alloc, t)
            started.append(job)
            if past_shadow:
                extra -= need
        if started:
            gone = {id(j) for j in started}
            queue[:] = [j for j in queue if id(j) not in gone]

    @staticmethod
    def shadow(cluster, head, t: float) -> tuple[float, int]:
        """When the head job can start at the latest (by time limits), and the cores spare then.
        Maintenance reservations ahead: the head's start must also keep clear of them."""
        if cluster.reservations_ahead(t):
            return cluster.earliest_start(head, t)
        need = cluster.cores_needed(head)
        avail = cluster.free_cores
        if avail >= need:
            return t, avail - need
        for job in sorted(cluster.jobs.values(), key=attrgetter("limit_end")):
            avail += cluster.releasable_cores(job)
            if avail >= need:
                return job.limit_end, avail - need
        return float("inf"), 0


SCHEDULERS = {"fcfs": FCFS, "easy": EasyBackfill}


def make(name: str):
    try:
        return SCHEDULERS[name]()
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r} (expected {', '.join(SCHEDULERS)})") from None
