"""report.html at scale: a synthetic finished run with N teacher examples (bench/synthetic_run.py), its page's
size, how long localaug takes to write it, and how long headless Chromium takes to load it and to filter it.

    .venv/bin/python bench/report_bench.py                 # 10,000 teacher examples, 5 loads
    .venv/bin/python bench/report_bench.py --examples 300 --loads 1     # a smoke test
    .venv/bin/python bench/report_bench.py --screenshot RUN_DIR docs/img      # the README's two pictures

Chromium is Debian's (/usr/bin/chromium, or $LOCALAUG_CHROMIUM), driven by playwright with every network
request refused. Load = navigation start to the page's own "ready" mark (its script has drawn the first
examples); filter = typing a word into the search box until the list is redrawn. Medians of --loads runs in
fresh pages. The machine's load average is printed beside them: on a busy machine the times mean little.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.synthetic_run import write_run  # noqa: E402
from localaug import layout  # noqa: E402
from localaug.report import write_report  # noqa: E402
from localaug.store import RunStore  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=10_000)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--chromium", default=os.environ.get("LOCALAUG_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--screenshot", nargs=2, metavar=("RUN_DIR", "OUT_DIR"),
                    help="only write OUT_DIR/report.png and report-examples.png of RUN_DIR's report.html")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    if args.screenshot:
        screenshots(Path(args.screenshot[0]), Path(args.screenshot[1]), args.chromium)
        return

    with tempfile.TemporaryDirectory() as tmp:
        run = write_run(Path(tmp) / "run", args.examples)
        store = RunStore.open_existing(run)
        t0 = time.perf_counter()
        write_report(store)
        written_s = time.perf_counter() - t0
        page_path = run / layout.REPORT_HTML
        size = page_path.stat().st_size
        rounds = [run / layout.round_folder(i).path for i in range(3)]
        teacher = sum(_lines(r / "candidates.jsonl") + _lines(r / "rejected_parse.jsonl") for r in rounds)
        loads, filters, requests, errors = [], [], [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            for _ in range(args.loads):
                page = browser.new_page()
                page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                           else (requests.append(route.request.url), route.abort()))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.goto(page_path.as_uri())
                page.wait_for_selector("html[data-ready]")
                loads.append(page.evaluate("performance.now()") / 1000)
                t = time.perf_counter()
                before = page.get_attribute("#match-count", "data-examples")
                page.fill("#q", "refund")
                while page.get_attribute("#match-count", "data-examples") == before:  # polled from here: the
                    time.sleep(0.005)  # page's CSP refuses the eval that page.wait_for_function needs
                filters.append(time.perf_counter() - t - 0.12)  # less the page's typing debounce (page.js)
                page.close()
            browser.close()
    print(f"teacher examples: {teacher:,}   page: {size / 1e6:.2f} MB   written by localaug in {written_s:.2f} s")
    print(f"load to first examples drawn: median {statistics.median(loads):.2f} s (of {args.loads}: "
          + ", ".join(f"{x:.2f}" for x in loads) + ")")
    print(f"search filter redraw: median {statistics.median(filters) * 1000:.0f} ms")
    print(f"requests beyond the file: {len(requests)}   console errors: {len(errors)}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (1 min) during the run")


def screenshots(run: Path, out: Path, chromium: str) -> None:
    """The top of the page (result, accuracy, plot) and the first examples of its explorer, 1100 px wide."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 1500})
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
        page.goto((run / layout.REPORT_HTML).resolve().as_uri())
        page.wait_for_selector("html[data-ready]")
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / "report.png"))
        box = page.query_selector("#examples").bounding_box()
        page.screenshot(path=str(out / "report-examples.png"), full_page=True,
                        clip={"x": 0, "y": box["y"], "width": 1100, "height": min(box["height"], 1500)})
        browser.close()
    print(f"wrote {out / 'report.png'} and {out / 'report-examples.png'}")


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


if __name__ == "__main__":
    main()
