"""The one batch engine: work items run on Dask distributed (or in this process), each written
atomically into its own folder, resumable, one failure never stopping the rest.

Layout of an output folder OUT:
- `OUT/manifest.json`: every item (id, task, args) the batch holds; a rerun adds new items to it.
- `OUT/<id>/`: one item's outputs. The task writes into `OUT/.partial/<id>.<unique>/`; the done-marker
  `DONE.json` (the task's result, seconds, worker, peak memory) is written last and the folder is then
  renamed to `OUT/<id>` in one step, so an item folder either is complete or does not exist. A rerun
  skips items with a done-marker, retries the others and clears `.partial/` (what a killed run left).
- `OUT/status.json`: per item "done" or "failed" with its one-line reason, rewritten atomically as
  results arrive (and once more when the run ends, however it ends).

Every item's args and the batch's model are its result-affecting options: `DONE.json` records them, and a
rerun whose item has other args (or another model) removes the old folder and recomputes it, saying so
(`BatchSummary.redone`), so an item folder always holds what the manifest says.

A task is a function `module:function` called as fn(prepared, args, folder) -> dict (JSON-serialisable),
where `prepared` is the worker's PreparedModel of the batch's model (loaded once per worker, None when
the batch names no model), args the item's dict and folder the (partial) folder to write into.
Exceptions become the item's failure reason; a worker that dies running an item is replaced by Dask,
which retries the item up to `allowed-failures` (3) times and then gives it up ("worker died").

Executors: `workers=0` runs in this process; otherwise a LocalCluster of `workers` single-threaded
worker processes (default: as many as cores, at most one per item), or the cluster at `scheduler`
("tcp://host:8786" or a scheduler file). Dask facts that shape this: the scheduler keeps no state across
restarts (resuming is the manifest's job), worker processes are daemonic (tasks start no process
pools), and an EGL context belongs to its thread (fitter.geometry.render makes one per thread).
"""
import importlib
import json
import os
import shutil
import socket
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, one_line
from .io import ensure_writable_dir, write_json_atomic

DONE_MARKER = "DONE.json"
PARTIAL = ".partial"
# A worker is one core: its libraries' own thread pools are limited to one thread, so N workers use N
# cores. BLAS/OpenMP and Mesa's llvmpipe (0: rasterise in the calling thread) by the environment, OpenCV
# and Open3D (TBB, the closest-point queries) by `pin_to_one_core` in the worker.
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                     "LP_NUM_THREADS": "0"}


