"""Which student of a run is exported, where its weights come from, and what the run says about it.

Everything here reads the run directory through the store's public API (`RunStore.open_existing`,
`stage_done`, `summary`, `path`, the typed manifest) and its names in layout.py, and resolves the student
exactly as `localaug run` did: the run's saved config names the model card and its overrides, and
`load_student` finds the same base weights (the card's GGUF, converted once, or a Hugging Face folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import layout
from ..errors import UserError
from ..files import base_sha256
from ..layout import Folder
from ..store import RunStore


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


def _trained(store: RunStore, folder: Folder) -> bool:
    return store.stage_done(folder.key(layout.TRAIN)) and \
        (store.path(folder.adapter) / "adapter_config.json").is_file()


def pick_folder(store: RunStore, iteration: int | None) -> Folder:
    """The round of --iteration, else `final/` when the run trained a final student, else the last round
    with a trained student."""
    if iteration is not None:
        folder = layout.round_folder(iteration)
        if not _trained(store, folder):
            raise UserError(f"iteration {iteration} has no trained student ({folder.adapter})", file=store.root)
        return folder
    if store.manifest.final is not None and _trained(store, layout.FINAL):
        return layout.FINAL
    # The folders themselves, not the iteration rows: a run stopped after a training stage has no row yet.
    done = sorted(int(p.name[5:]) for p in store.root.glob("iter_*")
                  if p.name[5:].isdigit() and _trained(store, layout.round_folder(int(p.name[5:]))))
    if not done:
        raise UserError("holds no finished student yet (no trained adapter); run it to the end of a training "
                        "stage first", file=store.root)
    return layout.round_folder(done[-1])


def _weights_identity(identity: str) -> str:
    """'gemma3-270m gguf-sha256:abc [cpu/bf16/lora] eval:llama.cpp' -> 'gemma3-270m gguf-sha256:abc'."""
    return identity.split(" [", 1)[0]


def _prompt(settings: Any) -> dict[str, Any] | None:
    """How the student was asked (the task card's student templates): a user must prompt it the same way."""
    from ..task import load_task

    try:
        student = load_task(settings.task, settings.data_dir).card.student
    except UserError:  # the card moved since the run: the export does not need it
        return None
    return {"prompt": student.prompt, "answer": student.answer, "stop": list(student.stop)}


def _provenance(store: RunStore, folder: Folder, settings: Any) -> dict[str, Any]:
    m = store.manifest
    rows = m.rows()
    if folder == layout.FINAL:
        final_acc, iteration = (m.final.test_accuracy if m.final else None), "final"
    else:
        key = folder.key(layout.eval_stage("test"))
        final_acc = getattr(store.summary(key), "accuracy", None) if store.stage_done(key) else None
        iteration = folder.iteration
    train = store.read_jsonl(folder.train_data) if store.path(folder.train_data).exists() else []
    prepare = store.summary(layout.PREPARE) if store.stage_done(layout.PREPARE) else None
    return {
        "run": store.root.name,
        "run_dir": str(store.root.resolve()),
        "task": settings.task,
        "seed_size": getattr(prepare, "seed_size", None),
        "test_size": getattr(prepare, "test_size", None),
        "plain_accuracy": rows[0].test_accuracy if rows and rows[0].iteration == 0 else None,
        "final_accuracy": final_acc,
        "iteration": iteration,
        "train_size": len(train),
        "teacher": m.models.get("teacher"),
        "teacher_examples_added": sum(1 for r in train if (r.get("meta") or {}).get("origin") != "seed"),
        "recipe": settings.recipe,
        "eval_backend": getattr(settings, "eval_backend", "transformers"),
        "prompt": _prompt(settings),
    }


def find_student(run_dir: Path, iteration: int | None = None) -> ExportSource:
    """The student to export from `run_dir`: resolved, checked against what the run recorded."""
    from ..backends import make_student
    from ..config import load_settings
    from ..plugins import looks_like_code, resolve

    store = RunStore.open_existing(Path(run_dir))
    config = store.path(layout.CONFIG)
    if not config.is_file():
        raise UserError("is not a localaug run directory (no config.yaml)", file=store.root)
    settings = load_settings(config)
    folder = pick_folder(store, iteration)
    if looks_like_code(settings.student) or not resolve("student", settings.student, source=config).is_card:
        raise UserError(f"the run's student '{settings.student}' is not a model card; export needs a model-card "
                        "student (localaug cannot know a plug-in's weights)", file=config, field="student")
    student: Any = make_student(settings.student, settings.student_settings)
    recorded = store.manifest.models.get("student")
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
    return ExportSource(store.root, folder.path, store.path(folder.adapter), base_dir, base_gguf,
                        student.identity, prov)
