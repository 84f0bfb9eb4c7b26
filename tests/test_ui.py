"""The web UI server over real HTTP: token, Host/Origin checks, CSP on every
response, scopes enforced whatever the browser sends, a batch end to end
through the embedded client and the event stream, previews."""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
import time
import urllib.parse

import pytest
from PIL import Image

from conftest import encode, photo
from pyimgopt.ui import CSP, Session, UIServer, ui_policy


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    root = tmp_path_factory.mktemp("uiroot")
    (root / "pics").mkdir()
    for i in range(3):
        (root / "pics" / f"p{i}.png").write_bytes(encode(Image.fromarray(photo(96, 64, seed=i)), "PNG"))
    (root / "pics" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "pics" / "tiff.tif").write_bytes(encode(Image.fromarray(photo(40, 30)), "TIFF"))
    (root / "notes.txt").write_text("not an image")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.png").write_bytes(encode(Image.new("RGB", (8, 8)), "PNG"))
    os.symlink(outside, root / "escape")
    session = Session(ui_policy([str(root)]), workers=1)
    server = UIServer(session, 0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server, root, outside
    server.close()
    t.join(5)


def request(server, method, path, body=None, *, token=True, headers=None):
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = {"Host": f"127.0.0.1:{port}"}
    if token:
        h["X-Pyimgopt-Token"] = server.token
    if body is not None:
        h["Content-Type"] = "application/json"
        body = json.dumps(body)
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def error_code(data: bytes) -> str:
    return json.loads(data)["error"]["code"]


ROUTES = ["/", "/static/app.js", "/static/app.css", "/api/state", "/api/browse", "/nope",
          "/static/../session.py"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("token", [True, False])
def test_ui_csp_and_security_headers_on_every_response(ui, path, token):
    server, _, _ = ui
    resp, _ = request(server, "GET", path, token=token)
    assert resp.getheader("Content-Security-Policy") == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "http" not in CSP
    assert resp.getheader("X-Content-Type-Options") == "nosniff"
    assert resp.getheader("Referrer-Policy") == "no-referrer"
    if not token:
        assert resp.status == 403


def test_ui_page_has_no_inline_script_or_style_and_no_external_origin(ui):
    server, _, _ = ui
    resp, data = request(server, "GET", "/")
    page = data.decode()
    assert resp.status == 200
    assert server.token in page
    assert "<script>" not in page and "<style" not in page and " style=" not in page
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert " on" not in page.replace(" only", "")  # no onclick= style handlers
    for asset in ("app.js", "app.css"):
        resp, body = request(server, "GET", f"/static/{asset}")
        assert resp.status == 200 and b"http://" not in body and b"https://" not in body


@pytest.mark.parametrize("bad", ["", "x", "wrong-token-of-some-length"])
def test_ui_wrong_or_missing_token_is_403(ui, bad):
    server, _, _ = ui
    for path in ("/", "/api/state", "/static/app.js"):
        resp, data = request(server, "GET", path + (f"?token={bad}" if bad else ""), token=False)
        assert resp.status == 403, path
        assert error_code(data) == "forbidden"
    resp, _ = request(server, "POST", "/api/batch", {"paths": []}, token=False,
                      headers={"X-Pyimgopt-Token": bad or "nothing"})
    assert resp.status == 403


def test_ui_token_in_query_is_accepted(ui):
    server, _, _ = ui
    resp, _ = request(server, "GET", f"/api/state?token={urllib.parse.quote(server.token)}", token=False)
    assert resp.status == 200


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1",
                                    "https://127.0.0.1"])
def test_ui_foreign_origin_is_403(ui, origin):
    server, root, _ = ui
    resp, data = request(server, "GET", "/api/state", headers={"Origin": origin})
    assert resp.status == 403 and error_code(data) == "forbidden"
    resp, data = request(server, "POST", "/api/batch", {"paths": [str(root / "pics")], "out_dir": str(root / "o")},
                         headers={"Origin": origin})
    assert resp.status == 403


def test_ui_same_origin_is_accepted(ui):
    server, _, _ = ui
    port = server.server_address[1]
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        resp, _ = request(server, "GET", "/api/state", headers={"Origin": origin})
        assert resp.status == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1", "127.0.0.2:{port}",
                                  "attacker.127.0.0.1.nip.io:{port}"])
def test_ui_foreign_host_is_403_dns_rebinding(ui, host):
    server, _, _ = ui
    resp, data = request(server, "GET", "/api/state",
                         headers={"Host": host.format(port=server.server_address[1])})
    assert resp.status == 403 and "Host" in json.loads(data)["error"]["message"]


