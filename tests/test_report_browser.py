"""report.html in a real browser: Debian's Chromium, headless, driven by playwright (never a downloaded browser),
the page opened from disk with every network request refused and logged. Zero requests, zero console errors,
no script of the teacher's run, and the numbers on the page equal the JSONL files'.

Skips, saying why, where /usr/bin/chromium (or $LOCALAUG_CHROMIUM) or playwright is missing; .ci/run installs
both and sets LOCALAUG_REQUIRE_CHROMIUM, so there it runs or fails."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.synthetic_run import HOSTILE
from localaug.store import RunStore
from tests.jsonl_counts import round_counts, teacher_rounds

CHROMIUM = os.environ.get("LOCALAUG_CHROMIUM", "/usr/bin/chromium")
# As root Chromium needs --no-sandbox; the others stop its own background connections (refused offline).
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


def _missing(reason: str) -> None:
    # CI installs both (.ci/run sets LOCALAUG_REQUIRE_CHROMIUM): there a missing browser is a failure.
    (pytest.fail if os.environ.get("LOCALAUG_REQUIRE_CHROMIUM") else pytest.skip)(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium, as .ci/run does)")
    try:
        from playwright import sync_api
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@dataclass
class Opened:
    page: Any
    requests: list[str] = field(default_factory=list)  # every request but the page's own file
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, dialogs


def _open(browser: Any, path: Path) -> Opened:
    page = browser.new_page()
    url = path.resolve().as_uri()
    seen = Opened(page)

    # Every request is logged; every one but the page's own file is refused.
    page.route("**/*", lambda r: r.continue_() if r.request.url == url else r.abort())
    page.on("request", lambda r: r.url == url or seen.requests.append(r.url))
    page.on("console", lambda m: m.type == "error" and seen.errors.append(m.text))
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    page.on("dialog", lambda d: (seen.errors.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(url)
    page.wait_for_selector("html[data-ready]")
    return seen


def _shown(page: Any) -> tuple[int, int]:
    """(seed examples, teacher examples) the explorer says match, and it draws the first of them."""
    el = page.query_selector("#match-count")
    return int(el.get_attribute("data-seeds")), int(el.get_attribute("data-examples"))


def test_harness_sees_a_request_and_an_error(browser: Any, tmp_path: Path) -> None:
    # A page that reaches for a host must be caught, or the zero counts below prove nothing.
    bad = tmp_path / "bad.html"
    bad.write_text('<html data-ready=1><img src="http://127.0.0.1:9/pixel.png"><script>nope()</script></html>')
    seen = _open(browser, bad)
    assert seen.requests == ["http://127.0.0.1:9/pixel.png"] and any("nope" in e for e in seen.errors)
    seen.page.close()


def test_demo_report_offline_without_errors_and_its_numbers_equal_the_files(browser: Any,
                                                                           fake_demo_run: tuple[Path, str]) -> None:
    run, _ = fake_demo_run
    seen = _open(browser, run / "report.html")
    page = seen.page
    rounds = teacher_rounds(run)
    assert rounds
    for i in rounds:
        on_page = {td.get_attribute("data-count"): int(td.inner_text())
                   for td in page.query_selector_all(f'td[data-round="{i}"][data-count]')}
        files = round_counts(run, i)
        assert {k: v for k, v in on_page.items() if v} == {k: v for k, v in files.items() if v}, i
        # The explorer, filtered to one round and one fate, lists as many as the files hold.
        page.select_option("#f-round", str(i))
        for fate, n in files.items():
            if fate == "written":
                continue
            page.select_option("#f-fate", fate)
            assert _shown(page)[1] == n, (i, fate)
            drawn = [li.get_attribute("data-fate") for li in page.query_selector_all("#list li.ex")]
            assert set(drawn) == ({fate} if n else set()) and len(drawn) <= n
    m = RunStore.open_existing(run).manifest
    assert page.inner_text("#plain-acc") == f"{m.rows()[0].test_accuracy:.1%}"
    assert page.inner_text("#final-acc") == f"{m.rows()[-1].test_accuracy:.1%}"
    assert int(page.inner_text("#added")) == sum(round_counts(run, i)["kept"] for i in rounds)
    assert page.query_selector_all("table.confusion") and page.query_selector("img[src^='data:image/png']")
    assert seen.requests == [] and seen.errors == []
    page.close()


def test_teacher_text_is_shown_as_text_and_search_finds_it(browser: Any, synthetic_run: Path) -> None:
    seen = _open(browser, synthetic_run / "report.html")
    page = seen.page
    page.fill("#q", "window.__pwned")
    page.wait_for_selector('#match-count[data-query="window.__pwned"]')  # the search applied (after its pause)
    assert _shown(page)[1] == 2  # the two texts that hold it, each once
    listed = page.inner_text("#list")
    assert HOSTILE[0] in listed and 'onerror="window.__pwned = 2"' in listed
    assert page.evaluate("window.__pwned") is None  # neither ran
    page.fill("#q", "")
    page.wait_for_selector('#match-count[data-query=""]')
    page.select_option("#f-fate", "refused:contaminated")
    assert "near test row test-" in page.inner_text("#list li[data-fate='refused:contaminated']")
    assert seen.requests == [] and seen.errors == []
    page.close()
