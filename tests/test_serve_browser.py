# ruff: noqa: F811 - the fixtures of test_serve, imported by name
"""A page of another origin calls ``gagavatar serve`` in a real headless Chromium (Debian's, driven by
playwright): CORS as docs/serve.md says. The page is served by a second loopback HTTP server
on another port; the service, with a token, allows that origin (``--allowed-origin``). The
page creates an avatar (a preflighted POST: it sends the token in a header), drives it over
a WebSocket (the token in the query string) until frames come back, deletes it (a
preflighted DELETE), and reads an error answer (401) it is allowed to read. No console errors."""
from __future__ import annotations

import functools
import http.server
import json
import threading
import time

import pytest
from test_serve import CHROMIUM, CHROMIUM_ARGS, clips, source_zip  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for the module

from gagavatar.serve.protocol import params_message
from gagavatar.serve.server import RunningServer, ServeConfig

TOKEN = "cross-origin-s3cret"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>another app</title><link rel="icon" href="data:,"></head>
<body><p id="status">starting</p>
<script>
"use strict";
const api = new URLSearchParams(location.search).get("api");
const auth = { Authorization: "Bearer %(token)s" };
window.result = null;
(async () => {
  const out = { frames: 0 };
  try {
    const upload = await (await fetch("source.zip")).blob();
    const form = new FormData();
    form.append("photo", upload, "source.zip");
    const made = await fetch(api + "/avatars", { method: "POST", body: form, headers: auth });
    out.create_status = made.status;
    const id = (await made.json()).id;
    const denied = await fetch(api + "/health");                 // no token: a 401 this page may read
    out.denied_status = denied.status;
    out.denied_error = (await denied.json()).error;
    const messages = await (await fetch("params.json")).json();
    const ws = new WebSocket(api.replace("http", "ws") + "/avatars/" + id + "/drive?token=%(token)s");
    ws.binaryType = "arraybuffer";
    await new Promise((resolve, reject) => {
      let seq = 0, i = 0;
      const next = () => ws.send(JSON.stringify({ ...messages[i %% messages.length], frame_id: i++, ack: seq }));
      ws.onmessage = (event) => {
        if (typeof event.data === "string") {
          const text = JSON.parse(event.data);
          if (text.type === "ready") next();
          else reject(new Error(event.data));
          return;
        }
        const n = new DataView(event.data).getUint32(0);
        const header = JSON.parse(new TextDecoder().decode(new Uint8Array(event.data, 4, n)));
        seq = header.seq;
        out.frames += 1;
        out.size = [header.width, header.height];
        if (out.frames >= 5) { ws.close(1000); resolve(); } else next();
      };
      ws.onerror = () => reject(new Error("websocket error"));
    });
    const gone = await fetch(api + "/avatars/" + id, { method: "DELETE", headers: auth });
    out.delete_status = gone.status;
  } catch (e) {
    out.error = String(e);
  }
  document.getElementById("status").textContent = "done";
  window.result = out;
})();
</script></body></html>
"""


@pytest.fixture
def other_origin(tmp_path, source_zip, clips):
    """A second loopback HTTP server (another port: another origin) with the page and its files."""
    _, driver = clips
    (tmp_path / "index.html").write_text(PAGE % {"token": TOKEN})
    (tmp_path / "source.zip").write_bytes(source_zip)
    (tmp_path / "params.json").write_text(json.dumps(
        [params_message(driver.params, i, driver.width, driver.height) for i in range(10)]))
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_page_of_another_origin_makes_and_drives_an_avatar(animator, other_origin):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium; `make install` adds it with apt-get)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
    config = ServeConfig(port=0, token=TOKEN, allowed_origins=(other_origin,))
    errors: list[str] = []
    with RunningServer(config, animator) as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{other_origin}/index.html?api={server.url}")
            deadline = time.time() + 60
            while (result := page.evaluate("window.result")) is None:
                assert time.time() < deadline, "the page did not finish"
                time.sleep(0.1)
        finally:
            browser.close()
        metrics = server.service  # the counts, without another request
        assert metrics.uploads["created"] == 1 and metrics.server_errors == 0
    assert "error" not in result, result
    assert result["create_status"] == 201  # (a response the page could not read by CORS would have thrown)
    assert result["frames"] == 5 and result["size"] == [animator.size, animator.size]
    assert result["delete_status"] == 200
    assert result["denied_status"] == 401 and "token" in result["denied_error"]
    # the 401 above is the one error the browser itself logs (a failed resource load), as asked
    assert [e for e in errors if "401" not in e] == [], errors