def test_ui_cross_site_post_is_refused(ui):
    server, root, _ = ui
    resp, _ = request(server, "POST", "/api/batch", {"paths": [str(root)], "out_dir": str(root / "o")},
                      headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status == 403


def test_ui_listens_on_loopback_only(ui):
    server, _, _ = ui
    assert server.server_address[0] == "127.0.0.1"


def test_ui_browse_lists_images_and_folders_inside_scope(ui):
    server, root, _ = ui
    resp, data = request(server, "GET", "/api/browse")
    assert resp.status == 200
    assert [e["path"] for e in json.loads(data)["entries"]] == [os.path.realpath(root)]
    resp, data = request(server, "GET", "/api/browse?path=" + urllib.parse.quote(str(root)))
    names = [e["name"] for e in json.loads(data)["entries"]]
    assert names == ["pics"]  # notes.txt is not an image; the symlink leads out of scope
    resp, data = request(server, "GET", "/api/browse?path=" + urllib.parse.quote(str(root / "pics")))
    assert sorted(e["name"] for e in json.loads(data)["entries"]) == [
        "broken.jpg", "p0.png", "p1.png", "p2.png", "tiff.tif"]


@pytest.mark.parametrize("path", ["/etc", "/", "{outside}", "{root}/escape", "{root}/escape/secret.png",
                                  "{root}/../", "{root}/pics/../../", "/etc/passwd",
                                  "/etc/no-such-file-pyimgopt", "{outside}/nope.png"])
def test_ui_browse_outside_scope_is_refused_with_a_message(ui, path):
    server, root, outside = ui
    p = path.format(root=root, outside=outside)
    resp, data = request(server, "GET", "/api/browse?path=" + urllib.parse.quote(p))
    assert resp.status == 403
    err = json.loads(data)["error"]
    assert err["code"] == "scope_denied" and "outside the folders" in err["message"]


@pytest.mark.parametrize("paths,out", [
    (["/etc/passwd"], "{root}/out"),
    (["{outside}/secret.png"], "{root}/out"),
    (["{root}/escape/secret.png"], "{root}/out"),
    (["{root}/pics", "{root}/escape"], "{root}/out"),
    (["{root}/pics"], "{outside}/out"),
    (["{root}/pics"], "{root}/escape/out"),
    (["{root}/pics"], "/tmp/elsewhere-pyimgopt-ui"),
])
def test_ui_submit_outside_scope_is_refused_and_nothing_runs(ui, paths, out):
    server, root, outside = ui
    body = {"paths": [p.format(root=root, outside=outside) for p in paths],
            "out_dir": out.format(root=root, outside=outside), "settings": {}}
    before = request(server, "GET", "/api/state")[1]
    resp, data = request(server, "POST", "/api/batch", body)
    assert resp.status == 403
    err = json.loads(data)["error"]
    assert err["code"] == "scope_denied" and err["message"]
    assert json.loads(request(server, "GET", "/api/state")[1])["batch"] == json.loads(before)["batch"]
    assert not os.path.exists(os.path.join(outside, "out"))


@pytest.mark.parametrize("body,code", [
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "settings": {"quality": 0}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "settings": {"format": "exe"}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "settings": {"in_place": True}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "settings": {"keep_metadata": "yes"}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "settings": {"target_ssim": "x"}}, "invalid_settings"),
    ({"paths": ["{root}/pics"]}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "in_place": True}, "invalid_settings"),
    ({"paths": [], "out_dir": "{root}/o"}, "invalid_settings"),
    ({"paths": [42], "out_dir": "{root}/o"}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "priority": 99}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/pics", "settings": {"format": "webp"}}, "invalid_settings"),
    ({"paths": ["{root}/pics/p0.png"], "out_dir": "{root}/pics/"}, "invalid_settings"),
    ({"paths": ["{root}/pics/p0.png"], "out_dir": "{root}"}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}"}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "settings": {"lossless": "yes"}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o",
      "settings": {"format": "auto", "formats_allowed": "jxl"}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o",
      "settings": {"format": "auto", "formats_allowed": ["jpeg", "bmp"]}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o",
      "settings": {"format": "auto", "formats_allowed": []}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o",
      "settings": {"format": "auto", "formats_allowed": [7]}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o",
      "settings": {"format": "webp", "formats_allowed": ["webp", "jxl"]}}, "invalid_settings"),
    # issue 20's options: a size parse_size refuses, min_scale out of range or alone, non-booleans
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "settings": {"target_size": "big"}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "settings": {"target_size": "200 parsecs"}},
     "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "settings": {"target_size": "0KB"}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "settings": {"target_size": -5}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "settings": {"target_size": True}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o",
      "settings": {"target_size": "200KB", "min_scale": 1.5}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o",
      "settings": {"target_size": "200KB", "min_scale": "half"}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "settings": {"min_scale": 0.5}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "settings": {"mark": "yes"}}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "force": "yes"}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "dry_run": 1}, "invalid_settings"),
    ({"paths": ["{root}/pics"], "out_dir": "{root}/o", "settings": {"dry_run": True}}, "invalid_settings"),
])
def test_ui_bad_requests_get_a_typed_error(ui, body, code):
    server, root, _ = ui
    raw = json.loads(json.dumps(body).replace("{root}", str(root)))
    resp, data = request(server, "POST", "/api/batch", raw)
    assert resp.status == 400
    assert error_code(data) == code


