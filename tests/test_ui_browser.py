"""The web UI end to end in headless Chromium: `pyimgopt ui` as a real
process, driven by Playwright through Debian's `chromium` (`executable_path`).

Skips, with the reason, when Playwright or a Chromium binary is missing
(`.ci/run` installs `chromium` with apt-get first). Leaves a screenshot of the
finished page in the test's output folder; PYIMGOPT_UI_SCREENSHOT=FILE also
saves the page after the first batch there (how docs/ui.png is made).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from conftest import CORPUS, encode, photo

pytestmark = pytest.mark.slow

CHROMIUM = next((p for p in (os.environ.get("PYIMGOPT_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p), None)
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError as exc:  # pragma: no cover - the test extra has it
    sync_playwright = None
    _why = f"playwright is not installed ({exc}); pip install -e '.[test]'"
else:
    _why = ""
if sync_playwright is not None and CHROMIUM is None:
    _why = "no Chromium binary: apt-get install chromium (or set PYIMGOPT_CHROMIUM)"
skip_reason = _why

BIG = 24
SMALL = ["photo_coffee_small_baseline.jpg", "photo_grace_hopper_small.jpg",
         "icon_adwaita_folder_pictures_512.png", "screenshot_gnome_calendar.png"]


def make_root(tmp: pathlib.Path) -> pathlib.Path:
    root = tmp / "pictures"
    small, big = root / "small", root / "big"
    small.mkdir(parents=True)
    big.mkdir()
    if all((CORPUS / n).exists() for n in SMALL):
        for n in SMALL:
            shutil.copy(CORPUS / n, small / n)
    else:  # no ../shared/corpus: images built here
        for i in range(4):
            (small / f"photo{i}.jpg").write_bytes(encode(Image.fromarray(photo(640, 480, seed=i)),
                                                         "JPEG", quality=95))
    (small / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    for i in range(BIG):  # slow enough (AVIF, one sidecar: ~0.3 s each) to pause and cancel mid-way
        (big / f"big{i:02}.png").write_bytes(encode(Image.fromarray(photo(900, 700, seed=10 + i)), "PNG"))
    return root


@pytest.fixture
def ui_url(tmp_path):
    root = make_root(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    errlog = open(tmp_path / "ui.stderr", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyimgopt.cli", "ui", "--port", "0", "--root", str(root), "-j", "1",
         "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=errlog, text=True, env=env)
    url = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and url is None:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"open (http://127\.0\.0\.1:\d+/\?token=\S+)", line)
        url = m.group(1) if m else None
    if url is None:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        errlog.seek(0)
        pytest.fail(f"pyimgopt ui did not print its URL: {errlog.read()}")
    yield url, root
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(30)
        errlog.seek(0)
        assert code == 0, errlog.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        errlog.close()
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".pyimgopt-tmp")]
    assert not leftovers


def started(page) -> None:
    """Wait until the new batch runs and has finished at least one file."""
    expect(page.locator("#state")).to_have_attribute("data-state", "running", timeout=15_000)
    expect(page.locator("#rows tr[data-status=optimized]").first).to_be_visible(timeout=60_000)
    assert page.locator("#state").get_attribute("data-state") == "running"


def poll(cond, timeout: float = 30.0) -> None:
    """Wait for ``cond()`` (Playwright's wait_for_function needs eval, which the CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def processed(page) -> int:
    return int(re.match(r"(\d+) /", page.locator("#summary").inner_text()).group(1))


@pytest.mark.skipif(bool(skip_reason), reason=skip_reason or "browser available")
def test_ui_in_chromium(ui_url, tmp_path):
    url, root = ui_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        try:
            page.goto(url)
            expect(page.locator("body")).to_have_attribute("data-ready", "1")
            expect(page.locator("#st-sidecars")).to_have_text("1", timeout=15_000)

            # 0. auto's formats: shown for auto only, browser formats ticked, JPEG XL not
            expect(page.locator("#auto-formats")).to_be_hidden()
            page.select_option("#format", "auto")
            expect(page.locator("#auto-formats")).to_be_visible()
            expect(page.locator("#allow-jxl")).not_to_be_checked()
            for f in ("jpeg", "webp", "avif", "png"):
                expect(page.locator(f"#allow-{f}")).to_be_checked()
            page.check("#allow-jxl")
            page.uncheck("#allow-png")
            page.check("#lossless")
            sent = page.evaluate("formSettings()")
            assert sent["formats_allowed"] == ["jpeg", "webp", "avif", "gif", "jxl"], sent
            assert sent["lossless"] is True
            page.uncheck("#lossless")
            page.select_option("#format", "webp")
            expect(page.locator("#auto-formats")).to_be_hidden()
            assert "formats_allowed" not in page.evaluate("formSettings()")
            # issue 20's fields: sent as the CLI sends them; a bad size is refused under Start
            page.fill("#target_size", " 1.5MB ")
            page.check("#mark")
            sent = page.evaluate("formSettings()")
            assert sent["target_size"] == "1.5MB" and sent["mark"] is True, sent
            page.fill("#target_size", "lots")
            page.locator("#entries li[data-name=small] input").check()
            page.click("#start")
            expect(page.locator("#start-error")).to_contain_text("invalid_settings")
            assert problems == ["Failed to load resource: the server responded with a status of 400 "
                                "(Bad Request)"], problems  # that refusal, and nothing else
            problems.clear()
            page.locator("#entries li[data-name=small] input").uncheck()
            page.fill("#target_size", "")
            page.uncheck("#mark")

            # 1. pick the small folder, choose settings, start, see it finish
            page.locator("#entries li[data-name=small] input").check()
            expect(page.locator("#sel-count")).to_have_text("1")
            page.select_option("#format", "webp")
            page.fill("#quality", "75")
            page.fill("#max_width", "480")
            page.click("#start")
            expect(page.locator("#state")).to_have_attribute("data-state", "done", timeout=60_000)
            expect(page.locator("#bar-fill")).to_have_attribute("data-percent", "100")
            rows = page.locator("#rows tr")
            expect(rows).to_have_count(5)
            expect(page.locator("#rows tr[data-status=optimized]")).to_have_count(4)
            failed = page.locator("#rows tr[data-status=failed]")
            expect(failed).to_have_count(1)
            expect(failed.locator("td").nth(6)).to_contain_text("decode_failed")
            summary = page.locator("#summary").inner_text()
            assert re.search(r"saved [\d.]+ [KM]?B \((\d+\.\d) %\)", summary), summary
            assert float(re.search(r"\(([\d.]+) %\) of", summary).group(1)) > 10
            assert len(list((root / "optimized").rglob("*.webp"))) == 4
            if os.environ.get("PYIMGOPT_UI_SCREENSHOT"):  # the README's picture
                time.sleep(0.5)  # let the bar's transition end
                page.screenshot(path=os.environ["PYIMGOPT_UI_SCREENSHOT"], full_page=True)

            # sortable: by saving, descending on the second click
            page.click("#table th[data-key=saving]")
            page.click("#table th[data-key=saving]")
            savings = [t for t in page.locator("#rows tr td:nth-child(6)").all_inner_texts()]
            values = [float(t.split()[0]) for t in savings if t != "–"]
            assert values == sorted(values, reverse=True) and len(values) == 4

            # before/after at true pixels, side by side then slider
            page.locator("#rows tr[data-status=optimized] button.pv").first.click()
            expect(page.locator("#preview")).to_be_visible()
            for img in ("#pv-before", "#pv-after"):
                poll(lambda: page.evaluate(f"document.querySelector('{img}').naturalWidth") > 0)
            nat = page.evaluate("[document.querySelector('#pv-after').naturalWidth,"
                                " document.querySelector('#pv-after').getBoundingClientRect().width]")
            assert nat[0] <= 480 and abs(nat[0] - nat[1]) < 1  # shown at its true pixel size
            page.check("#pv-slider")
            expect(page.locator("#pv-cmp")).to_be_visible()
            page.fill("#pv-range", "30")
            assert page.evaluate("document.querySelector('#pv-clip').style.width") == "30%"
            # the original is larger than the 480 px output: drawn at the output's size under the slider
            poll(lambda: page.evaluate("document.querySelector('#pv-cbefore').getBoundingClientRect().width")
                 == page.evaluate("document.querySelector('#pv-cafter').naturalWidth"))
            expect(page.locator("#pv-scaled")).to_be_visible()
            page.screenshot(path=str(tmp_path / "ui-preview.png"), full_page=True)
            page.check("#pv-side")

            # a reload reattaches to the batch: rows and totals come back
            page.reload()
            expect(page.locator("body")).to_have_attribute("data-ready", "1")
            expect(page.locator("#rows tr")).to_have_count(5)
            expect(page.locator("#state")).to_have_attribute("data-state", "done")

            # a dry run: the banner, "(dry run)" rows with would-be bytes, nothing written
            page.locator("#entries li[data-name=small] input").check()  # a reload forgets the selection
            page.check("#dry_run")
            page.fill("#out_dir", str(root / "dry"))
            page.click("#start")
            expect(page.locator("#dryrun-banner")).to_be_visible(timeout=15_000)  # the new batch is shown
            expect(page.locator("#state")).to_have_attribute("data-state", "done", timeout=60_000)
            expect(page.locator("#rows tr td:nth-child(3)", has_text="optimized (dry run)")).to_have_count(4)
            assert "would save" in page.locator("#summary").inner_text()
            assert not (root / "dry").exists()
            page.uncheck("#dry_run")

            # 2. a larger batch: pause acts at once, resume finishes it
            page.locator("#entries li[data-name=small] input").uncheck()
            page.locator("#entries li[data-name=big] input").check()
            page.select_option("#format", "avif")
            page.fill("#quality", "")
            page.fill("#max_width", "")
            page.fill("#out_dir", str(root / "avif"))
            page.click("#start")
            started(page)
            page.click("#pause")
            expect(page.locator("#state")).to_have_attribute("data-state", "paused", timeout=5_000)
            expect(page.locator("#resume")).to_be_enabled()
            # the job running at the pause finishes; nothing new starts
            expect(page.locator("#rows tr[data-status=running]")).to_have_count(0, timeout=60_000)
            frozen = processed(page)
            time.sleep(3)
            assert processed(page) == frozen < BIG
            assert page.locator("#rows tr[data-status=running]").count() == 0
            page.click("#resume")
            expect(page.locator("#state")).to_have_attribute("data-state", "done", timeout=120_000)
            expect(page.locator("#rows tr[data-status=optimized]")).to_have_count(BIG)

            # 3. cancel a batch: it stops, the rest is marked cancelled, nothing half-written
            page.fill("#out_dir", str(root / "cancelled"))
            page.click("#start")
            started(page)
            page.click("#cancel")
            expect(page.locator("#state")).to_have_attribute("data-state", "cancelled", timeout=30_000)
            n_cancelled = page.locator("#rows tr[data-status=cancelled]").count()
            assert 1 <= n_cancelled < BIG
            assert len(list((root / "cancelled").rglob("*.avif"))) == BIG - n_cancelled
            expect(page.locator("#pause")).to_be_disabled()

            page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
            assert not problems, problems
        finally:
            browser.close()
