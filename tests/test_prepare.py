"""`localaug prepare`: the real teacher parts joined and the real student converted, in a fresh cache folder."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
from click.testing import CliRunner

from localaug.cli import main
from localaug.files import cache_dir
from localaug.modelcards import load_model_card
from localaug.student.weights import _no_conversion_bar, _one_gguf_parse, needs_conversion

TEACHER_FILE = "qwen2.5-coder-1.5b-cc324af070c2ecbf.gguf"


def _empty_cache(tmp_path: Path) -> Path:
    """The session's cache when neither model is made there yet (a fresh machine; conftest.py runs this test
    first), so the suite makes each model once; otherwise a private empty folder."""
    session, student = cache_dir(), load_model_card("gemma3-270m")
    if needs_conversion(student.gguf_file(), "gemma3-270m") and not (session / "models" / TEACHER_FILE).exists():
        return session
    return tmp_path


@pytest.mark.slow
def test_prepare_makes_both_models_ready_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = _empty_cache(tmp_path)
    monkeypatch.setenv("LOCALAUG_CACHE_DIR", str(cache))
    student = load_model_card("gemma3-270m")
    assert needs_conversion(student.gguf_file(), "gemma3-270m")
    assert not (cache / "models" / TEACHER_FILE).exists()

    res = CliRunner().invoke(main, ["prepare"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "teacher qwen2.5-coder-1.5b: ready" in res.output and "student gemma3-270m: ready" in res.output
    assert "de-quantizing" not in res.output  # transformers' own bar stays off (weights._no_conversion_bar)
    joined = cache / "models" / TEACHER_FILE
    assert joined.stat().st_size == 1_117_320_768
    assert not needs_conversion(student.gguf_file(), "gemma3-270m")
    converted = next((cache / "models").glob("gemma3-270m-*"))
    assert (converted / "model.safetensors").stat().st_size > 500e6 and (converted / "tokenizer.json").is_file()

    # Again: nothing is made twice (the files keep their modification times).
    before = {p: p.stat().st_mtime_ns for p in (joined, converted / "model.safetensors")}
    res = CliRunner().invoke(main, ["prepare"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_prepare_names_a_missing_card_in_one_line() -> None:
    res = CliRunner().invoke(main, ["prepare", "--teacher", "no-such-card"])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and "no-such-card" in res.output


def test_prepare_leaves_plugins_alone() -> None:
    res = CliRunner().invoke(main, ["prepare", "--student", "fake", "--teacher", "fake"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert res.output.count("a plug-in backend, nothing to prepare") == 2


def test_one_gguf_parse_shares_the_reader_and_restores_it(tmp_path: Path) -> None:
    # The student conversion's speed-up: transformers builds a GGUFReader per read; inside the block the same
    # path gives the same reader, and the library is left as it was. A tiny GGUF written here stands in.
    import numpy as np

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("w", np.zeros((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    original = gguf.GGUFReader
    with _one_gguf_parse():
        assert gguf.GGUFReader(path) is gguf.GGUFReader(path)
        assert gguf.GGUFReader(path).tensors[0].name == "w"
    assert gguf.GGUFReader is original
    assert gguf.GGUFReader(path) is not gguf.GGUFReader(path)


def test_the_conversion_bar_of_transformers_is_off_and_restored(capfd: pytest.CaptureFixture[str]) -> None:
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm
    with _no_conversion_bar():
        assert list(gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors...")) == [0, 1, 2]
    assert "de-quantizing" not in capfd.readouterr().err
    assert gguf_utils.tqdm is original
