"""Tasks: a YAML card (data files, fields, labels, prompts) read into a `Task`; the task kinds behind it."""

from .task import Example, Judged, Task, builtin_task_names, load_task

__all__ = ["Example", "Judged", "Task", "builtin_task_names", "load_task"]
