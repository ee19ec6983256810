"""A real browser against wsgate over wss://: headless Chromium (Debian's ``chromium`` package).

The page is a local file (``file://.../page.html``). Its JavaScript opens
``wss://localhost:PORT/echo``, sends a short text, a large compressible text and a binary
message, checks each echo, then asks ``/info`` for the server's view of the negotiated
extension, and writes everything into the DOM and the title.

Chromium trusts the throw-away certificate through ``--ignore-certificate-errors-spki-list``
(the base64 SHA-256 of the leaf's SubjectPublicKeyInfo, computed with ``openssl``) in a fresh
``--user-data-dir``. ``--dump-dom`` alone would dump the page at its load event, before the
echo can arrive, so the test drives Chromium over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: no port is opened) and reads the DOM once the page says it is done.

Chromium is installed with apt-get when it is missing. The test is skipped only when it cannot be
installed, and fails instead when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from wsgate_support import ECHO_SCRIPT, TestPKI, start_server  # noqa: E402

INFO_SCRIPT = """
if websocketInfo.type == "data" then
  websocketInfo.send{extensions = websocketInfo.extensions, uri = websocketInfo.uri,
                     origin = websocketInfo.headers.origin}
end
"""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>waiting</title></head>
<body><pre id="out">waiting</pre><pre id="result"></pre>
<script>
const PORT = __PORT__;
function show(text, result) {
  document.getElementById("out").textContent = text;
  if (result) document.getElementById("result").textContent = JSON.stringify(result);
  document.title = text.startsWith("failed") ? "failed" : "done";
}
function open(path) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket("wss://localhost:" + PORT + path);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error("could not open " + path));
  });
}
function next(ws) {
  return new Promise((resolve, reject) => {
    ws.onmessage = (ev) => resolve(ev.data);
    ws.onclose = (ev) => reject(new Error("closed with " + ev.code + " while waiting"));
  });
}
async function main() {
  const ws = await open("/echo");
  let reply = next(ws); ws.send("hello"); const echo = await reply;
  const big = JSON.stringify(Array.from({length: 8000}, (_, i) => ({id: i, name: "item " + (i % 50), ok: i % 2 === 0})));
  reply = next(ws); ws.send(big); const bigEcho = await reply;
  const bin = new Uint8Array(5000); for (let i = 0; i < bin.length; i++) bin[i] = (i * 7) % 251;
  reply = next(ws); ws.send(bin); const binEcho = new Uint8Array(await reply);
  const binaryOk = binEcho.length === bin.length && binEcho.every((v, i) => v === bin[i]);
  const extensions = ws.extensions;
  ws.close(1000);
  const info = await open("/info");
  reply = next(info); info.send("?"); const server = JSON.parse(await reply);
  info.close(1000);
  const result = {echo: echo, bigLength: big.length, bigOk: bigEcho === big, binaryOk: binaryOk,
                  extensions: extensions, server: server};
  show("echo:" + echo + " big:" + (result.bigOk ? "ok" : "bad") + " binary:" + (binaryOk ? "ok" : "bad") +
       " extensions:" + extensions, result);
}
main().catch((e) => show("failed:" + e.message));
</script></body></html>
"""


def chromium_binary() -> str:
    """The chromium command, installed with apt-get when missing; skip (fail under CI) if impossible."""
    found = shutil.which("chromium")
    if found:
        return found
    why = "chromium is not installed"
    if shutil.which("apt-get"):
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        steps = [sudo + ["apt-get", "update", "-q"],
                 sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True, env=env, timeout=900)
            if proc.returncode != 0:
                why = f"`{' '.join(step)}` failed ({proc.returncode}): {proc.stderr.strip()[-400:]}"
                break
        found = shutil.which("chromium")
        if found:
            return found
    else:
        why += " and there is no apt-get to install it"
    if os.environ.get("CI"):
        pytest.fail(f"the Chromium test must run in CI, but {why}", pytrace=False)
    pytest.skip(f"Chromium unavailable: {why}")


class DevToolsPipe:
    """The Chrome DevTools protocol over --remote-debugging-pipe (fd 3: to Chromium, fd 4: from it)."""

    def __init__(self, command: list[str], log_path: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds():
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.log_file = open(log_path, "wb")
        self.proc = subprocess.Popen(command + ["--remote-debugging-pipe"], stdin=subprocess.DEVNULL,
                                     stdout=self.log_file, stderr=self.log_file,
                                     pass_fds=(3, 4), preexec_fn=child_fds)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next_id = 0

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 15.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise AssertionError(f"DevTools {method}: {reply['error']}")
                    return reply.get("result", {})
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"DevTools {method}: no answer within {timeout}s")
            ready, _, _ = select.select([self._from_chrome], [], [], remaining)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 16)
                if not chunk:
                    raise AssertionError(f"Chromium closed the DevTools pipe (exit {self.proc.poll()})")
                self._buf += chunk

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.call("Browser.close", timeout=5)
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log_file.close()


