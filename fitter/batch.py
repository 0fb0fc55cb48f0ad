"""The one batch engine: work items run on Dask distributed (or in this process), each written
atomically into its own folder, resumable, one failure never stopping the rest.

Layout of an output folder OUT:
- `OUT/manifest.json`: every item (id, task, args) the batch holds; a rerun adds new items to it.
- `OUT/<id>/`: one item's outputs. The task writes into `OUT/.partial/<id>.<unique>/`; the done-marker
  `DONE.json` (the task's result, seconds, worker, peak memory) is written last and the folder is then
  renamed to `OUT/<id>` in one step, so an item folder either is complete or does not exist. A rerun
  skips items with a done-marker, retries the others and clears `.partial/` (what a killed run left).
- `OUT/status.json`: per item "done" or "failed" with its one-line reason, rewritten atomically as
  results arrive.

A task is a function `module:function` called as fn(prepared, args, folder) -> dict (JSON-serialisable),
where `prepared` is the worker's PreparedModel of the batch's model (loaded once per worker, None when
the batch names no model), args the item's dict and folder the (partial) folder to write into.
Exceptions become the item's failure reason; a worker that dies running an item is replaced by Dask,
which retries the item up to `allowed-failures` (3) times and then gives it up ("worker died").

Executors: `workers=0` runs in this process; otherwise a LocalCluster of `workers` single-threaded
worker processes (default: as many as cores, at most one per item), or the cluster at `scheduler`
("tcp://host:8786" or a scheduler file). Dask facts that shape this: the scheduler keeps no state across
restarts (resuming is the manifest's job), worker processes are daemonic (tasks start no process
pools), and an EGL context belongs to its thread (fitter.render makes one per thread).
"""
import importlib
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FacefitError, InputError
from .io import ensure_writable_dir, write_json_atomic

DONE_MARKER = "DONE.json"
PARTIAL = ".partial"
# A worker is one core: its libraries' own thread pools are limited to one thread, so N workers use N
# cores. BLAS/OpenMP and Mesa's llvmpipe (0: rasterise in the calling thread) by the environment, OpenCV
# and Open3D (TBB, the closest-point queries) by `pin_to_one_core` in the worker.
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                     "LP_NUM_THREADS": "0"}


def pin_to_one_core():
    """Limit OpenCV's and Open3D's thread pools in this process to the calling thread."""
    import cv2
    import open3d as o3d

    cv2.setNumThreads(1)
    if hasattr(o3d.utility, "set_max_threads"):  # open3d >= 0.20
        o3d.utility.set_max_threads(1)


@dataclass
class WorkItem:
    id: str        # the item's folder under OUT ("/" allowed for nested folders)
    task: str      # "module:function"
    args: dict

    def to_dict(self):
        return {"id": self.id, "task": self.task, "args": self.args}


@dataclass
class BatchSummary:
    done: list = field(default_factory=list)       # ids finished in this run
    skipped: list = field(default_factory=list)    # ids done by an earlier run
    failed: dict = field(default_factory=dict)     # id -> one-line reason
    results: dict = field(default_factory=dict)    # id -> the task's result (done and skipped items)
    seconds: float = 0.0
    workers: int = 0

    def line(self):
        where = "in this process" if self.workers == 0 else f"on {self.workers} worker{'' if self.workers == 1 else 's'}"
        return (f"{len(self.done)} done, {len(self.skipped)} already done, {len(self.failed)} failed "
                f"in {self.seconds:.1f} s {where}")


def item_dir(outdir, item_id):
    return Path(outdir) / item_id


