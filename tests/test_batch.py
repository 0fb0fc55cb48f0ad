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
    assert not (tmp_path / "dask" / PARTIAL).exists()  # the killed attempt's partial folder is gone too
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


def test_a_rerun_with_other_args_or_model_recomputes_and_the_manifest_agrees(tmp_path):
    out = tmp_path / "out"
    first = [WorkItem(f"item{k}", "batch_tasks:square", {"x": k}) for k in range(3)]
    run_batch(first, out, workers=0, progress=False)
    said = []
    changed = [WorkItem("item0", "batch_tasks:square", {"x": 0}), WorkItem("item1", "batch_tasks:square", {"x": 5}),
               WorkItem("item2", "batch_tasks:square", {"x": 2, "new_option": True})]
    s = run_batch(changed, out, workers=0, progress=False, log=said.append)
    assert s.skipped == ["item0"] and sorted(s.done) == ["item1", "item2"] and sorted(s.redone) == ["item1", "item2"]
    assert (out / "item1" / "out.txt").read_text() == "25"
    assert any("item1" in m and "x: 1 -> 5" in m for m in said), said
    manifest = {d["id"]: d["args"] for d in json.loads((out / "manifest.json").read_text())["items"]}
    for it in changed:  # every folder holds what the manifest says
        assert json.loads((out / it.id / DONE_MARKER).read_text())["args"] == manifest[it.id] == it.args
    again = run_batch(changed, out, workers=0, progress=False)
    assert sorted(again.skipped) == ["item0", "item1", "item2"] and not again.done
    other_model = run_batch(changed[:1], out, model_name=None, workers=0, progress=False)
    assert other_model.skipped == ["item0"]
    marker = json.loads((out / "item0" / DONE_MARKER).read_text())
    marker["model"] = "bfm2009"  # as if made with another model
    (out / "item0" / DONE_MARKER).write_text(json.dumps(marker))
    assert run_batch(changed[:1], out, workers=0, progress=False).redone == ["item0"]


def test_an_interrupt_leaves_no_partial_folder_and_a_true_status(tmp_path):
    out = tmp_path / "out"
    flag = tmp_path / "interrupt.flag"
    flag.write_text("")
    items = [WorkItem(f"item{k}", "batch_tasks:interrupt_at", {"x": k, "stop": 2, "flag": str(flag)}) for k in range(4)]
    with pytest.raises(KeyboardInterrupt):
        run_batch(items, out, workers=0, progress=False)
    assert not (out / PARTIAL).exists()
    assert not (out / "item2").exists()
    status = json.loads((out / "status.json").read_text())
    assert {k: v["status"] for k, v in status.items()} == {"item0": "done", "item1": "done"}
    flag.unlink()
    s = run_batch(items, out, workers=0, progress=False)
    assert sorted(s.done) == ["item2", "item3"] and sorted(s.skipped) == ["item0", "item1"] and not s.redone
    assert not (out / PARTIAL).exists()


def test_progress_written_to_a_file_is_plain_lines():
    import io

    from fitter.batch import BatchSummary, Progress

    stream = io.StringIO()
    bar = Progress(5, "videos", True, stream=stream)
    bar.PLAIN_EVERY_S = 0.0
    summary = BatchSummary()
    for k in range(5):
        summary.done.append(str(k))
        bar.tick(summary)
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines()[0] == "facefit: videos: 1 of 5 run (1 done, 0 failed)" and len(text.splitlines()) == 4


@pytest.mark.parametrize("scheduler, says", [
    ("tcp://127.0.0.1:9", "connection refused"),
    ("nonexist.json", "no such scheduler file"),
    ("bad.json", "not a Dask scheduler file"),
])
def test_scheduler_problems_are_said_at_once_and_nothing_is_written(tmp_path, monkeypatch, scheduler, says):
    import time

    from fitter.errors import InputError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("not json")
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=says):
        run_batch([WorkItem("a", "batch_tasks:square", {"x": 1})], tmp_path / "o", scheduler=scheduler,
                  progress=False)
    assert time.perf_counter() - t0 < 10  # refused at once, not after the connect timeout
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="not both"):
        run_batch([WorkItem("a", "batch_tasks:square", {"x": 1})], tmp_path / "o", scheduler=scheduler, workers=2,
                  progress=False)


def test_a_taken_dashboard_port_gives_no_warning(tmp_path):
    import socket
    import warnings

    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 8787))
        holder.listen()
    except OSError:
        pass  # taken already, by something else: the same situation
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = run_batch([WorkItem("a", "batch_tasks:square", {"x": 3})], tmp_path / "o", workers=1, progress=False)
    finally:
        holder.close()
    assert s.done == ["a"] and s.workers == 1
    assert not [w for w in caught if "already in use" in str(w.message)], [str(w.message) for w in caught]
