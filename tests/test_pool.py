"""The worker pool's threads: how they are scheduled."""
from __future__ import annotations

import os
import threading

import pytest

from ktlswsgi.pool import WorkerPool


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux only")
def test_workers_run_as_sched_batch_and_the_caller_is_left_alone():
    """SCHED_BATCH: a worker woken for a job does not preempt the reactor (which
    keeps the default policy) only to block on the GIL it holds."""
    pool = WorkerPool(2, 4)
    pool.start()
    seen = []
    done = threading.Event()

    def job():
        seen.append(os.sched_getscheduler(0))
        done.set()

    try:
        assert pool.submit(job)
        assert done.wait(5)
    finally:
        pool.shutdown(5)
    assert seen == [os.SCHED_BATCH]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
