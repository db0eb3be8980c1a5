"""report.html: one self-contained page (styles, script, plot inline; no request to any host) that shows the
run and every example the teacher wrote. Every text from the run is escaped here or set as text by page.js:
the teacher's output and the user's data are untrusted."""

from __future__ import annotations

import base64
import json
from html import escape
from importlib.resources import files
from typing import Any

from .. import layout
from ..layout import round_folder
from ..records import AugmentSummary, Manifest
from .summary import (
    COLUMNS,
    SERVER_COLUMNS,
    TEACHER_COLUMNS,
    cell,
    loose_server_note,
    plain_and_final,
    preflight_sentences,
    server_rows,
    teacher_added,
    teacher_rows,
    verdict,
)

# Nothing on the page may reach another host, whatever a teacher wrote: the browser enforces it.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")


def _asset(name: str) -> str:
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON that cannot end its <script> element or open another one, whatever the strings in it hold."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _table(headers: list[str] | tuple[str, ...], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_page(name: str, m: Manifest, status: str, config: str, data: dict[str, Any], png: bytes | None) -> str:
    plain, final = plain_and_final(m)
    rows = m.rows()
    parts = [
        f"<h1>localaug run <span class=mono>{escape(name)}</span></h1>",
        "<p class=meta>" + " · ".join([escape(status), f"created {escape(m.created)}"] + [
            f"{escape(role)}: <span class=mono>{escape(who)}</span>" for role, who in sorted(m.models.items())])
        + "</p>",
        '<nav><a href="#result">Result</a> <a href="#accuracy">Accuracy</a> <a href="#preflight">Preflight</a> '
        + " ".join(f'<a href="#iter-{r["iteration"]}">Iteration {r["iteration"]}</a>' for r in data["rounds"])
        + ' <a href="#examples">Examples</a> <a href="#config">Config</a></nav>',
        '<section id=result><h2>Result</h2><div class=tiles>',
        f'<div class=tile><b id=plain-acc>{_pct(plain)}</b>plain fine-tuning (iteration 0), test</div>',
        f'<div class=tile><b id=final-acc>{_pct(final)}</b>{"final model" if m.final else "last iteration"}, '
        "test</div>",
        f'<div class=tile><b id=added>{teacher_added(m)}</b>teacher examples added</div></div>',
        f"<p class=verdict>{escape(verdict(rows, m.final))}</p>",
    ]
    if m.stopped_early:
        parts.append(f"<p>Stopped early: {escape(m.stopped_early)}.</p>")
    parts.append("</section>")
    parts.append(_accuracy(m, png))
    parts.append(_preflight(m))
    parts += [_round_section(r, data, m) for r in data["rounds"]]
    if data.get("final_test"):
        parts.append("<section id=final><h2>Final model</h2>" + _test_html(data["final_test"], data) + "</section>")
    parts.append(_explorer())
    parts.append("<section id=config><h2>Config and versions</h2><details><summary>config.yaml</summary>"
                 f"<pre>{escape(config)}</pre></details>"
                 + _table(["package", "version"], [[k, v] for k, v in sorted(m.versions.items())]) + "</section>")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>localaug · {escape(name)}</title><style>{_asset('page.css')}</style></head><body><main>"
            + "\n".join(parts)
            + f'</main><script type="application/json" id=report-data>{embed_json(data)}</script>'
            f"<script>{_asset('page.js')}</script></body></html>\n")


def _accuracy(m: Manifest, png: bytes | None) -> str:
    rows = m.rows()
    table = _table([h for _, h, _ in COLUMNS], [[cell(r, k, f) for k, _, f in COLUMNS] for r in rows], "num")
    img = (f'<img alt="test and seed accuracy per iteration" src="data:image/png;base64,'
           f'{base64.b64encode(png).decode()}">' if png else "")
    return (f"<section id=accuracy><h2>Accuracy per iteration</h2>{table}"
            "<p class=note>Iteration 0 is plain fine-tuning on the seed set; each later iteration adds what the "
            f"teacher wrote for the seed examples the student got wrong.</p>{img}</section>")


def _preflight(m: Manifest) -> str:
    said = preflight_sentences(m.preflight)
    body = "".join(f"<p>{escape(s)}</p>" for s in said) or "<p>No teacher preflight in this run.</p>"
    if m.preflight and m.preflight.warning:
        body += f"<p class=warning><b>Warning:</b> {escape(m.preflight.warning)}</p>"
    teacher = teacher_rows(m)
    if teacher:
        body += "<h3>The teacher per round</h3>" + _table(TEACHER_COLUMNS, teacher, "num")
    if m.teacher_servers:
        body += "<h3>Teacher servers</h3>" + _table(SERVER_COLUMNS, server_rows(m.teacher_servers))
        if note := loose_server_note(m.teacher_servers):
            body += f"<p class=note>{escape(note)}</p>"
    return f"<section id=preflight><h2>Teacher preflight</h2>{body}</section>"