def read_done(outdir, item_id):
    """The done-marker's dict of a finished item, or None."""
    p = item_dir(outdir, item_id) / DONE_MARKER
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def one_line(e: BaseException):
    """An exception as one line: the project's message, or the type and the first line of the text."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, FacefitError) else f"{type(e).__name__}: {text}" if text else type(e).__name__


def _peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_item(item: WorkItem, outdir, prepared):
    """Run one item into its partial folder and commit it (rename) with the done-marker; returns
    {"status": "done", "result": ...} or {"status": "failed", "reason": ...}. Never raises for the
    task's own errors."""
    outdir = Path(outdir)
    final = item_dir(outdir, item.id)
    marker = read_done(outdir, item.id)
    if marker is not None:  # a duplicate run (Dask may rerun a task): keep the first
        return {"status": "done", "result": marker.get("result", {})}
    tmp = outdir / PARTIAL / f"{item.id.replace('/', '__')}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        module, _, name = item.task.partition(":")
        result = getattr(importlib.import_module(module), name)(prepared, item.args, tmp) or {}
        marker = {"id": item.id, "result": result, "seconds": round(time.perf_counter() - t0, 3),
                  "worker": f"{socket.gethostname()}:{os.getpid()}", "peak_rss_mb": round(_peak_rss_mb(), 1)}
        write_json_atomic(tmp / DONE_MARKER, marker)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # a duplicate run finished first, or a folder that is not ours stands there
            earlier = read_done(outdir, item.id)
            if earlier is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                return {"status": "done", "result": earlier.get("result", {})}
            stale = outdir / PARTIAL / f"stale.{uuid.uuid4().hex[:8]}"
            os.rename(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.rename(tmp, final)
        return {"status": "done", "result": result, "seconds": marker["seconds"]}
    except Exception as e:  # noqa: BLE001 - one item's failure is recorded, never fatal to the batch
        shutil.rmtree(tmp, ignore_errors=True)
        return {"status": "failed", "reason": one_line(e), "seconds": round(time.perf_counter() - t0, 3)}


# --- the worker side ------------------------------------------------------------------------------
def _load_prepared(model_name):
    if model_name is None:
        return None
    from .prepared import PreparedModel

    return PreparedModel.load(model_name)


def _dask_run_item(item_dict, outdir, model_name):
    """A Dask task: the item, with the worker's PreparedModel (loaded by the worker's first task and
    kept on the worker object for the next ones)."""
    from distributed import get_worker

    worker = get_worker()
    held = getattr(worker, "facefit_prepared", None)
    if held is None or held[0] != model_name:
        pin_to_one_core()
        held = worker.facefit_prepared = (model_name, _load_prepared(model_name))
    return run_item(WorkItem(**item_dict), outdir, held[1])


# --- the client side ------------------------------------------------------------------------------
def _update_manifest(outdir, items):
    """manifest.json = the earlier manifest's items plus the new ones (ids unique; the new definition
    wins)."""
    path = Path(outdir) / "manifest.json"
    old = []
    if path.exists():
        try:
            old = json.loads(path.read_text()).get("items", [])
        except (OSError, ValueError):
            old = []
    by_id = {d["id"]: d for d in old}
    by_id.update({it.id: it.to_dict() for it in items})
    write_json_atomic(path, {"format": "facefit batch manifest 1", "items": list(by_id.values())})


def _read_status(outdir):
    try:
        return json.loads((Path(outdir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def run_batch(items, outdir, model_name=None, workers=None, scheduler=None, progress=True, log=print,
              desc="items", connect_timeout_s=20.0):
    """Run WorkItems into `outdir` (see the module docstring). workers: 0 = this process, None = as many
    as cores (at most one per item to run); scheduler: an existing cluster's address or scheduler file,
    given up after connect_timeout_s.
    Returns a BatchSummary. Raises InputError for an unusable output folder or cluster."""
    t0 = time.perf_counter()
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise InputError("two work items have the same id")
    outdir = ensure_writable_dir(outdir)
    shutil.rmtree(outdir / PARTIAL, ignore_errors=True)  # what a killed run left half-written
    _update_manifest(outdir, items)
    summary = BatchSummary()
    status = _read_status(outdir)
    todo = []
    for it in items:
        marker = read_done(outdir, it.id)
        if marker is not None:
            summary.skipped.append(it.id)
            summary.results[it.id] = marker.get("result", {})
            status[it.id] = {"status": "done", "seconds": marker.get("seconds")}
        else:
            todo.append(it)
    write_json_atomic(outdir / "status.json", status)

    def record(it, res):
        if res["status"] == "done":
            summary.done.append(it.id)
            summary.results[it.id] = res.get("result", {})
            status[it.id] = {"status": "done", "seconds": res.get("seconds")}
        else:
            summary.failed[it.id] = res["reason"]
            status[it.id] = {"status": "failed", "reason": res["reason"], "seconds": res.get("seconds")}
        write_json_atomic(outdir / "status.json", status)

    if todo:
        bar = _progress_bar(len(todo), desc, progress)
        try:
            if scheduler is None and (workers == 0 or (workers is None and len(todo) == 1)):
                summary.workers = 0
                prepared = _load_prepared(model_name)
                for it in todo:
                    record(it, run_item(it, outdir, prepared))
                    _tick(bar, summary)
            else:
                summary.workers = _run_on_dask(todo, outdir, model_name, workers, scheduler, connect_timeout_s, record,
                                               lambda: _tick(bar, summary))
        finally:
            if bar is not None:
                bar.close()
    try:
        (outdir / PARTIAL).rmdir()  # empty once every item has committed or cleaned up
    except OSError:
        pass
    summary.seconds = time.perf_counter() - t0
    return summary


def _progress_bar(total, desc, enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True, leave=True)


def _tick(bar, summary):
    if bar is not None:
        bar.set_postfix(done=len(summary.done), failed=len(summary.failed), refresh=False)
        bar.update(1)


def local_workers(workers, n_items):
    """The LocalCluster's size: `workers`, or as many as cores but no more than the items."""
    if workers is not None:
        if workers < 1:
            raise InputError(f"--workers must be at least 1 for a cluster (0 runs in this process), got {workers}")
        return int(workers)
    return max(1, min(os.cpu_count() or 1, n_items))


def _run_on_dask(todo, outdir, model_name, workers, scheduler, connect_timeout_s, record, tick):
    """Submit every item to a Dask cluster and record each as it finishes; returns the worker count."""
    import logging

    import dask
    from distributed import Client, LocalCluster, as_completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    cluster = None
    with dask.config.set({"distributed.worker.daemon": True, "distributed.scheduler.allowed-failures": 3,
                          "logging.distributed": "error"}):
        try:
            if scheduler is None:
                n = local_workers(workers, len(todo))
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=logging.ERROR, env=dict(SINGLE_THREAD_ENV))
                client = Client(cluster)
            else:
                kw = {"scheduler_file": scheduler} if Path(scheduler).is_file() else {"address": scheduler}
                client = Client(timeout=f"{connect_timeout_s}s", **kw)
        except (OSError, TimeoutError, ValueError) as e:
            if cluster is not None:
                cluster.close()
            raise InputError(f"cannot reach the Dask scheduler {scheduler or '(local)'}: {one_line(e)}") from None
        try:
            n_workers = len(client.scheduler_info().get("workers", {})) or 1
            futures = {}
            for it in todo:
                f = client.submit(_dask_run_item, it.to_dict(), str(outdir), model_name, pure=False,
                                  key=f"facefit-{it.id}-{uuid.uuid4().hex[:8]}")
                futures[f] = it
            for f in as_completed(list(futures)):
                it = futures[f]
                try:
                    res = f.result()
                except KilledWorker:
                    res = {"status": "failed", "reason": "worker died running it (killed, out of memory or a "
                                                        "crash), given up after 3 tries"}
                except (FutureCancelledError, Exception) as e:  # noqa: BLE001 - recorded per item
                    res = {"status": "failed", "reason": one_line(e)}
                record(it, res)
                tick()
            return n_workers
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
