"""The Snakemake report renders our figures and tables in a real browser.

A two-rule workflow in tmp_path makes one figure (`plot_pr_curves`) and one table
(`TableDocument`: CSV, Markdown and the HTML the report displays), each marked with `report(...)`
and captioned by the project's own caption files in report/. `snakemake --report report.html`
builds the self-contained report; headless Chromium then opens it, and a small script appended
to a copy of the page opens one result the way a reader does (result info, then the eye button).
We check the DOM after the report's JavaScript has run (the image and the table are embedded and
shown, the captions are rendered) and the screenshots (the plot's colours and the table's header
shading are on screen).

Snakemake 9 shows images inline and HTML in an iframe, but offers CSV and Markdown only as
downloads: that is why tables are marked for the report as their .html rendering.

Without a Chromium binary these tests skip, naming the package to install, so README's test
command passes on a fresh machine; under CI (`CI=true`) a missing browser fails them instead,
so the check cannot silently stop running there.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from micml.evaluation.plots import model_colours

REPO = Path(__file__).resolve().parents[1]
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
PLOT = "results/toy/plots/pr_curves.png"
TABLE = "results/tables/paper_main.html"
WINDOW = (1400, 1000)

SNAKEFILE = textwrap.dedent(f"""
    config.setdefault("datasets", {{"toy": {{}}}})
    config.setdefault("models", ["alpha", "beta"])

    report: "{REPO}/report/workflow.rst"


    rule all:
        input:
            "{PLOT}",
            "{TABLE}",


    rule pr_curves:
        output:
            csv="results/{{dataset}}/alpha/metrics/pr_curve.csv",
            png=report("results/{{dataset}}/plots/pr_curves.png", caption="{REPO}/report/pr_curves.rst",
                       category="Evaluation", subcategory="{{dataset}}"),
        run:
            import pandas as pd
            from micml.evaluation.plots import plot_pr_curves

            pd.DataFrame({{"protocol": "dsfnet_f1", "setting": "IoU > 0", "score_threshold": [0.1, 0.3, 0.5],
                          "tp": [9, 8, 5], "fp": [6, 2, 1], "fn": [1, 2, 5],
                          "precision": [0.6, 0.8, 0.83], "recall": [0.9, 0.8, 0.5],
                          "f1": [0.72, 0.8, 0.62]}}).to_csv(output.csv, index=False)
            plot_pr_curves(wildcards.dataset, {{"alpha": output.csv}}, output.png)


    rule paper_main:
        output:
            csv=report("results/tables/paper_main.csv", caption="{REPO}/report/paper_main.rst",
                       category="Paper tables"),
            md="results/tables/paper_main.md",
            html=report("results/tables/paper_main.html", caption="{REPO}/report/paper_main.rst",
                        category="Paper tables"),
        run:
            import pandas as pd
            from micml.tables import TableDocument, TableSection

            frame = pd.DataFrame({{"method": ["alpha", "beta"], "F1 IoU>0": [87.25, float("nan")]}})
            TableDocument("Detection accuracy", frame, [TableSection("toy", frame)],
                          ["beta on toy: not run yet"]).write(output.csv[:-len(".csv")])
