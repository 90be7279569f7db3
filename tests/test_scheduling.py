"""Scheduling arithmetic: how batches are grouped into Dask tasks, and thread counts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from geoseg.core.plan import make_plan
from geoseg.run.scheduling import batches_per_task, cpu_threads_per_call, local_threads, task_ranges


@given(
    n=st.integers(0, 3000),
    per_task=st.integers(1, 64),
    threads=st.integers(1, 32),
)
def test_task_ranges_partition_the_batches_and_shrink_at_the_end(n, per_task, threads):
    ranges = task_ranges(n, per_task, threads)
    assert [i for r in ranges for i in r] == list(range(n))  # every batch once, in order
    sizes = [len(r) for r in ranges]
    assert all(1 <= s <= per_task for s in sizes)
    assert sizes == sorted(sizes, reverse=True)
    done = 0
    for s in sizes:
        remaining = n - done
        # no task takes more than its share of what is left (or one batch)
        assert s == 1 or s * 2 * threads <= remaining
        done += s


@given(n=st.integers(1, 3000), per_task=st.integers(1, 64), threads=st.integers(1, 32))
def test_task_ranges_use_full_tasks_while_work_is_plentiful(n, per_task, threads):
    sizes = [len(r) for r in task_ranges(n, per_task, threads)]
    full = max(0, n // per_task - 2 * threads)  # tasks that start with > 2*threads*per_task left
    assert sizes[:full] == [per_task] * full


def test_a_task_holds_about_a_megapixel_of_windows():
    plan = make_plan(4096, 4096, tile=256, overlap=64, batch_size=2)
    assert batches_per_task(plan) == 8  # 16 windows of 256^2
    plan = make_plan(4096, 4096, tile=512, overlap=128, batch_size=1)
    assert batches_per_task(plan) == 4
    plan = make_plan(4096, 4096, tile=2048, overlap=128, batch_size=4)
    assert batches_per_task(plan) == 1
    assert batches_per_task(plan, pixels=1) == 1


def test_thread_counts_share_the_cores():
    assert [local_threads(c) for c in (1, 2, 3, 4, 16)] == [2, 2, 3, 4, 4]
    assert cpu_threads_per_call(2, cores=2) == 1
    assert cpu_threads_per_call(4, cores=16) == 4
    assert cpu_threads_per_call(4, cores=2) == 1


def test_worker_processes_split_their_share_of_cores_into_model_threads():
    from geoseg.run.scheduling import process_layout

    assert process_layout(1, cores=2) == (2, 1)  # two 1-thread model calls side by side
    assert process_layout(2, cores=2) == (1, 1)
    assert process_layout(4, cores=2) == (1, 1)  # oversubscribed, as asked
    assert process_layout(2, cores=16) == (4, 2)
    assert process_layout(1, cores=64) == (4, 16)