def test_ui_non_json_body_is_refused(ui):
    server, _, _ = ui
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/api/batch", body=b"{not json", headers={
        "Host": f"127.0.0.1:{port}", "X-Pyimgopt-Token": server.token, "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 400 and resp.getheader("Content-Security-Policy") == CSP
    conn.close()


def read_events(server, since: int, until_kind: str, timeout: float = 60):
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", f"/api/events?since={since}&token={server.token}",
                 headers={"Host": f"127.0.0.1:{port}"})
    resp = conn.getresponse()
    assert resp.getheader("Content-Type") == "text/event-stream"
    assert resp.getheader("Content-Security-Policy") == CSP
    events, cur, deadline = [], {}, time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = resp.fp.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            cur["kind"] = line[7:]
        elif line.startswith("id: "):
            cur["id"] = int(line[4:])
        elif line.startswith("data: "):
            cur["data"] = json.loads(line[6:])
        elif line == "" and cur:
            events.append(cur)
            if until_kind(cur):
                break
            cur = {}
    conn.close()
    return events


def test_ui_batch_end_to_end_with_events_previews_and_replay(ui):
    server, root, _ = ui
    seq = json.loads(request(server, "GET", "/api/state")[1])["seq"]
    body = {"paths": [str(root / "pics")], "out_dir": str(root / "out"),
            "settings": {"format": "webp", "quality": 70, "max_width": 64}}
    resp, data = request(server, "POST", "/api/batch", body)
    assert resp.status == 200, data
    bid = json.loads(data)["batch"]
    assert json.loads(data)["total"] == 5
    events = read_events(server, seq, lambda e: e["kind"] == "batch" and e["data"]["finished"])
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    final = events[-1]["data"]
    assert final["id"] == bid and final["processed"] == 5 and final["failed"] == 1
    assert final["bytes_in"] > final["bytes_out"] > 0 and final["saved"] == final["bytes_in"] - final["bytes_out"]
    state = json.loads(request(server, "GET", "/api/state")[1])
    rows = {os.path.basename(r["input"]): r for r in state["rows"]}
    assert rows["broken.jpg"]["status"] == "failed" and rows["broken.jpg"]["code"] == "decode_failed"
    assert rows["broken.jpg"]["message"]
    assert all(rows[f"p{i}.png"]["status"] == "optimized" for i in range(3))
    assert rows["p0.png"]["format_out"] == "webp" and rows["p0.png"]["width"] == 64
    # A second stream from the old position replays the same history (a page reload).
    again = read_events(server, seq, lambda e: e["kind"] == "batch" and e["data"]["finished"])
    assert [e["id"] for e in again] == [e["id"] for e in events]

    idx = rows["p0.png"]["idx"]
    resp, data = request(server, "GET", f"/api/preview?batch={bid}&row={idx}&which=after")
    assert resp.status == 200 and resp.getheader("Content-Type") == "image/webp"
    assert data == (root / "out" / "p0.webp").read_bytes()
    resp, data = request(server, "GET", f"/api/preview?batch={bid}&row={idx}&which=before")
    assert resp.status == 200 and data == (root / "pics" / "p0.png").read_bytes()
    tif = rows["tiff.tif"]["idx"]
    resp, data = request(server, "GET", f"/api/preview?batch={bid}&row={tif}&which=before")
    assert resp.status == 200 and resp.getheader("Content-Type") == "image/png"  # browsers cannot show TIFF
    assert data.startswith(b"\x89PNG")
    for q in (f"batch={bid}&row=99&which=after", "batch=nope&row=0&which=after",
              f"batch={bid}&row={idx}&which=../../etc/passwd", f"batch={bid}&row=x&which=after"):
        resp, _ = request(server, "GET", "/api/preview?" + q)
        assert resp.status in (400, 404)
    resp, data = request(server, "POST", f"/api/batch/{bid}/pause", {})
    assert resp.status == 409 and "finished" in json.loads(data)["error"]["message"]
    resp, _ = request(server, "POST", f"/api/batch/{bid}/explode", {})
    assert resp.status == 404


def _run_batch(server, body):
    seq = json.loads(request(server, "GET", "/api/state")[1])["seq"]
    resp, data = request(server, "POST", "/api/batch", body)
    assert resp.status == 200, data
    read_events(server, seq, lambda e: e["kind"] == "batch" and e["data"]["finished"])
    state = json.loads(request(server, "GET", "/api/state")[1])
    return state, {os.path.basename(r["input"]): r for r in state["rows"]}


