"""Where the selection's per-row work runs: this process (and its cores), or the tasks of a Ray cluster.

The selection (``ftc.data.select``) cuts its per-row passes into ordered chunks (rows read, checked and scanned for
personal data; languages detected; MinHash band keys) and hands them to an engine's ``map``. The decisions that need
every row (groups across files, the example kept of each, the split) stay in the calling process, on what the
chunks return. An engine only decides where a chunk runs, so the selection is the same on either, row for row
(``tests/integration/test_data_engine.py``), and the cache entry one writes the other reads.

- ``local`` (data.engine=local): chunks run in this process, and the MinHash chunks of a large set in worker
  processes over up to 4 of this machine's cores.
- ``ray`` (data.engine=ray): chunks are Ray tasks, sent with their rows through Ray's object store (the cluster's
  nodes need ftc installed, not the data files), at most two a CPU in flight so that a million rows are not all in
  the object store at once; results come back in order. The cluster is data.ray_address, or a private Ray instance
  on this machine's cores when it is null.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import multiprocessing
import os
from typing import Any, Callable, Iterable, Iterator, Optional

from ftc.errors import UserError

STALL_S = 300.0
"""A task without a result after this long (a chunk takes seconds) is cancelled and run again, once; a second
stall is an error. Once, at a million rows on a local two-node cluster, Ray left two tasks 'submitted to a worker'
whose workers sat idle, and the plan waited with no end."""
MAX_LOCAL_WORKERS = 4
"""Worker processes the local engine starts at most: the MinHash chunks gain little past this, and each costs a
fresh interpreter's memory."""


class Local:
    """Chunks in this process; with ``parallel``, in worker processes over this machine's cores."""

    name = "local"

    def map(self, fn: Callable[..., Any], jobs: Iterable[Any], parallel: bool = False, shared: Any = None
            ) -> Iterator[Any]:
        """``fn(job)`` of each job (``fn(job, shared)`` when ``shared`` is given), in order. ``parallel``: in spawned
        worker processes (not forked: this process may hold threads), worth their start-up only for a large set;
        jobs are taken as the workers ask for them."""
        cores = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                    MAX_LOCAL_WORKERS)
        if shared is not None:
            fn = functools.partial(_with, fn, shared)
        if not (parallel and cores > 1):
            yield from map(fn, jobs)
            return
        with multiprocessing.get_context("spawn").Pool(cores) as pool:
            yield from pool.imap(fn, jobs)


class OnRay:
    """Chunks as Ray tasks on the cluster ``ray.init`` connected this process to."""

    name = "ray"

    def map(self, fn: Callable[..., Any], jobs: Iterable[Any], parallel: bool = False, shared: Any = None
            ) -> Iterator[Any]:
        """``fn(job)`` (``fn(job, shared)``) of each job as a Ray task (one CPU each), in order, with at most two
        tasks a cluster CPU in flight; ``shared`` is put in the object store once, not sent with every task.
        ``parallel`` is ignored: every chunk is a task (a small set is not worth a cluster, but asking for one is the
        user's choice)."""
        import ray

        task = ray.remote(num_cpus=1)(fn)
        extra = () if shared is None else (ray.put(shared),)  # a task's ObjectRef argument arrives as its value
        window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))

        def result(job: Any, ref: Any, again: bool = False) -> Any:
            try:
                return ray.get(ref, timeout=STALL_S)
            except ray.exceptions.GetTimeoutError:
                ray.cancel(ref, force=True)
                if again:
                    raise UserError(f"data.engine=ray: a {fn.__name__} task gave no result in {STALL_S:g} s, twice; "
                                    "is the cluster short of CPUs or memory (ray status)? Or use data.engine=local"
                                    ) from None
                logging.getLogger("ftc").warning(f"data.engine=ray: a {fn.__name__} task gave no result in "
                                                 f"{STALL_S:g} s; cancelled and run again")
                return result(job, task.remote(job, *extra), again=True)

        pending: collections.deque = collections.deque()
        for job in jobs:
            pending.append((job, task.remote(job, *extra)))
            if len(pending) >= window:
                yield result(*pending.popleft())
        while pending:
            yield result(*pending.popleft())


Engine = Local | OnRay


@contextlib.contextmanager
def engine(name: str, address: Optional[str]) -> Iterator[Engine]:
    """The engine data.engine names, connected for the selection's duration: for ``ray``, to data.ray_address (or a
    private Ray instance on this machine when it is null), unless this process is connected to a cluster already;
    a Ray instance it started is shut down afterwards."""
    if name == "local":
        yield Local()
        return
    try:
        import ray
    except ImportError:
        raise UserError("data.engine=ray: Ray is not installed on this machine (pip install 'ftc[distributed]'), "
                        "or use data.engine=local") from None
    if ray.is_initialized():
        yield OnRay()
        return
    try:
        if address:
            _reachable(address)  # Ray itself retries an address that does not answer for minutes
            ray.init(address=address, log_to_driver=False)
        else:  # "local": a new private instance, never a cluster someone started on this machine with `ray start`
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    except (OSError, RuntimeError, ValueError) as e:  # ConnectionError is an OSError
        where = f"data.ray_address={address}" if address else "a local Ray instance"
        raise UserError(f"data.engine=ray: cannot connect to {where} ({type(e).__name__}: {str(e)[:300]}); give the "
                        "address of a running cluster (ray start --head prints it), or data.engine=local") from None
    try:
        yield OnRay()
    finally:
        ray.shutdown()


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Raises OSError when ``host:port`` (or ``ray://host:port``) takes no connection within ``timeout_s``; other
    addresses (``auto``) are Ray's to look up."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if host and port.isdigit():
        socket.create_connection((host, int(port)), timeout=timeout_s).close()


def _with(fn: Callable[..., Any], shared: Any, job: Any) -> Any:
    return fn(job, shared)