FATE_WORDS = {"kept": "kept", "pending": "not through the filters yet"}


def _round_section(r: dict[str, Any], data: dict[str, Any], m: Manifest) -> str:
    i = r["iteration"]
    counts: dict[str, int] = r["counts"]
    wrong = sum(1 for t in r["targets"] if not t["ok"])
    aug = m.stages.get(round_folder(i).key(layout.AUGMENT))
    sent = aug.wrong if isinstance(aug, AugmentSummary) else sum(1 for t in r["targets"] if t["ex"])
    head = (f"<p>{wrong} seed example{'s' if wrong != 1 else ''} found wrong by {escape(r['errors_from'])}; "
            f"{sent} sent to the teacher.</p>" if r["asked_teacher"] else
            f"<p>{wrong} seed example{'s' if wrong != 1 else ''} wrong. The teacher was not asked in this iteration "
            "(the last one trains and evaluates only, or the run stopped before).</p>")
    written = sum(counts.values())
    rows = [f'<tr><th>teacher examples written</th><td data-round="{i}" data-count="written">{written}</td></tr>']
    for fate in ("kept", "pending"):
        if fate in counts or fate == "kept":
            rows.append(f'<tr><th>{FATE_WORDS[fate]}</th><td data-round="{i}" data-count="{fate}">'
                        f"{counts.get(fate, 0)}</td></tr>")
    for key in sorted(k for k in counts if k.startswith("refused:")):
        kind = key.split(":", 1)[1]
        rows.append(f'<tr><th>refused: {escape(kind)}</th><td data-round="{i}" data-count="{escape(key)}">'
                    f"{counts[key]}</td></tr>")
    table = f'<table class="num counts"><tbody>{"".join(rows)}</tbody></table>' if r["asked_teacher"] else ""
    test = _test_html(r["test"], data) if r["test"] else ""
    return (f'<section id="iter-{i}"><h2>Iteration {i}</h2>{head}{table}{test}'
            f'<p><a href="#examples" data-show-round="{i}">See the seed examples and what the teacher wrote '
            "for them</a></p></section>")


def _test_html(view: dict[str, Any], data: dict[str, Any]) -> str:
    acc = view["correct"] / view["total"] if view["total"] else 0.0
    out = f"<h3>On the test set: {view['correct']} of {view['total']} right ({acc:.1%})</h3>"
    if "matrix" in view:
        cols, matrix = view["labels"], view["matrix"]
        per_label = []
        for g, row in zip(cols, matrix, strict=False):
            total = sum(row)
            right = row[cols.index(g)]
            per_label.append([g, str(right), str(total), _pct(right / total) if total else "-"])
        out += "<div class=pair><div><h4>Per label</h4>" + _table(["label", "right", "rows", "accuracy"], per_label,
                                                                    "num") + "</div>"
        out += "<div><h4>Confusion matrix</h4>" + _confusion(cols, matrix) + "</div></div>"
    elif view.get("wrong") is not None:
        wrong = view["wrong"]
        rows = [[w["id"], w["text"], w["pred"], w["gold"]] for w in wrong]
        out += (f"<details><summary>The {len(wrong)} test rows it got wrong: its answer beside the right one"
                "</summary>" + _table(["row", "question", "student", "right answer"], rows, "wrong-rows")
                + "</details>")
    return out


def _confusion(cols: list[str], matrix: list[list[int]]) -> str:
    """Rows: the right label; columns: the student's answer. Shaded by the share of the row."""
    head = "<th>right ↓ / student →</th>" + "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = []
    for g, row in zip(cols, matrix, strict=False):
        total = sum(row) or 1
        cells = []
        for c, n in zip(cols, row, strict=True):
            share = n / total
            cls = "diag" if c == g else "off"
            cells.append(f'<td class={cls} style="--share:{share:.3f}">{n}</td>')
        body.append(f"<tr><th>{escape(g)}</th>{''.join(cells)}</tr>")
    return f'<table class="num confusion"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _explorer() -> str:
    return ("<section id=examples><h2>Seed examples and what the teacher wrote</h2>"
            "<p class=note>Each seed example the student got wrong (its answer beside the right one), and under it "
            "every example the teacher wrote for it: kept, or refused with the reason.</p>"
            '<div class=filters><input id=q type=search placeholder="search text, answers, reasons, ids" '
            'aria-label="search"><select id=f-round aria-label="iteration"></select>'
            '<select id=f-fate aria-label="fate"></select></div>'
            '<p id=match-count class=note></p><div id=list></div>'
            '<button id=more type=button hidden>show more</button></section>')
