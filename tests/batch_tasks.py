"""Small batch tasks for tests/test_batch.py (importable by Dask workers: the tests folder is on their path)."""
import os
from pathlib import Path


def square(prepared, args, folder):
    """Writes x² into folder/out.txt; fails when args["fail_if"] exists; returns the value and the pid."""
    if args.get("fail_if") and Path(args["fail_if"]).exists():
        raise ValueError(f"asked to fail\nsecond line {args['x']}")
    (Path(folder) / "out.txt").write_text(str(args["x"] ** 2))
    return {"y": args["x"] ** 2, "pid": os.getpid()}


def die_once(prepared, args, folder):
    """Kills its worker process the first time (leaving a marker), succeeds the next."""
    marker = Path(args["marker"])
    if not marker.exists():
        marker.write_text("died once")
        os._exit(9)
    (Path(folder) / "out.txt").write_text("survived")
    return {"ok": True, "pid": os.getpid()}


def interrupt_at(prepared, args, folder):
    """Writes x into folder/out.txt, then raises KeyboardInterrupt (as SIGTERM does in the command) when
    x == args["stop"] and the file args["flag"] exists — after writing, so that a half-written partial folder
    is there to be cleaned."""
    (Path(folder) / "out.txt").write_text(str(args["x"]))
    if args["x"] == args["stop"] and Path(args["flag"]).exists():
        raise KeyboardInterrupt
    return {"x": args["x"]}
