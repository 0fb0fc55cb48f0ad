"""Headless Chromium for the report tests and `facefit bench report`: a page opened through the DevTools protocol over a pipe
(`--remote-debugging-pipe`: JSON messages, NUL-separated, on fds 3 and 4; no websocket library), with its
console errors, uncaught exceptions, network requests and a screenshot."""
import base64
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)


class Page:
    def __init__(self, proc, to_chrome, from_chrome):
        self.proc, self.out = proc, os.fdopen(to_chrome, "wb", buffering=0)
        self.inbox, self.events, self.next_id = queue.Queue(), [], 0
        self.reader = threading.Thread(target=self._read, args=(from_chrome,), daemon=True)
        self.reader.start()
        self.session = None

    def _read(self, fd):
        buf = b""
        with os.fdopen(fd, "rb", buffering=0) as f:
            while True:
                chunk = f.read(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\0" in buf:
                    msg, buf = buf.split(b"\0", 1)
                    self.inbox.put(json.loads(msg))

    def call(self, method, timeout=30.0, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        self.out.write(json.dumps(msg).encode() + b"\0")
        end = time.time() + timeout
        while time.time() < end:
            try:
                m = self.inbox.get(timeout=max(0.01, end - time.time()))
            except queue.Empty:
                break
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)
        raise TimeoutError(method)

    def drain(self, seconds=0.0):
        end = time.time() + seconds
        while True:
            try:
                self.events.append(self.inbox.get(timeout=max(0.0, end - time.time())))
            except queue.Empty:
                if time.time() >= end:
                    return

    def evaluate(self, expression):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


def open_page(url, width=1280, height=900, mobile=False, until="true", timeout=90.0, full_page=False, value=None):
    """Open `url` at a window of width x height; wait until the JS expression `until` is true (or timeout).
    Returns {"errors": [console errors and exceptions], "requests": [URLs requested], "screenshot": PNG bytes,
    "ready": whether `until` became true, "value": the JS expression `value` evaluated then}."""
    if CHROMIUM is None:
        raise FileNotFoundError("no chromium")
    a_r, a_w = os.pipe()   # to chrome
    b_r, b_w = os.pipe()   # from chrome
    hi_a, hi_b = (os.dup2(a_r, 100), os.dup2(b_w, 101))

    def child():
        os.dup2(hi_a, 3)
        os.dup2(hi_b, 4)

    profile = tempfile.mkdtemp(prefix="facefit-chromium-")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--remote-debugging-pipe", f"--user-data-dir={profile}",
           "--no-first-run", "--disable-extensions", "--disable-background-networking", "--disable-sync",
           "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--hide-scrollbars", "about:blank"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            pass_fds=(3, 4, hi_a, hi_b), preexec_fn=child)  # kept open past preexec_fn
    for fd in (a_r, b_w, hi_a, hi_b):
        os.close(fd)
    page = Page(proc, a_w, b_r)
    try:
        target = page.call("Target.createTarget", url="about:blank")["targetId"]
        page.session = page.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            page.call(f"{domain}.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=mobile)
        page.call("Page.navigate", url=url)
        end, ready = time.time() + timeout, False
        while time.time() < end:
            page.drain(0.5)
            if page.evaluate(f"document.readyState === 'complete' && !!({until})"):
                ready = True
                break
        page.drain(1.0)
        result = page.evaluate(value) if value else None
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        shot = base64.b64decode(page.call("Page.captureScreenshot", **params)["data"])
        errors, requests = [], []
        for m in page.events:
            method, p = m.get("method"), m.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                errors.append(json.dumps(p.get("exceptionDetails", {}))[:500])
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                errors.append(p["entry"].get("text", ""))
            elif method == "Network.requestWillBeSent":
                requests.append(p.get("request", {}).get("url", ""))
        return {"errors": errors, "requests": requests, "screenshot": shot, "ready": ready, "value": result}
    finally:
        try:
            page.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - closing a browser that is gone
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