""")

# Appended to a copy of report.html: open the result named in the URL fragment as a reader would
# (its info panel, then the eye button beside its path), and mark the body when done.
OPEN_RESULT_SCRIPT = """
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var path = decodeURIComponent(location.hash.slice(1));
    if (!path) { return; }  // no fragment: stay on the start page
    app.showResultInfo(path);
    setTimeout(function () {
      var label = Array.from(document.querySelectorAll("nav span")).find(function (span) {
        return span.textContent === path;
      });
      if (!label) { document.body.setAttribute("data-test-error", "no entry for " + path); return; }
      label.parentElement.querySelector("a").click();
      document.body.setAttribute("data-test-opened", path);
    }, 300);
  }, 300);
});
</script>
"""


BROWSER_MISSING = "chromium not found: apt-get install chromium"


def browser_or_skip() -> str:
    """The first Chromium on PATH; without one, skip (fail where the environment says CI=true)."""
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"{BROWSER_MISSING} (CI=true: the report must be checked in a browser here)", pytrace=False)
    pytest.skip(BROWSER_MISSING)


def run(command: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, f"{' '.join(command[:4])} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def browse(page: Path, fragment: str, profile: Path, *, screenshot: Path | None = None) -> str:
    """Load `page#fragment`, let its scripts run for up to 10 s of virtual time, and return the
    DOM (or write a screenshot)."""
    command = [browser_or_skip(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=10000",
               f"--window-size={WINDOW[0]},{WINDOW[1]}"]
    command += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    return run([*command, f"{page.as_uri()}#{fragment}"], page.parent).stdout


def embedded(dom: str, tag: str, mime: str) -> bytes:
    """The bytes of the data URI in the `src` of the first `<tag>` with that MIME type."""
    match = re.search(rf'<{tag}[^>]* src="data:{re.escape(mime)};[^"]*?base64,([^"]+)"', dom)
    assert match, f"no <{tag}> showing a {mime} data URI in the rendered report"
    return base64.b64decode(match.group(1))


def content_pixels(screenshot: Path) -> np.ndarray:
    """RGB pixels of the content pane (the navigation bar stays in the left half)."""
    image = cv2.cvtColor(cv2.imread(str(screenshot), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert image.shape[:2] == (WINDOW[1], WINDOW[0])
    return image[:, int(image.shape[1] * 0.55):]


def near(pixels: np.ndarray, rgb, tolerance: int = 6) -> int:
    return int(np.all(np.abs(pixels.astype(int) - np.array(rgb)) <= tolerance, axis=-1).sum())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    browser_or_skip()  # before building the report: without a browser there is nothing to look at
    workdir = tmp_path_factory.mktemp("workflow")
    (workdir / "Snakefile").write_text(SNAKEFILE)
    snakemake = [sys.executable, "-m", "snakemake", "--snakefile", str(workdir / "Snakefile"),
                 "--directory", str(workdir)]
    run([*snakemake, "--cores", "1"], workdir)
    run([*snakemake, "--report", "report.html"], workdir)
    page = workdir / "report.html"
    html = page.read_text()
    closing = html.rindex("</body>")
    view = workdir / "view.html"
    view.write_text(html[:closing] + OPEN_RESULT_SCRIPT + html[closing:])
    return view


def test_report_shows_the_plot_with_its_caption(report, tmp_path):
    dom = browse(report, PLOT, tmp_path / "profile")
    assert f'data-test-opened="{PLOT}"' in dom, re.findall(r'data-test-error="[^"]*"', dom)
    assert embedded(dom, "img", "image/png") == (report.parent / PLOT).read_bytes()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert "Precision against recall on toy as the score threshold goes" in text  # caption, wildcard filled in

    shot = tmp_path / "plot.png"
    browse(report, PLOT, tmp_path / "profile", screenshot=shot)
    line = tuple(round(255 * channel) for channel in model_colours(["alpha"])["alpha"][:3])
    assert near(content_pixels(shot), line, 30) > 100, "the PR curve is not on screen"


def test_report_shows_the_table_with_its_caption(report, tmp_path):
    dom = browse(report, TABLE, tmp_path / "profile")
    assert f'data-test-opened="{TABLE}"' in dom, re.findall(r'data-test-error="[^"]*"', dom)
    shown = embedded(dom, "iframe", "text/html").decode()
    assert shown == (report.parent / TABLE).read_text()
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", shown)
    assert cells == ["alpha", "87.25", "beta", "–"]
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert "The main comparison: every method on every dataset" in text

    shot = tmp_path / "table.png"
    browse(report, TABLE, tmp_path / "profile", screenshot=shot)
    pixels = content_pixels(shot)
    header_shading = (226, 232, 240)  # th background of micml's HTML tables (#e2e8f0)
    assert near(pixels, header_shading, 2) > 500, "the table's header row is not on screen"
    assert (pixels.max(axis=-1) < 80).sum() > 200, "no text is on screen in the table's pane"


def test_report_front_page_describes_the_workflow(report, tmp_path):
    dom = browse(report, "", tmp_path / "profile")  # no result opened: the start page
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert "micml: small moving objects in satellite and drone video" in text
    assert "Datasets: toy." in text and "Models: alpha, beta." in text


# --- without a browser ----------------------------------------------------------------------


@pytest.fixture
def no_browser(monkeypatch, tmp_path):
    """A PATH holding no Chromium (an empty folder)."""
    monkeypatch.setenv("PATH", str(tmp_path))


@pytest.mark.parametrize("ci", [None, "false", "1"])
def test_missing_browser_skips_outside_ci_naming_the_package(no_browser, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="^chromium not found: apt-get install chromium$"):
        browser_or_skip()


def test_missing_browser_fails_under_ci(no_browser, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="^chromium not found: apt-get install chromium"):
        browser_or_skip()


@pytest.mark.parametrize("ci", [None, "true"])
def test_browser_on_path_is_used(monkeypatch, tmp_path, ci):
    fake = tmp_path / "chromium-browser"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    assert browser_or_skip() == str(fake)
