"""The batch engine (fitter.batch): manifest, atomic item folders, resume, failures, Dask executors."""
import json
import os
import sys
from pathlib import Path

import pytest

from fitter.batch import DONE_MARKER, PARTIAL, WorkItem, run_batch

HERE = Path(__file__).resolve().parent


def _items(tmp_path, n=4, fail_flag=None):
    items = [WorkItem(f"group/item{k}", "batch_tasks:square", {"x": k}) for k in range(n)]
    items.append(WorkItem("bad", "batch_tasks:square", {"x": 7, "fail_if": str(fail_flag)}))
    return items


def test_manifest_resume_and_failures(tmp_path):
    flag = tmp_path / "fail.flag"
    flag.write_text("fail")
    out = tmp_path / "out"
    s1 = run_batch(_items(tmp_path, fail_flag=flag), out, workers=0, progress=False)
    assert sorted(s1.done) == [f"group/item{k}" for k in range(4)]
    assert s1.failed == {"bad": "ValueError: asked to fail"}  # one line, the type named
    assert (out / "group" / "item3" / "out.txt").read_text() == "9"
    status = json.loads((out / "status.json").read_text())
    assert status["bad"]["status"] == "failed" and status["group/item0"]["status"] == "done"
    manifest = json.loads((out / "manifest.json").read_text())
    assert {d["id"] for d in manifest["items"]} == {"bad"} | {f"group/item{k}" for k in range(4)}
    assert not (out / "bad").exists()  # a failed item leaves no folder
    marker = (out / "group" / "item0" / DONE_MARKER).read_text()
    # a killed run's leftovers: a half-written partial folder
    (out / PARTIAL / "bad.123.abcd").mkdir(parents=True)
    (out / PARTIAL / "bad.123.abcd" / "out.txt").write_text("half")
    flag.unlink()
    s2 = run_batch(_items(tmp_path, fail_flag=flag), out, workers=0, progress=False)
    assert s2.done == ["bad"] and sorted(s2.skipped) == [f"group/item{k}" for k in range(4)] and not s2.failed
    assert (out / "group" / "item0" / DONE_MARKER).read_text() == marker  # not redone
    assert (out / "bad" / "out.txt").read_text() == "49"
    assert not any((out / PARTIAL).iterdir()) if (out / PARTIAL).exists() else True
    assert s2.results["group/item2"]["y"] == 4  # results of skipped items come from their markers


def test_duplicate_ids_refused(tmp_path):
    from fitter.errors import InputError

    with pytest.raises(InputError, match="same id"):
        run_batch([WorkItem("a", "batch_tasks:square", {"x": 1})] * 2, tmp_path / "o", workers=0, progress=False)


def test_dask_local_cluster_same_results_and_dead_worker_retried(tmp_path):
    items = _items(tmp_path, fail_flag=tmp_path / "absent")
    items.append(WorkItem("dies", "batch_tasks:die_once", {"marker": str(tmp_path / "died.marker")}))
    serial = run_batch(items[:-1], tmp_path / "serial", workers=0, progress=False)
    dask = run_batch(items, tmp_path / "dask", workers=2, progress=False)
    assert dask.workers == 2 and not dask.failed
    assert (tmp_path / "died.marker").exists()  # the task did kill a worker once, and was retried
    assert (tmp_path / "dask" / "dies" / "out.txt").read_text() == "survived"
    for it in items[:-1]:
        assert dask.results[it.id]["y"] == serial.results[it.id]["y"]
        assert (tmp_path / "dask" / it.id / "out.txt").read_text() == (tmp_path / "serial" / it.id / "out.txt").read_text()
    assert len({r["pid"] for r in dask.results.values()} - {os.getpid()}) >= 1  # ran in worker processes


def test_real_dask_scheduler_and_worker(tmp_path):
    """A `dask scheduler` and a `dask worker` started here, on localhost (the tests folder on their path)."""
    from fitter.bench.common import dask_processes

    if not (Path(sys.executable).parent / "dask").exists():
        pytest.skip(f"the dask command is not installed beside {sys.executable}")
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    with dask_processes(1, tmp_path, env=env) as address:
        assert address.startswith("tcp://127.0.0.1:")
        s = run_batch(_items(tmp_path, fail_flag=tmp_path / "absent"), tmp_path / "out", scheduler=address,
                      progress=False)
    assert len(s.done) == 5 and not s.failed and s.workers == 1
    assert {r["pid"] for r in s.results.values()} != {os.getpid()}
    assert (tmp_path / "out" / "group" / "item2" / "out.txt").read_text() == "4"


def test_unreachable_scheduler_is_an_input_error(tmp_path):
    from fitter.errors import InputError

    with pytest.raises(InputError, match="cannot reach the Dask scheduler"):
        run_batch([WorkItem("a", "batch_tasks:square", {"x": 1})], tmp_path / "o", scheduler="tcp://127.0.0.1:9",
                  progress=False, connect_timeout_s=3)