def pin_to_one_core(in_this_process=False):
    """Limit OpenCV's and Open3D's thread pools in this process to the calling thread. in_this_process: a
    batch run by the command itself (`--workers 0`) is pinned like a worker, BLAS and llvmpipe included, so
    that it gives the workers' bytes (more threads change floating-point sums and llvmpipe's rasterisation)."""
    import cv2
    import open3d as o3d

    cv2.setNumThreads(1)
    if hasattr(o3d.utility, "set_max_threads"):  # open3d >= 0.20
        o3d.utility.set_max_threads(1)
    if in_this_process:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        for k, v in SINGLE_THREAD_ENV.items():  # llvmpipe reads LP_NUM_THREADS when a context is made
            os.environ[k] = v


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
    redone: list = field(default_factory=list)     # ids an earlier run made with other options, recomputed
    seconds: float = 0.0
    workers: int = 0

    def line(self):
        where = "in this process" if self.workers == 0 else f"on {self.workers} worker{'' if self.workers == 1 else 's'}"
        redone = f" ({len(self.redone)} recomputed: other options)" if self.redone else ""
        return (f"{len(self.done)} done{redone}, {len(self.skipped)} already done, {len(self.failed)} failed "
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


def _peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_item(item: WorkItem, outdir, prepared, model_name=None):
    """Run one item into its partial folder and commit it (rename) with the done-marker (which records the
    item's args and `model_name`); returns {"status": "done", "result": ...} or {"status": "failed",
    "reason": ...}. Never raises for the task's own errors; an interrupt (Ctrl-C, SIGTERM) removes the
    partial folder and is raised on."""
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
        marker = {"id": item.id, "args": item.args, "model": model_name, "result": result,
                  "seconds": round(time.perf_counter() - t0, 3),
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
    except BaseException:  # Ctrl-C or SIGTERM inside the task: nothing half-written stays
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
    return run_item(WorkItem(**item_dict), outdir, held[1], model_name)


# --- the client side ------------------------------------------------------------------------------
def _canonical(value):
    """A JSON value in one spelling (tuples as lists, keys sorted), for comparing args."""
    return json.dumps(value, sort_keys=True, default=str)


def _read_manifest(outdir):
    try:
        doc = json.loads((Path(outdir) / "manifest.json").read_text())
        return {d["id"]: d for d in doc.get("items", []) if isinstance(d, dict) and "id" in d}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _write_manifest(outdir, old, items, model_name):
    """manifest.json = the earlier manifest's items plus this run's (ids unique; this run's definition
    wins) and the batch's model."""
    by_id = dict(old)
    by_id.update({it.id: it.to_dict() for it in items})
    write_json_atomic(Path(outdir) / "manifest.json",
                      {"format": "facefit batch manifest 1", "model": model_name, "items": list(by_id.values())})


def _read_status(outdir):
    try:
        doc = json.loads((Path(outdir) / "status.json").read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def changed_options(marker, old_entry, item: WorkItem, model_name):
    """What differs between the item a done folder holds and `item` (a list of 'key: old -> new'; empty when
    it is the same item). The folder's DONE.json says what made it; a marker of an older facefit without
    args falls back to the earlier manifest's entry."""
    made = marker.get("args", old_entry.get("args") if old_entry else None)
    out = []
    if made is not None:
        for k in sorted(set(made) | set(item.args)):
            a, b = made.get(k), item.args.get(k)
            if _canonical(a) != _canonical(b):
                out.append(f"{k}: {_short(a)} -> {_short(b)}")
    made_model = marker.get("model")
    if "model" in marker and made_model != model_name:
        out.append(f"model: {made_model} -> {model_name}")
    return out


def _short(value, n=60):
    text = _canonical(value)
    return text if len(text) <= n else text[:n - 3] + "..."


def _done_status(marker):
    """status.json's entry of a done item, from its done-marker (or run_item's result)."""
    return {"status": "done", "seconds": (marker or {}).get("seconds")}


def _remove_folder(outdir, item_id):
    """Take an item's folder out of the way in one rename (then delete it)."""
    final = item_dir(outdir, item_id)
    if final.exists():
        stale = Path(outdir) / PARTIAL / f"stale.{uuid.uuid4().hex[:8]}"
        stale.parent.mkdir(parents=True, exist_ok=True)
        os.rename(final, stale)
        shutil.rmtree(stale, ignore_errors=True)


def run_batch(items, outdir, model_name=None, workers=None, scheduler=None, progress=True, log=print,
              desc="items", connect_timeout_s=20.0):
    """Run WorkItems into `outdir` (see the module docstring). workers: 0 = this process, None = as many
    as cores (at most one per item to run); scheduler: an existing cluster's address or scheduler file,
    given up after connect_timeout_s (a refused connection at once). The cluster is reached before
    anything is written. An item done by an earlier run with other args (or model) is recomputed and
    said on `log`. Returns a BatchSummary. Raises InputError for an unusable output folder or cluster."""
    t0 = time.perf_counter()
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise InputError("two work items have the same id")
    if scheduler is not None and workers is not None:
        raise InputError("give either --workers (a local cluster) or --scheduler (an existing one), not both")
    if model_name is not None and scheduler is None:  # said once here, not by every local worker per item
        from .model.store import require_installed

        require_installed(model_name)
    outdir = Path(outdir)
    old_manifest = _read_manifest(outdir)
    summary = BatchSummary()
    todo, redo = [], []
    for it in items:
        marker = read_done(outdir, it.id)
        if marker is None:
            todo.append(it)
            continue
        changed = changed_options(marker, old_manifest.get(it.id), it, model_name)
        if changed:
            todo.append(it)
            redo.append((it, changed))
        else:
            summary.skipped.append(it.id)
            summary.results[it.id] = marker.get("result", {})
    in_process = scheduler is None and (workers == 0 or (workers is None and len(todo) <= 1))
    # a wrong address or scheduler file is said before the output folder is made
    address = scheduler_address(scheduler) if scheduler is not None and todo else None
    outdir = ensure_writable_dir(outdir)
    executor = (nullcontext((None, 0)) if in_process or not todo else
                _dask_client(todo, workers, address, connect_timeout_s))
    status, status_written = {}, False
    try:
        with executor as (client, n_workers):
            shutil.rmtree(outdir / PARTIAL, ignore_errors=True)  # what a killed run left half-written
            for it, changed in redo:
                _remove_folder(outdir, it.id)
                summary.redone.append(it.id)
                log(f"facefit: {it.id}: made with other options ({'; '.join(changed)}): recomputed")
            _write_manifest(outdir, old_manifest, items, model_name)
            status.update(_read_status(outdir))
            for it in items:
                if it.id in summary.results:
                    status[it.id] = _done_status(read_done(outdir, it.id))
                elif it.id in status:
                    status[it.id] = {"status": "to do"}
            write_json_atomic(outdir / "status.json", status)
            status_written = True

            def record(it, res):
                if res["status"] == "done":
                    summary.done.append(it.id)
                    summary.results[it.id] = res.get("result", {})
                    status[it.id] = _done_status(res)
                else:
                    summary.failed[it.id] = res["reason"]
                    status[it.id] = {"status": "failed", "reason": res["reason"], "seconds": res.get("seconds")}
                write_json_atomic(outdir / "status.json", status)

            bar = Progress(len(todo), desc, progress and bool(todo))
            summary.workers = 0 if in_process else n_workers
            try:
                if in_process and todo:
                    prepared = _load_prepared(model_name)
                    pin_to_one_core(in_this_process=True)
                    for it in todo:
                        record(it, run_item(it, outdir, prepared, model_name))
                        bar.tick(summary)
                elif todo:
                    _run_on_dask(client, todo, outdir, model_name, record, lambda: bar.tick(summary))
            finally:
                bar.close()
    finally:  # however the run ended (an interrupt too), once the workers are gone:
        if status_written:
            for it in todo:  # what did finish is said so, the rest stays to do
                marker = read_done(outdir, it.id)
                if it.id not in summary.failed and marker is not None:
                    status[it.id] = _done_status(marker)
            write_json_atomic(outdir / "status.json", status)
        # every item has committed or cleaned up (or its worker is gone): what is left is debris
        shutil.rmtree(outdir / PARTIAL, ignore_errors=True)
    summary.seconds = time.perf_counter() - t0
    return summary


class Progress:
    """A batch's progress on stderr: a tqdm bar on a terminal, else a plain line at most every
    PLAIN_EVERY_S seconds (a log file gets no carriage returns; the command's summary line ends it)."""

    PLAIN_EVERY_S = 10.0

    def __init__(self, total, desc, enabled, stream=None):
        import sys

        self.total, self.desc, self.n = total, desc, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.bar = None
        self.last = time.monotonic()
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True, leave=True, file=self.stream)

    def _line(self, summary):
        return (f"facefit: {self.desc}: {self.n} of {self.total} run ({len(summary.done)} done, "
                f"{len(summary.failed)} failed)")

    def tick(self, summary):
        self.n += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(done=len(summary.done), failed=len(summary.failed), refresh=False)
            self.bar.update(1)
        elif time.monotonic() - self.last >= self.PLAIN_EVERY_S and self.n < self.total:
            self.last = time.monotonic()
            print(self._line(summary), file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def local_workers(workers, n_items):
    """The LocalCluster's size: `workers`, or as many as cores but no more than the items."""
    if workers is not None:
        if workers < 1:
            raise InputError(f"--workers must be at least 1 for a cluster (0 runs in this process), got {workers}")
        return int(workers)
    return max(1, min(os.cpu_count() or 1, n_items))


def scheduler_address(scheduler, timeout_s=3.0):
    """The tcp address of `scheduler` (an address, or a scheduler file as `dask scheduler --scheduler-file`
    writes), checked to accept connections. Raises InputError with what is wrong."""
    text = str(scheduler).strip()
    looks_like_address = "://" in text or (":" in text and text.rsplit(":", 1)[1].isdigit()
                                           and not Path(text).exists())
    if not looks_like_address:
        path = Path(text)
        if not path.is_file():
            raise InputError(f"--scheduler {text}: no such scheduler file (give tcp://HOST:PORT or the JSON file "
                             f"'dask scheduler --scheduler-file' wrote)")
        try:
            doc = json.loads(path.read_text())
            text = str(doc["address"])
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(f"--scheduler {path}: not a Dask scheduler file (JSON with an \"address\"); give "
                             f"tcp://HOST:PORT or the file 'dask scheduler --scheduler-file' wrote") from None
    proto, _, hostport = text.rpartition("://")
    if proto not in ("", "tcp", "tls"):
        raise InputError(f"--scheduler {text}: only tcp:// (or tls://) addresses are supported")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--scheduler {text}: give HOST:PORT, e.g. tcp://10.0.0.5:8786")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        why = "connection refused" if isinstance(e, ConnectionRefusedError) else (e.strerror or type(e).__name__)
        raise InputError(f"cannot reach the Dask scheduler {text}: {why} (is 'dask scheduler' running there?)") from None
    return f"{proto or 'tcp'}://{hostport}"


@contextmanager
def _dask_client(todo, workers, address, connect_timeout_s):
    """(client, worker count) of a LocalCluster of single-threaded workers (address None) or of the cluster
    at `address`; closed (with a local cluster) on exit."""
    import logging

    import dask
    from distributed import Client, LocalCluster

    cluster = client = None
    with dask.config.set({"distributed.worker.daemon": True, "distributed.scheduler.allowed-failures": 3,
                          "logging.distributed": "error"}):
        try:
            try:
                if address is None:
                    # dashboard on a free port: no 'port 8787 in use' warning, nothing served on a fixed port
                    cluster = LocalCluster(n_workers=local_workers(workers, len(todo)), threads_per_worker=1,
                                           processes=True, dashboard_address=":0", silence_logs=logging.ERROR,
                                           env=dict(SINGLE_THREAD_ENV))
                    client = Client(cluster)
                else:
                    client = Client(address, timeout=f"{connect_timeout_s}s")
            except (OSError, TimeoutError, ValueError) as e:
                raise InputError(f"cannot reach the Dask scheduler {address or '(local)'}: {one_line(e)}") from None
            yield client, len(client.scheduler_info().get("workers", {})) or 1
        finally:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()


def _run_on_dask(client, todo, outdir, model_name, record, tick):
    """Submit every item to the cluster and record each as it finishes."""
    from distributed import as_completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

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
