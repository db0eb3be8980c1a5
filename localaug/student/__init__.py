"""The student: a local causal LM fine-tuned with LoRA (CPU) or QLoRA (CUDA), from the base weights each call."""

from .hf import HFStudent, load_student
from .plan import StudentPlan, model_load_kwargs, resolve_plan

__all__ = ["HFStudent", "StudentPlan", "load_student", "model_load_kwargs", "resolve_plan"]
