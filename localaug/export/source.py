"""Which student of a run is exported, where its weights come from, and what the run says about it.

Everything here reads the run directory through the store's public API (`RunStore.open_existing`,
`stage_done`, `stage_info`, `path`, the manifest) and resolves the student exactly as `localaug run` did:
the run's saved config names the model card and its overrides, and `load_student` finds the same base
weights (the card's GGUF, converted once, or a Hugging Face folder).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import sha256_file
from ..store import CONFIG, RunStore, iter_dir

FINAL_DIR = "final"  # recipe.FINAL_DIR: the student trained on every seed when the run held seeds out


@dataclass
class ExportSource:
    """The student to export: its adapter, its base weights, and its provenance."""

    run_dir: Path
    label: str  # "iter_01" or "final"
    adapter_dir: Path
    base_dir: Path  # the Hugging Face folder transformers loads (a GGUF student's converted copy)
    base_gguf: Path | None  # the GGUF the base weights came from, if they did
    student_identity: str
    provenance: dict[str, Any] = field(default_factory=dict)


def _trained(store: RunStore, folder: str) -> bool:
    return store.stage_done(f"{folder}/train") and (store.path(f"{folder}/adapter") / "adapter_config.json").is_file()


def pick_folder(store: RunStore, iteration: int | None) -> str:
    """`iter_XX` for --iteration, else `final` when the run trained a final student, else the last iteration
    with a trained student."""
    if iteration is not None:
        folder = iter_dir(iteration)
        if not _trained(store, folder):
            raise UserError(f"iteration {iteration} has no trained student ({folder}/adapter)", file=store.root)
        return folder
    if store.manifest.get("final") and _trained(store, FINAL_DIR):
        return FINAL_DIR
    # The folders themselves, not the iteration rows: a run stopped after a training stage has no row yet.
    done = sorted(int(p.name[5:]) for p in store.root.glob("iter_*")
                  if p.name[5:].isdigit() and _trained(store, p.name))
    if not done:
        raise UserError("holds no finished student yet (no trained adapter); run it to the end of a training "
                        "stage first", file=store.root)
    return iter_dir(done[-1])


def base_sha256(base_dir: Path, base_gguf: Path | None) -> str:
    """The GGUF's sha256; for a Hugging Face folder, the sha256 of its weight files' `sha256  name` lines."""
    if base_gguf is not None:
        return sha256_file(base_gguf)
    lines = "".join(f"{sha256_file(p)}  {p.name}\n" for p in sorted(base_dir.glob("*.safetensors")))
    return hashlib.sha256(lines.encode()).hexdigest()


def _weights_identity(identity: str) -> str:
    """'gemma3-270m gguf-sha256:abc [cpu/bf16/lora]' -> 'gemma3-270m gguf-sha256:abc' (the plan may differ)."""
    return identity.split(" [", 1)[0]


def _provenance(store: RunStore, folder: str, settings: Any) -> dict[str, Any]:
    m = store.manifest
    iterations = m.get("iterations", {})
    plain = iterations.get("00", {}).get("test_accuracy")
    if folder == FINAL_DIR:
        final_acc, iteration = (m.get("final") or {}).get("test_accuracy"), "final"
    else:
        iteration = int(folder.split("_")[1])
        final_acc = store.stage_info(f"{folder}/eval_test").get("accuracy")
    train = store.read_jsonl(f"{folder}/train.jsonl") if store.path(f"{folder}/train.jsonl").exists() else []
    added = sum(1 for r in train if (r.get("meta") or {}).get("origin") != "seed")
    return {
        "run": store.root.name,
        "run_dir": str(store.root.resolve()),
        "task": settings.task,
        "seed_size": store.stage_info("prepare").get("seed_size"),
        "test_size": store.stage_info("prepare").get("test_size"),
        "plain_accuracy": plain,
        "final_accuracy": final_acc,
        "iteration": iteration,
        "train_size": len(train),
        "teacher": m.get("models", {}).get("teacher"),
        "teacher_examples_added": added,
        "recipe": settings.recipe,
    }


def find_student(run_dir: Path, iteration: int | None = None) -> ExportSource:
    """The student to export from `run_dir`: resolved, checked against what the run recorded."""
    from ..backends import is_plugin, make_student
    from ..config import load_settings

    store = RunStore.open_existing(Path(run_dir))
    config = store.path(CONFIG)
    if not config.is_file():
        raise UserError("is not a localaug run directory (no config.yaml)", file=store.root)
    settings = load_settings(config)
    folder = pick_folder(store, iteration)
    if is_plugin(settings.student):
        raise UserError(f"the run's student is a plug-in ({settings.student}); export needs a model-card student",
                        file=config, field="student")
    student: Any = make_student(settings.student, settings.student_settings)
    recorded = store.manifest.get("models", {}).get("student")
    if recorded and _weights_identity(recorded) != _weights_identity(student.identity):
        raise UserError(f"the student's base weights changed since the run (run: {_weights_identity(recorded)}; "
                        f"now: {_weights_identity(student.identity)})", file=config, field="student")
    base_dir = Path(student.model_dir)
    source = base_dir / "localaug_source.json"  # written by student/weights.py for a GGUF student
    base_gguf = Path(json.loads(source.read_text())["gguf"]) if source.is_file() else None
    prov = _provenance(store, folder, settings)
    prov.update(student=settings.student, student_identity=student.identity,
                base_model={"kind": "gguf" if base_gguf else "hf", "file": (base_gguf or base_dir).name,
                            "sha256": base_sha256(base_dir, base_gguf)})
    return ExportSource(store.root, folder, store.path(f"{folder}/adapter"), base_dir, base_gguf,
                        student.identity, prov)