def run_page(chromium: str, page: Path, spki: str | None, workdir: Path,
             timeout: float = 20.0) -> tuple[str, str, str]:
    """Open ``page`` in headless Chromium.

    Returns the DOM once the page is done, the text of #out and the text of #result. Without
    ``spki`` Chromium is given no way to trust the certificate.
    """
    command = [
        chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--no-default-browser-check", "--disable-extensions",
        f"--user-data-dir={workdir / 'profile'}",
        "about:blank",
    ]
    if spki:
        command.insert(-1, f"--ignore-certificate-errors-spki-list={spki}")
    browser = DevToolsPipe(command, workdir / "chromium.log")
    try:
        target = browser.call("Target.createTarget", {"url": page.as_uri()})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        deadline = time.monotonic() + timeout
        title = ""
        while time.monotonic() < deadline:
            title = browser.call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                                 session)["result"].get("value", "")
            if title in ("done", "failed"):
                break
            time.sleep(0.1)
        dom = browser.call("Runtime.evaluate", {"expression": "document.documentElement.outerHTML",
                                                "returnByValue": True}, session)["result"]["value"]
        out, result = (browser.call("Runtime.evaluate", {"expression": f"document.getElementById('{name}').textContent",
                                                         "returnByValue": True}, session)["result"]["value"]
                       for name in ("out", "result"))
        assert title in ("done", "failed"), f"the page did not finish within {timeout}s: {out!r}"
        return dom, out, result
    finally:
        browser.close()


@pytest.fixture(scope="module")
def chromium():
    return chromium_binary()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pki = TestPKI(tmp_path_factory.mktemp("pki"))
    pki.cert, pki.key = pki.leaf("browser")
    pki.spki = pki.spki_sha256_base64(pki.cert)
    return pki


@pytest.mark.parametrize("compression", [True, False], ids=["compression-on", "compression-off"])
def test_chromium_echo_over_wss(chromium, pki, tmp_path, compression):
    server = start_server(tmp_path / "wsgate", {"echo.lua": ECHO_SCRIPT, "info.lua": INFO_SCRIPT}, {
        "tls": {"certificate": str(pki.cert), "privateKey": str(pki.key)},
        "rateLimit": {"messagesPerSecond": 0},
        "compression": {"enabled": compression},
    })
    page = tmp_path / "page.html"
    page.write_text(PAGE.replace("__PORT__", str(server.port)), encoding="utf-8")
    started = time.monotonic()
    try:
        dom, out, result_text = run_page(chromium, page, pki.spki, tmp_path)
    finally:
        server.stop()
    took = time.monotonic() - started
    context = f"page said {out!r}; wsgate log:\n{server.log_tail(30)}"
    assert "echo:hello" in dom, context
    assert "big:ok" in out and "binary:ok" in out, context
    result = json.loads(result_text)
    assert result["bigLength"] > 200_000, result
    assert result["server"]["uri"].startswith(f"wss://localhost:{server.port}/info"), result
    if compression:
        assert "permessage-deflate" in result["extensions"], context
        assert result["server"]["extensions"] == result["extensions"], result
    else:
        assert result["extensions"] == "", context
        assert result["server"]["extensions"] == "", result
    print(f"\n[wsgate-report] chromium over wss ({'compression' if compression else 'no compression'}): "
          f"{out} in {took:.1f}s; server saw {result['server']}", flush=True)


def test_chromium_refuses_the_certificate_without_the_spki_pin(chromium, pki, tmp_path):
    """The control: without the flag Chromium does not trust the throw-away CA, so the page fails."""
    server = start_server(tmp_path / "wsgate", {"echo.lua": ECHO_SCRIPT}, {
        "tls": {"certificate": str(pki.cert), "privateKey": str(pki.key)},
    })
    page = tmp_path / "page.html"
    page.write_text(PAGE.replace("__PORT__", str(server.port)), encoding="utf-8")
    try:
        dom, out, _ = run_page(chromium, page, None, tmp_path)
        assert server.proc.poll() is None
    finally:
        server.stop()
    assert out == "failed:could not open /echo", out
    assert "echo:hello" not in dom
