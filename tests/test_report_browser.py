"""The run report in a real browser: headless Chromium loads report.html, a script appended to a copy of the
page reports every image that failed to decode and the section headings, and a screenshot is taken.

No extra Python package: Chromium's ``--dump-dom`` returns the page after its load handler wrote its findings
into ``<pre id="check">``. Skipped when Chromium is not installed, unless ``RLMEC_REQUIRE_BROWSER=1`` (CI sets
it in ``.ci/run``), which turns the skip into a failure.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_report import make_run, report_args

from rlmec_core.report import build_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# Appended to a copy of the page: on load, every image (its alt, decoded size, section) and the broken ones,
# the h2 headings, and each <details> (open or not, its tables, its height as loaded and once opened).
CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var section = null, images = [];
  document.querySelectorAll("h2, img").forEach(function (el) {
    if (el.tagName === "H2") { section = el.textContent; return; }
    images.push({alt: el.alt, section: section, width: el.naturalWidth, height: el.naturalHeight,
                 broken: !el.complete || el.naturalWidth === 0});
  });
  var details = Array.prototype.map.call(document.querySelectorAll("details"), function (d) {
    var closed = {open: d.open, height: d.getBoundingClientRect().height};
    d.open = true;  // then opened, as a reader would: its tables must show
    var opened = d.getBoundingClientRect().height;
    d.open = closed.open;
    return {id: d.id, open: closed.open, tables: d.querySelectorAll("table").length, height: closed.height,
            height_opened: opened};
  });
  var out = {images: images, broken: images.filter(function (i) { return i.broken; }).length,
             headings: Array.prototype.map.call(document.querySelectorAll("h2"), function (h) { return h.textContent; }),
             details: details, height: document.documentElement.scrollHeight};
  var pre = document.createElement("pre");
  pre.id = "check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


@pytest.fixture(scope="module")
def browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        if os.environ.get("RLMEC_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RLMEC_REQUIRE_BROWSER=1 but none of {BROWSERS} is on PATH (.ci/run installs chromium as root)")
        pytest.skip(f"no headless browser ({', '.join(BROWSERS)}) installed")
    return found


def chromium(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with its own profile directory under ``tmp``; fail the test on a non-zero exit."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           f"--user-data-dir={tmp / 'profile'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def check_page(browser: str, page: Path, tmp: Path) -> dict[str, Any]:
    """Load a copy of ``page`` with :data:`CHECK_SCRIPT` appended; return what the script found."""
    copy = tmp / "checked.html"
    text = page.read_text()
    assert text.count("</body>") == 1
    copy.write_text(text.replace("</body>", CHECK_SCRIPT + "</body>"))
    dom = chromium(browser, tmp, "--virtual-time-budget=10000", "--dump-dom", copy.as_uri()).stdout
    found = re.search(r'<pre id="check">(.*?)</pre>', dom, re.S)
    assert found, f"the check script did not run: no <pre id=\"check\"> in the DOM ({len(dom)} characters)"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser_report")
    run = make_run(root)
    build_report(**report_args(run, root / "out"))
    page = root / "page" / "report.html"  # the page alone: every image must be embedded, none linked
    page.parent.mkdir()
    shutil.copy(root / "out" / "report.html", page)
    return page


def test_report_renders_every_section_and_image(browser: str, report: Path, tmp_path: Path) -> None:
    found = check_page(browser, report, tmp_path)
    assert found["headings"] == ["Health", "Accuracy", "Data funnel", "GRM quality", "Token rewards", "Training curves",
                                 "Example solutions", "Raw metrics"]
    assert found["broken"] == 0, [i for i in found["images"] if i["broken"]]
    by_alt = {i["alt"]: i for i in found["images"]}
    for alt, section in (("data funnel", "Data funnel"), ("GRM calibration", "GRM quality"),
                         ("token reward distribution", "Token rewards"), ("rl training curves", "Training curves")):
        assert by_alt[alt]["section"] == section
        assert by_alt[alt]["width"] >= 600 and by_alt[alt]["height"] >= 300, by_alt[alt]
    assert len(found["images"]) == 7
    # the raw metrics: one collapsed <details> (one line high), its five tables shown once opened
    [raw] = found["details"]
    assert (raw["id"], raw["open"], raw["tables"]) == ("raw-metrics-details", False, 5)
    assert raw["height"] < 60 and raw["height_opened"] > raw["height"] + 500, raw


def test_the_check_sees_a_broken_image(browser: str, report: Path, tmp_path: Path) -> None:
    """The check can fail: an image whose data does not decode is reported."""
    page = report.read_text()
    broken = re.sub(r'(<img alt="data funnel" src="data:image/png;base64,)[^"]+', r"\1AAAA", page)
    assert broken != page
    (tmp_path / "broken.html").write_text(broken)
    found = check_page(browser, tmp_path / "broken.html", tmp_path)
    assert found["broken"] == 1 and [i["alt"] for i in found["images"] if i["broken"]] == ["data funnel"]


def test_report_screenshot(browser: str, report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    chromium(browser, tmp_path, f"--screenshot={shot}", "--window-size=1280,4000", report.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1280, 4000)
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]  # [4000, 1280, 3] floats in [0, 1]
    ink = (pixels.min(axis=2) < 0.9).mean()  # share of pixels that are not (near) white
    colours = len({tuple(p) for p in (pixels[::7, ::7] * 255).round().astype(int).reshape(-1, 3).tolist()})
    assert ink > 0.05 and colours > 50, f"screenshot looks blank: {ink:.1%} ink, {colours} colours"
