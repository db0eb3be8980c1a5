"""A config file, a card and a run directory are data: none of them can make localaug run code.

Backends come from installed plug-ins (entry points; the fakes are installed as `fake` from tests/plugins);
a Python `module:factory` only from the command line, behind --student-factory / --teacher-factory. Each
canary names code that would create a file; the file must never appear, and the refusal is one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from localaug.cli import main
from localaug.config import load_settings
from tests.conftest import one_line_error, plugin_env

FAST = ["--task", "demo", "--seed-size", "18", "--iterations", "2", "--seed", "5", "--per-wrong", "1",
        "--verify", "none"]


def _localaug(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localaug.cli", *args], capture_output=True, text=True,
                          env=plugin_env(**env), cwd=cwd, timeout=300)


def test_plugins_lists_the_installed_entry_points() -> None:
    res = CliRunner().invoke(main, ["plugins"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if " fake " in ln]
    assert len(lines) == 2 and "tests.fakes:FakeStudent" in res.output and "tests.fakes:FakeTeacher" in res.output
    assert "localaug-test-fakes 1.0" in res.output


def test_a_config_naming_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    for role, other in (("student", "teacher"), ("teacher", "student")):
        cfg = tmp_path / f"{role}.yaml"
        cfg.write_text(yaml.safe_dump({role: "subprocess:getoutput", f"{role}_settings": {"cmd": f"touch {canary}"},
                                       other: "fake"}))
        out = tmp_path / f"run-{role}"
        one_line_error(_localaug("run", "--config", str(cfg), *FAST, "--out", str(out)),
                 f"{role}.yaml", f"field '{role}'", "names Python code", f"--{role}-factory")
        assert not canary.exists() and not out.exists()


def test_a_model_card_cannot_import_a_package_that_is_not_a_model(tmp_path: Path) -> None:
    # `gguf_package` names a package to assemble a GGUF from: one that is not a model package is refused
    # before it is imported (importing a module runs its code).
    canary = tmp_path / "canary"
    pkg = tmp_path / "lib" / "sneaky"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"open({str(canary)!r}, 'w').close()\n")
    card = tmp_path / "teacher.yaml"
    card.write_text("source: {gguf_package: sneaky}\n")
    out = tmp_path / "run"
    env = plugin_env()
    env["PYTHONPATH"] += os.pathsep + str(tmp_path / "lib")
    res = subprocess.run([sys.executable, "-m", "localaug.cli", "run", *FAST, "--student", "fake", "--teacher",
                          str(card), "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    one_line_error(res, "teacher.yaml", "source.gguf_package", "not a model package")
    assert not canary.exists() and not out.exists()


def test_a_resumed_run_directory_naming_code_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    killed = _localaug("run", *FAST, "--student", "fake", "--teacher", "fake", "--out", str(out),
                       "--cache", str(tmp_path / "c.sqlite"), LOCALAUG_FAILPOINT="train:1")
    assert killed.returncode < 0, killed.stderr[-2000:]
    # Someone edits the folder consistently: config.yaml names code, the manifest's fingerprint matches it.
    canary = tmp_path / "canary"
    config = yaml.safe_load((out / "config.yaml").read_text())
    config.update(teacher="subprocess:getoutput", teacher_settings={"cmd": f"touch {canary}"})
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["config_fingerprint"] = load_settings(out / "config.yaml").fingerprint()
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    one_line_error(_localaug("run", "--resume", str(out)), "config.yaml", "field 'teacher'", "names Python code")
    assert not canary.exists()
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_a_factory_runs_only_from_the_command_line_flag(tmp_path: Path) -> None:
    out = tmp_path / "run"
    flags = ["--student-factory", "tests.fakes:FakeStudent", "--teacher-factory", "tests.fakes:FakeTeacher"]
    killed = _localaug("run", *FAST, *flags, "--out", str(out), "--cache", str(tmp_path / "c.sqlite"),
                       LOCALAUG_FAILPOINT="train:1")
    assert killed.returncode < 0, killed.stderr[-2000:]
    # Its run directory names the factories; resuming it asks for the flags again rather than running them.
    one_line_error(_localaug("run", "--resume", str(out)), "names Python code", "--student-factory")
    done = _localaug("run", "--resume", str(out), *flags)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "manifest.json").read_text())["finished"] is True
