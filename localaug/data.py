"""Reading user data files with errors that name file, line and field; the data root; seed sampling.

JSONL and CSV are read line by line here (not through `datasets`) because a user with a broken file
needs the exact line number, which `datasets`' Arrow readers do not give. Parquet has no lines; it is
read through `datasets` and errors name the row.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import UserError

DATA_DIR_ENV = "LOCALAUG_DATA_DIR"
T = TypeVar("T")


def data_root(cli_value: str | Path | None = None) -> Path:
    """--data-dir, then $LOCALAUG_DATA_DIR, then ./data."""
    if cli_value:
        return Path(cli_value).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path("data")


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false. In YAML 1.1 a label named `yes`, `no`, `on`
    or `off` silently becomes a boolean, which breaks label sets like {yes: yes, no: no}."""


_Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str, file: str | Path | None = None) -> Any:
    """Parse YAML safely (no Python objects), with a one-line error naming the file and line."""
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"not valid YAML: {getattr(e, 'problem', e)}", file=file,
                        line=None if mark is None else mark.line + 1) from None


def read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs from a JSONL, CSV or Parquet file; one-line UserError on bad input."""
    if not path.exists():
        raise UserError("file not found", file=path)
    if not path.is_file():
        raise UserError("not a file", file=path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = _read_jsonl(path)
    elif suffix in (".csv", ".tsv"):
        rows = _read_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix == ".parquet":
        rows = _read_parquet(path)
    else:
        raise UserError(f"unsupported file type '{suffix}' (use .jsonl, .csv, .tsv or .parquet)", file=path)
    if not rows:
        raise UserError("file is empty (no rows)", file=path)
    return rows


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, with or without a byte-order mark (Windows editors write one); a byte that is
    not UTF-8 is reported with its line, since that is where the user looks."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise UserError(f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {column}: save the file as UTF-8)",
                        file=path, line=line) from None


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    text = _read_text(path)
    # split on "\n" only: str.splitlines() also breaks at U+2028 inside JSON strings (GSM8K has some).
    for no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"malformed JSON ({e.msg} at column {e.colno})", file=path, line=no) from None
        if not isinstance(obj, dict):
            raise UserError(f"expected a JSON object, got {type(obj).__name__}", file=path, line=no)
        rows.append((no, obj))
    return rows


def _read_csv(path: Path, delimiter: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""), delimiter=delimiter)
    try:
        for row in reader:
            if None in row:  # more cells than header columns
                raise UserError("row has more cells than the header", file=path, line=reader.line_num)
            rows.append((reader.line_num, dict(row)))
    except csv.Error as e:
        raise UserError(f"malformed CSV ({e})", file=path, line=reader.line_num) from None
    return rows


def _read_parquet(path: Path) -> list[tuple[int, dict[str, Any]]]:
    from datasets import Dataset  # heavy import: only when a Parquet file is actually read

    try:
        ds = Dataset.from_parquet(str(path))
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise UserError(f"cannot read Parquet ({type(e).__name__}: {e})", file=path) from None
    # "line" for Parquet is the 1-based row number.
    return [(i + 1, dict(r)) for i, r in enumerate(ds)]


def sample_seed(
    items: Sequence[T],
    *,
    size: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
    stratify_by: Callable[[T], str] | None = None,
) -> list[T]:
    """The paper's low-data seed set: N items (or a fraction), stratified by label where given.

    Deterministic for a given seed. Stratification allocates N proportionally to label frequency
    (largest remainders), with at least one per label when N allows, so rare labels are not lost.
    """
    n_total = len(items)
    if size is None and fraction is None:
        raise UserError("give a seed size or a seed fraction")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise UserError(f"seed fraction must be in (0, 1], got {fraction}", field="seed_fraction")
        size = max(1, round(fraction * n_total))
    assert size is not None
    if size <= 0:
        raise UserError(f"seed size must be positive, got {size}", field="seed_size")
    if size > n_total:
        raise UserError(f"seed size {size} exceeds the {n_total} rows available", field="seed_size")
    rng = random.Random(seed)
    if stratify_by is None:
        idx = sorted(rng.sample(range(n_total), size))
        return [items[i] for i in idx]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        groups[stratify_by(it)].append(i)
    labels = sorted(groups)
    quota = {lab: size * len(groups[lab]) / n_total for lab in labels}
    alloc = {lab: int(quota[lab]) for lab in labels}
    if size >= len(labels):
        for lab in labels:
            alloc[lab] = max(alloc[lab], 1)
    # Hand out what is left by largest remainder; take back from the largest groups if over.
    order = sorted(labels, key=lambda lab: (-(quota[lab] - int(quota[lab])), lab))
    while sum(alloc.values()) < size:
        for lab in order:
            if sum(alloc.values()) >= size:
                break
            if alloc[lab] < len(groups[lab]):
                alloc[lab] += 1
    while sum(alloc.values()) > size:
        lab = max(labels, key=lambda x: (alloc[x], x))
        alloc[lab] -= 1
    chosen: list[int] = []
    for lab in labels:
        chosen.extend(rng.sample(groups[lab], alloc[lab]))
    return [items[i] for i in sorted(chosen)]
