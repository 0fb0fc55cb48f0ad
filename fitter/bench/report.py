"""Benchmark of the batch report (fitter.report) at MICC's size: a MICC output folder (`facefit micc`) whose
scored videos are copied until it holds as many videos as the full dataset (53 subjects x 3 settings = 159),
then the time to write report.html (cold: every thumbnail and 3-D view made; warm: a rerun, nothing changed),
its size, and — where headless Chromium is installed — the time until the page has loaded, with its console
errors and off-machine requests (none expected)."""
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

from ..errors import InputError

MICC_VIDEOS = 159


def report_bench(micc_out, videos=MICC_VIDEOS, log=print):
    from ..report import write_report
    from .browser import CHROMIUM, open_page

    src = Path(micc_out)
    manifest = json.loads((src / "manifest.json").read_text()) if (src / "manifest.json").is_file() else None
    if not manifest:
        raise InputError(f"{src}: not a facefit micc output folder")
    done = [d for d in manifest["items"] if (src / d["id"] / "DONE.json").is_file()]
    if not done:
        raise InputError(f"{src}: holds no scored video to copy")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "micc"
        out.mkdir()
        items, rows = [], ["subject,setting,status,mean_mm,rmse_mm,symmetric_mean_mm,frames_kept,frames_scanned,"
                           "seconds,reason"]
        results = {}
        with open(src / "results.csv", newline="") as f:
            for r in csv.DictReader(f):
                results[f"{r['subject']}/{r['setting']}"] = r
        for k in range(videos):
            d = done[k % len(done)]
            subject, setting = f"subject_{k // 3 + 1:02d}", ("Indoor-Cooperative", "PTZ-Indoor", "PTZ-Outdoor")[k % 3]
            item_id = f"{subject}/{setting}"
            shutil.copytree(src / d["id"], out / item_id)
            items.append({"id": item_id, "task": d["task"], "args": dict(d["args"], subject=subject, setting=setting)})
            r = results.get(d["id"], {})
            rows.append(",".join([subject, setting, "done"] + [r.get(c, "") for c in (
                "mean_mm", "rmse_mm", "symmetric_mean_mm", "frames_kept", "frames_scanned", "seconds")] + [""]))
        (out / "manifest.json").write_text(json.dumps({"format": "facefit batch manifest 1", "items": items}))
        (out / "results.csv").write_text("\n".join(rows) + "\n")
        for name in ("summary.json", "boxplot.png"):
            if (src / name).is_file():
                shutil.copy(src / name, out / name)
        t0 = time.perf_counter()
        page = write_report(out)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_report(out)
        warm = time.perf_counter() - t0
        files = list((out / "report_files").iterdir())
        res = {"videos": videos, "copied_from": len(done), "write_cold_s": round(cold, 2), "write_warm_s": round(warm, 2),
               "html_kb": round(page.stat().st_size / 1024, 1), "report_files": len(files),
               "report_files_mb": round(sum(f.stat().st_size for f in files) / 2 ** 20, 1)}
        if CHROMIUM:
            t0 = time.perf_counter()
            r = open_page(page.resolve().as_uri(), value="document.querySelectorAll('#videos tbody tr').length")
            res.update(browser_open_s=round(time.perf_counter() - t0, 2), rows_shown=r["value"],
                       console_errors=len(r["errors"]),
                       off_machine_requests=len([u for u in r["requests"] if not u.startswith(("file:", "blob:"))]))
            key = items[0]["id"].replace("/", "_")
            t0 = time.perf_counter()
            r = open_page(f"{page.resolve().as_uri()}#view={key}",
                          until=f"document.body.dataset.viewLoaded === {json.dumps(key)}")
            res.update(view_open_s=round(time.perf_counter() - t0, 2), view_loaded=r["ready"])
        log(json.dumps(res))
        return res