def test_ui_auto_formats_allowed_and_lossless_reach_the_pipeline(ui):
    """The page's two issue-19 controls, over HTTP: formats_allowed for auto, and lossless."""
    pytest.importorskip("pillow_jxl", reason="pillow-jxl-plugin not installed")
    from pyimgopt.pipeline import jxl

    server, root, _ = ui
    state = json.loads(request(server, "GET", "/api/state")[1])
    assert "jxl" in state["formats"] and "jxl" in state["auto_formats"]
    assert "jxl" not in state["browser_formats"] and "webp" in state["browser_formats"]
    page = request(server, "GET", "/")[1].decode()
    assert 'id="lossless"' in page and 'id="auto-formats"' in page
    (root / "jx").mkdir()
    src = encode(Image.fromarray(photo(120, 90)), "JPEG", quality=92)
    (root / "jx" / "a.jpg").write_bytes(src)
    # auto with JPEG XL allowed picks it here (smaller than JPEG at the same SSIM target)
    settings = {"format": "auto", "formats_allowed": ["jpeg", "jxl"]}
    state, rows = _run_batch(server, {"paths": [str(root / "jx")], "out_dir": str(root / "jx-auto"),
                                      "settings": settings})
    assert rows["a.jpg"]["status"] == "optimized" and rows["a.jpg"]["format_out"] == "jxl", rows
    assert jxl.parse_header((root / "jx-auto" / "a.jxl").read_bytes()).width == 120
    assert state["batch"]["settings"]["formats_allowed"] == ["jpeg", "jxl"]  # a reload restores it
    # the default (no formats_allowed): browser formats only
    state, rows = _run_batch(server, {"paths": [str(root / "jx")], "out_dir": str(root / "jx-web"),
                                      "settings": {"format": "auto"}})
    assert rows["a.jpg"]["format_out"] in ("jpeg", "webp", "avif"), rows
    # lossless JPEG -> JPEG XL: the JPEG is rebuilt from the output
    state, rows = _run_batch(server, {"paths": [str(root / "jx")], "out_dir": str(root / "jx-ll"),
                                      "settings": {"format": "jxl", "lossless": True,
                                                   "keep_metadata": True}})
    assert rows["a.jpg"]["format_out"] == "jxl", rows
    assert jxl.reconstruct((root / "jx-ll" / "a.jxl").read_bytes()) == src
    # without lossless the same request is a lossy JPEG XL: nothing to rebuild
    state, rows = _run_batch(server, {"paths": [str(root / "jx")], "out_dir": str(root / "jx-lossy"),
                                      "settings": {"format": "jxl", "lossless": None}})
    assert jxl.reconstruct((root / "jx-lossy" / "a.jxl").read_bytes()) is None


def test_ui_in_place_batch_and_its_preview(ui):
    server, root, _ = ui
    folder = root / "inplace"
    folder.mkdir()
    original = encode(Image.fromarray(photo(120, 90, seed=9)), "PNG", compress_level=0)
    (folder / "a.png").write_bytes(original)
    seq = json.loads(request(server, "GET", "/api/state")[1])["seq"]
    resp, data = request(server, "POST", "/api/batch", {"paths": [str(folder)], "in_place": True,
                                                         "settings": {}})
    assert resp.status == 200, data
    bid = json.loads(data)["batch"]
    read_events(server, seq, lambda e: e["kind"] == "batch" and e["data"]["finished"])
    state = json.loads(request(server, "GET", "/api/state")[1])
    (row,) = state["rows"]
    assert row["status"] == "optimized" and row["output"] in (None, row["input"])
    assert state["batch"]["in_place"] and state["batch"]["bytes_in"] == len(original)
    now = (folder / "a.png").read_bytes()
    assert len(now) == state["batch"]["bytes_out"] < len(original)
    resp, data = request(server, "GET", f"/api/preview?batch={bid}&row=0&which=before")
    assert resp.status == 404 and "replaced in place" in json.loads(data)["error"]["message"]
    resp, data = request(server, "GET", f"/api/preview?batch={bid}&row=0&which=after")
    assert resp.status == 200 and data == now


def test_ui_a_second_batch_while_one_runs_is_refused(ui):
    server, root, _ = ui
    folder = root / "many"
    folder.mkdir()
    for i in range(30):
        (folder / f"m{i}.png").write_bytes(encode(Image.fromarray(photo(300, 200, seed=i)), "PNG"))
    seq = json.loads(request(server, "GET", "/api/state")[1])["seq"]
    body = {"paths": [str(folder)], "out_dir": str(root / "many-out"), "settings": {"format": "avif"}}
    resp, data = request(server, "POST", "/api/batch", body)
    assert resp.status == 200
    bid = json.loads(data)["batch"]
    resp, data = request(server, "POST", "/api/batch", body)
    assert resp.status == 409 and "already running" in json.loads(data)["error"]["message"]
    resp, _ = request(server, "POST", f"/api/batch/{bid}/cancel", {})
    assert resp.status == 200
    events = read_events(server, seq, lambda e: e["kind"] == "batch" and e["data"]["finished"])
    final = events[-1]["data"]
    assert final["cancelled"] and final["processed"] == 30
    assert final["cancelled_files"] + final["optimized"] + final["skipped"] == 30
    written = list((root / "many-out").glob("*")) if (root / "many-out").exists() else []
    assert len(written) == final["optimized"] + final["skipped"]
    assert not [p for p in written if p.name.endswith(".pyimgopt-tmp")]


def _launch(root, state, port=0):
    import re
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "pyimgopt.cli", "ui", "--port", str(port), "--root",
                             str(root), "-j", "1", "--state-dir", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        m = re.match(r"open http://127\.0\.0\.1:(\d+)/\?token=(\S+)", line)
        if m:
            return proc, int(m.group(1)), m.group(2)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    pytest.fail("pyimgopt ui did not start")


