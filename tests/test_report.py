"""report.html without a browser (tests/test_report_browser.py opens it in one): self-contained, the untrusted
texts escaped, its numbers those of the JSONL files; report.md points at it; `localaug runs` says each run's state."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from bench.synthetic_run import HOSTILE
from localaug.cli import main
from localaug.config import RunConfig, resolve
from localaug.records import PrepareSummary
from localaug.store import RunStore
from localaug.task import load_task
from tests.jsonl_counts import round_counts, teacher_rounds


def _embedded(page: str) -> dict:
    found = re.search(r'<script type="application/json" id=report-data>(.*?)</script>', page, re.S)
    assert found
    return json.loads(found.group(1))


def test_page_is_self_contained_and_shows_untrusted_text_only_as_text(synthetic_run: Path) -> None:
    page = (synthetic_run / "report.html").read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # Nothing is fetched: no stylesheet, font or script from a file or a host; the only image is inline.
    markup = page.replace(re.search(r'<script type="application/json".*?</script>', page, re.S).group(0), "")
    assert not re.search(r"<link|@import|@font-face|url\(", markup)
    sources = re.findall(r'\ssrc="?([^"\s>]+)', markup)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert page.count("<script") == 2  # the data and page.js, nothing a teacher wrote
    texts = {x["text"] for r in _embedded(page)["rounds"] for t in r["targets"] for x in t["ex"]}
    for hostile in HOSTILE:
        assert hostile in texts  # carried intact, as data ...
        assert "<" not in hostile or hostile not in page  # ... never as markup


def test_page_counts_equal_the_jsonl_files(fake_demo_run: tuple[Path, str], synthetic_run: Path) -> None:
    for run in (fake_demo_run[0], synthetic_run):
        data = _embedded((run / "report.html").read_text())
        rounds = teacher_rounds(run)
        assert rounds
        for i in rounds:
            counts = next(r for r in data["rounds"] if r["iteration"] == i)["counts"]
            expect = round_counts(run, i)
            assert sum(counts.values()) == expect.pop("written")
            assert {k: v for k, v in counts.items() if v} == {k: v for k, v in expect.items() if v}


def test_markdown_report_points_at_the_page(fake_demo_run: tuple[Path, str]) -> None:
    run, _ = fake_demo_run
    assert "[report.html](report.html)" in (run / "report.md").read_text()
    assert (run / "report.html").exists() and (run / "accuracy.png").exists()


def test_runs_lists_state_accuracy_and_teacher_examples(tmp_path: Path, synthetic_run: Path) -> None:
    task = load_task("demo")
    settings = resolve(RunConfig(task="demo", seed_size=12, iterations=2), task.defaults)
    stopped = RunStore.open_for_run(tmp_path / "stopped", settings)  # a run killed during iteration 1's augment
    stopped.mark_done("prepare", PrepareSummary(seed_size=12, holdout_size=0, test_size=10, pool_size=100))
    stopped.mark_started("iter_01/augment")
    stopped.unlock()
    live = RunStore.open_for_run(tmp_path / "live", settings)  # alive: it holds its lock
    live.mark_started("iter_00/train")
    (tmp_path / "finished").symlink_to(synthetic_run)
    try:
        out = CliRunner().invoke(main, ["runs", "--dir", str(tmp_path)], env={"COLUMNS": "200"}).output
    finally:
        live.unlock()
    lines = {ln.split("│")[1].strip(): ln for ln in out.splitlines() if ln.count("│") > 3}
    assert "stopped at iteration 1, augment" in lines["stopped"]
    assert "running: iteration 0, train" in lines["live"]
    m = RunStore.open_existing(synthetic_run).manifest
    rows = m.rows()
    added = sum(round_counts(synthetic_run, i)["kept"] for i in range(2))
    cells = [c.strip() for c in lines["finished"].split("│")]
    assert "finished" in cells and f"{rows[0].test_accuracy:.1%}" in cells and f"{rows[-1].test_accuracy:.1%}" in cells
    assert str(added) in cells and added > 0


def test_maths_shows_the_students_number_beside_the_gold_one(tmp_path: Path) -> None:
    from localaug.report.gather import gather, shown_for

    task = load_task("gsm8k")
    store = RunStore.open_for_run(tmp_path / "run", resolve(RunConfig(task="gsm8k", seed_size=2, iterations=1),
                                                            task.defaults))
    q = {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}
    t = {"question": "A box holds 6 eggs. How many in 2 boxes?", "answer": "6 * 2 = <<6*2=12>>12\n#### 12"}
    store.write_jsonl("seed.jsonl", [{"id": "train-1", **q}])
    store.write_jsonl("test.jsonl", [{"id": "test-1", **t}])
    store.mark_started("iter_00/eval_seed")
    store.write_jsonl("iter_00/eval_seed.jsonl", [{"id": "train-1", "prediction": "8", "gold": "7", "correct": False}])
    store.write_jsonl("iter_00/eval_test.jsonl", [{"id": "test-1", "prediction": "10", "gold": "12", "correct": False}])
    store.unlock()
    data = gather(store, shown_for(store))
    target = data["rounds"][0]["targets"][0]
    assert (target["pred"], target["answer"], target["detail"]) == ("8", "7", q["answer"])
    assert data["rounds"][0]["test"]["wrong"] == [{"id": "test-1", "text": t["question"], "pred": "10", "gold": "12"}]