class _Remote:
    """Just enough of UIServer for request() against another process."""

    def __init__(self, port, token):
        self.server_address = ("127.0.0.1", port)
        self.token = token


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_ui_killed_mid_batch_resumes_it_after_a_restart(tmp_path, how):
    """Killed (no cleanup at all) or stopped (Ctrl-C/SIGTERM): the next start resumes the batch."""
    import signal

    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    n = 16
    for i in range(n):
        (root / "in" / f"f{i:02}.png").write_bytes(encode(Image.fromarray(photo(700, 500, seed=i)), "PNG"))
    state = tmp_path / "state"
    proc, port, token = _launch(root, state)
    try:
        remote = _Remote(port, token)
        resp, data = request(remote, "POST", "/api/batch", {
            "paths": [str(root / "in")], "out_dir": str(root / "out"), "settings": {"format": "avif"}})
        assert resp.status == 200, data
        bid = json.loads(data)["batch"]
        deadline = time.monotonic() + 60
        while json.loads(request(remote, "GET", "/api/state")[1])["batch"]["processed"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sidecars = _children(proc.pid)
        assert sidecars, "the UI should run its sidecars as child processes"
        os.kill(proc.pid, getattr(signal, how))
        assert proc.wait(30) in (-signal.SIGKILL, 0)
    finally:
        if proc.poll() is None:  # failed before the kill: end it (its sidecars follow their parent)
            proc.terminate()
            proc.wait(30)
        proc.stdout.close()
    deadline = time.monotonic() + 30
    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    while any(alive(p) for p in sidecars):
        assert time.monotonic() < deadline, "sidecars outlived their UI"
        time.sleep(0.1)
    done_before = {p.name for p in (root / "out").glob("*.avif")}
    assert 0 < len(done_before) < n

    proc, port, token = _launch(root, state)
    try:
        remote = _Remote(port, token)
        deadline = time.monotonic() + 120
        while True:
            st = json.loads(request(remote, "GET", "/api/state")[1])
            if st["batch"] and st["batch"]["finished"]:
                break
            assert time.monotonic() < deadline, st["batch"]
            time.sleep(0.1)
        assert st["batch"]["id"] == bid
        assert st["batch"]["optimized"] == n and st["batch"]["failed"] == 0
        assert sorted(p.name for p in (root / "out").iterdir()) == [f"f{i:02}.avif" for i in range(n)]
        events = read_events(remote, 0, lambda e: e["kind"] == "notice")
        assert "interrupted by a restart" in events[-1]["data"]["message"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        proc.stdout.close()


def _raw(server, payload: bytes, timeout: float = 5.0) -> bytes:
    import socket

    with socket.create_connection(server.server_address, timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except TimeoutError:
            pass
    return b"".join(chunks)


def test_ui_a_refused_request_body_is_never_parsed_as_a_second_request(ui):
    server, _, _ = ui
    port = server.server_address[1]
    inner = f"GET /smuggled?token={server.token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    for extra in (b"Origin: http://evil.example\r\nContent-Type: application/json\r\n",
                  b"Content-Type: text/plain\r\n"):
        req = (f"POST /api/batch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Pyimgopt-Token: {server.token}\r\n"
               f"Content-Length: {len(inner)}\r\n").encode() + extra + b"\r\n" + inner
        answer = _raw(server, req)
        assert answer.count(b"HTTP/1.1 ") == 1, answer
        assert b"/smuggled" not in answer


@pytest.mark.parametrize("headers, body, status", [
    (b"Content-Length: abc\r\nContent-Type: application/json\r\n", b"", 400),
    (b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n", b"2\r\n{}\r\n0\r\n\r\n", 411),
    (b"Content-Length: 200000\r\nContent-Type: application/json\r\n", b"[" * 200000, 400),
])
def test_ui_malformed_posts_get_an_answer_not_a_dropped_connection(ui, headers, body, status):
    server, _, _ = ui
    port = server.server_address[1]
    req = (f"POST /api/batch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Pyimgopt-Token: {server.token}\r\n"
           "Connection: close\r\n".encode() + headers + b"\r\n" + body)
    answer = _raw(server, req)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert b"Content-Security-Policy: " in answer
    resp, _ = request(server, "GET", "/api/state")  # and it keeps serving
    assert resp.status == 200


def test_ui_head_on_the_event_stream_returns(ui):
    server, _, _ = ui
    answer = _raw(server, f"HEAD /api/events?token={server.token} HTTP/1.1\r\nHost: 127.0.0.1:"
                          f"{server.server_address[1]}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200") and b"text/event-stream" in answer


def test_ui_preview_refuses_a_fifo_or_symlink_planted_after_the_batch(ui):
    server, root, outside = ui
    folder = root / "plant"
    folder.mkdir()
    for i in range(2):
        (folder / f"q{i}.png").write_bytes(encode(Image.fromarray(photo(64, 48, seed=20 + i)), "PNG"))
    seq = json.loads(request(server, "GET", "/api/state")[1])["seq"]
    resp, data = request(server, "POST", "/api/batch", {"paths": [str(folder)],
                                                         "out_dir": str(root / "plant-out")})
    assert resp.status == 200, data
    bid = json.loads(data)["batch"]
    read_events(server, seq, lambda e: e["kind"] == "batch" and e["data"]["finished"])
    rows = json.loads(request(server, "GET", "/api/state")[1])["rows"]
    out0, out1 = (root / "plant-out" / "q0.png"), (root / "plant-out" / "q1.png")
    out0.unlink()
    os.mkfifo(out0)
    out1.unlink()
    os.symlink(outside / "secret.png", out1)
    for r in rows:
        t = time.monotonic()
        resp, data = request(server, "GET", f"/api/preview?batch={bid}&row={r['idx']}&which=after")
        assert resp.status in (403, 404) and time.monotonic() - t < 5
        assert b"PNG" not in data


def test_ui_connections_beyond_the_cap_are_closed_not_queued(tmp_path):
    import socket

    class Small(UIServer):
        max_connections = 2

    session = Session(ui_policy([str(tmp_path)]), workers=0)
    server = Small(session, 0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        idle = [socket.create_connection(server.server_address) for _ in range(2)]
        time.sleep(0.3)
        with socket.create_connection(server.server_address, timeout=5) as extra:
            extra.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert extra.recv(100) == b""  # closed at once
        for s in idle:
            s.close()
        time.sleep(0.3)
        resp, _ = request(server, "GET", "/api/state")
        assert resp.status == 200
    finally:
        server.close()


def test_ui_a_rerun_is_unchanged_counted_and_previewable(tmp_path):
    """Issue 20 in the UI: with a state folder the UI's router keeps the manifest;
    a second batch over the same files reports them ``unchanged`` (counted,
    previewable), and writes nothing."""
    (tmp_path / "pics").mkdir()
    for i in range(2):
        (tmp_path / "pics" / f"p{i}.png").write_bytes(
            encode(Image.fromarray(photo(64, 48, seed=i)), "PNG", compress_level=0))
    session = Session(ui_policy([str(tmp_path)]), workers=0, state_dir=str(tmp_path / "state"))
    server = UIServer(session, 0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        body = {"paths": [str(tmp_path / "pics")], "out_dir": str(tmp_path / "out"), "settings": {}}
        state, rows = _run_batch(server, body)
        assert {r["status"] for r in rows.values()} == {"optimized"}
        mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
        state, rows = _run_batch(server, body)
        assert {r["status"] for r in rows.values()} == {"unchanged"}
        assert state["batch"]["unchanged"] == 2 and state["batch"]["processed"] == 2
        # nothing was written by this run: its totals claim no savings (as the command line counts)
        assert (state["batch"]["bytes_in"], state["batch"]["saved"]) == (0, 0), state["batch"]
        assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == mtimes
        resp, data = request(server, "GET", f"/api/preview?batch={state['batch']['id']}&row=0&which=after")
        assert resp.status == 200 and data == (tmp_path / "out" / "p0.png").read_bytes()
    finally:
        server.close()
        t.join(5)


# -- issue 20's options in the UI: dry run, target size, force, mark ------------------------


@pytest.fixture(scope="module")
def ui20(tmp_path_factory):
    """A UI with a state folder (so a manifest), in-process (workers=0: cheap)."""
    root = tmp_path_factory.mktemp("ui20")
    session = Session(ui_policy([str(root)]), workers=0, state_dir=str(root / "state"))
    server = UIServer(session, 0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server, root
    server.close()
    t.join(5)


def _pics(folder, n=2, size=(64, 48)):
    folder.mkdir()
    for i in range(n):
        (folder / f"p{i}.png").write_bytes(
            encode(Image.fromarray(photo(*size, seed=i)), "PNG", compress_level=0))
    return folder


def _tree(folder):
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def test_ui_dry_run_writes_nothing_and_reports_what_a_real_run_writes(ui20):
    server, root = ui20
    pics = _pics(root / "dry")
    before = _tree(root / "dry")
    settings = {"quality": 80}
    state, rows = _run_batch(server, {"paths": [str(pics)], "in_place": True, "dry_run": True,
                                      "settings": settings})
    assert _tree(root / "dry") == before  # byte-identical, not even an mtime moved
    assert state["batch"]["dry_run"] is True and state["batch"]["optimized"] == 2
    assert all(r["dry_run"] and r["status"] == "optimized" and r["format_out"] == "png"
               and 0 < r["bytes_out"] < r["bytes_in"] for r in rows.values()), rows
    assert state["batch"]["bytes_out"] == sum(r["bytes_out"] for r in rows.values())
    bid, idx = state["batch"]["id"], rows["p0.png"]["idx"]
    resp, _ = request(server, "GET", f"/api/preview?batch={bid}&row={idx}&which=after")
    assert resp.status == 404  # nothing was written to show
    resp, data = request(server, "GET", f"/api/preview?batch={bid}&row={idx}&which=before")
    assert resp.status == 200 and data == before["p0.png"][0]  # not "replaced in place"
    # A real run then does the work (a dry run records no manifest entry) and writes those bytes.
    out = root / "dry-out"
    state, real = _run_batch(server, {"paths": [str(pics)], "out_dir": str(out), "settings": settings})
    assert {r["status"] for r in real.values()} == {"optimized"} and state["batch"]["dry_run"] is False
    for name, r in rows.items():
        assert (out / name).stat().st_size == r["bytes_out"] == real[name]["bytes_out"]


def test_ui_force_redoes_a_file_the_manifest_calls_unchanged(ui20):
    server, root = ui20
    pics = _pics(root / "force", n=1)
    body = {"paths": [str(pics)], "out_dir": str(root / "force-out"), "settings": {}}
    _run_batch(server, body)
    out = root / "force-out" / "p0.png"
    first = (out.stat().st_ino, out.stat().st_mtime_ns)  # outputs are written aside, then renamed
    _, rows = _run_batch(server, body)
    assert rows["p0.png"]["status"] == "unchanged" and (out.stat().st_ino, out.stat().st_mtime_ns) == first
    state, rows = _run_batch(server, {**body, "force": True})
    assert rows["p0.png"]["status"] == "optimized" and state["batch"]["force"] is True
    assert (out.stat().st_ino, out.stat().st_mtime_ns) != first  # rewritten
    with Image.open(out) as im:
        assert im.size == (64, 48)


def test_ui_target_size_fits_or_fails_alone_with_its_best_size(ui20):
    server, root = ui20
    pics = root / "target"
    pics.mkdir()
    (pics / "small.png").write_bytes(encode(Image.fromarray(photo(64, 48, seed=1)), "PNG"))
    (pics / "large.png").write_bytes(encode(Image.fromarray(photo(640, 480, seed=2)), "PNG"))
    out = root / "target-out"
    state, rows = _run_batch(server, {"paths": [str(pics)], "out_dir": str(out),
                                      "settings": {"format": "jpeg", "target_size": "2.5KB"}})
    assert state["batch"]["settings"]["target_size"] == "2.5KB"
    ok, bad = rows["small.png"], rows["large.png"]
    assert ok["status"] == "optimized" and ok["bytes_out"] <= 2500
    written = out / "small.jpg"
    assert written.stat().st_size == ok["bytes_out"] <= 2500
    with Image.open(written) as im:
        assert im.format == "JPEG" and im.size == (64, 48)
    assert bad["status"] == "failed" and bad["code"] == "target_unreachable"
    best = int(re.search(r"smallest output was (\d+) bytes", bad["message"]).group(1))
    assert best > 2500 and not (out / "large.jpg").exists()
    # min_scale lets the large one shrink until it fits
    state, rows = _run_batch(server, {"paths": [str(pics / "large.png")], "out_dir": str(out),
                                      "settings": {"format": "jpeg", "target_size": "2.5KB",
                                                   "min_scale": 0.1}})
    r = rows["large.png"]
    assert r["status"] == "optimized" and r["bytes_out"] <= 2500 and r["width"] < 640
    with Image.open(out / "large.jpg") as im:
        assert im.size == (r["width"], r["height"]) and (out / "large.jpg").stat().st_size <= 2500


def test_ui_mark_writes_the_in_file_marker(ui20):
    server, root = ui20
    pics = _pics(root / "mark", n=1)
    _, rows = _run_batch(server, {"paths": [str(pics)], "out_dir": str(root / "mark-out"),
                                  "settings": {"mark": True}})
    assert rows["p0.png"]["status"] == "optimized"
    with Image.open(root / "mark-out" / "p0.png") as im:  # Pillow reads the tEXt chunk
        assert im.text.get("pyimgopt", "").startswith("1 ")
    _, rows = _run_batch(server, {"paths": [str(pics)], "out_dir": str(root / "mark-plain"), "settings": {}})
    with Image.open(root / "mark-plain" / "p0.png") as im:
        assert "pyimgopt" not in im.text


def test_ui_shows_an_unfinished_batch_it_learns_through_the_client_alone(tmp_path):
    """A router restarted on its journal holds a paused batch; a UI given only a client
    (no state folder to read) shows its files, settings and destination, and steers it."""
    from pyimgopt import Settings
    from pyimgopt.client import Client
    from pyimgopt.router import Router, RouterConfig

    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    for i in range(3):
        (root / "in" / f"f{i}.png").write_bytes(encode(Image.fromarray(photo(24, 16, seed=i)), "PNG"))
    private = tmp_path / "ipc"
    private.mkdir(mode=0o700)
    state = str(tmp_path / "state")
    router = Router(f"ipc://{private}/a-c", f"ipc://{private}/a-s", RouterConfig(pool=False, state_dir=state))
    router.start()
    try:
        with Client.connect(router.client_endpoint, timeout=10) as c:
            batch = c.submit([root / "in"], Settings(format="webp", quality=61), out_dir=root / "out")
            batch.pause()
    finally:
        router.stop()
    router = Router(f"ipc://{private}/b-c", f"ipc://{private}/b-s", RouterConfig(workers=0, state_dir=state))
    router.start()
    try:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        # recover=True: this router was restarted on its journal, nobody else follows its batch
        session = Session(ui_policy([str(elsewhere)]), client=Client.connect(router.client_endpoint, timeout=10),
                          recover=True)
        assert session.recovered.wait(30)
        assert session.snapshot()["batch"] is None  # its files are not this UI's to show
        session.close()

        session = Session(ui_policy([str(root)]), client=Client.connect(router.client_endpoint, timeout=10),
                          recover=True)
        try:
            assert session.recovered.wait(30)
            snap = session.snapshot()
            b = snap["batch"]
            assert b["id"] == batch.id and b["total"] == 3 and b["paused"] and not b["finished"]
            assert b["out_dir"] == os.path.realpath(root / "out") and b["in_place"] is False
            assert b["settings"]["format"] == "webp" and b["settings"]["quality"] == 61
            assert [(r["name"], r["status"]) for r in snap["rows"]] == [(f"f{i}.png", "queued") for i in range(3)]
            entries, _ = session.since(0)
            assert any(k == "notice" and "interrupted by a restart" in d["message"] for _, k, d in entries)
            session.control(batch.id, "resume")
            deadline = time.monotonic() + 60
            while not session.snapshot()["batch"]["finished"]:
                assert time.monotonic() < deadline
                with session.changed:
                    session.changed.wait(0.5)
            snap = session.snapshot()
            assert snap["batch"]["optimized"] + snap["batch"]["skipped"] == 3
            assert len(snap["rows"]) == 3  # the live events landed on the rows listed at the start
            assert sorted(p.name for p in (root / "out").iterdir()) == [f"f{i}.webp" for i in range(3)]
        finally:
            session.close()
    finally:
        router.stop()


def test_ui_on_a_shared_router_leaves_a_live_batch_to_its_submitter(tmp_path):
    """A UI given a client of a router an application submits to does not attach to the
    application's open batch: the submitter keeps its events (no reattach needed: a stolen
    stream would not come back within the test) and the UI shows no batch. ``pool=False``:
    no sidecar, the jobs stay queued until the submitter cancels them."""
    from pyimgopt import Settings
    from pyimgopt.client import Client
    from pyimgopt.router import Router, RouterConfig

    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    for i in range(3):
        (root / "in" / f"f{i}.png").write_bytes(encode(Image.fromarray(photo(24, 16, seed=i)), "PNG"))
    private = tmp_path / "ipc"
    private.mkdir(mode=0o700)
    router = Router(f"ipc://{private}/c", f"ipc://{private}/s", RouterConfig(pool=False))
    router.start()
    c = Client.connect(router.client_endpoint, timeout=10)
    c.reattach_after = 600.0
    try:
        batch = c.submit([root / "in"], Settings(), out_dir=root / "out")
        session = Session(ui_policy([str(root)]), client=Client.connect(router.client_endpoint, timeout=10))
        try:
            assert session.recovered.wait(30)
            assert session.snapshot()["batch"] is None
            batch.cancel()
            results = batch.wait(timeout=20)
            assert sorted((os.path.basename(r.input), r.status, r.error.code) for r in results) == [
                (f"f{i}.png", "failed", "cancelled") for i in range(3)]
            assert session.snapshot()["batch"] is None
        finally:
            session.close()
    finally:
        c.close()
        router.stop()


def test_ui_recovery_skips_a_batch_with_a_relative_input(tmp_path, monkeypatch):
    """A batch whose job kept a relative input (refused by the router, stored as given) is
    not this UI's to show: the UI starts with no batch instead of failing (commonpath)."""
    import uuid

    from pyimgopt import Settings, protocol
    from pyimgopt.client import Client
    from pyimgopt.router import Router, RouterConfig

    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    (root / "in" / "a.png").write_bytes(encode(Image.fromarray(photo(8, 8, seed=1)), "PNG"))
    private = tmp_path / "ipc"
    private.mkdir(mode=0o700)
    router = Router(f"ipc://{private}/c", f"ipc://{private}/s", RouterConfig(pool=False))
    router.start()
    try:
        with Client.connect(router.client_endpoint, timeout=10) as c:
            c._request("submit", batch=uuid.uuid4().hex[:16], priority=0, settings=protocol.pack_settings(Settings()),
                       jobs=[{"id": "", "input": str(root / "in" / "a.png"), "output": str(root / "out" / "a.png")},
                             {"id": "", "input": "b.png", "output": str(root / "out" / "b.png")}],
                       in_place=False, more=False)
            assert "b.png" in [j["input"] for j in c.iter_jobs(c.status()["batches"][-1]["batch"])]
        monkeypatch.chdir(root)
        session = Session(ui_policy([str(root)]), client=Client.connect(router.client_endpoint, timeout=10),
                          recover=True)
        try:
            assert session.recovered.wait(30)
            assert session.snapshot()["batch"] is None
        finally:
            session.close()
    finally:
        router.stop()
