"""Tasks: one module per kind of fusion problem, registered by name (see :mod:`fusiondiff.tasks.base`)."""

from fusiondiff.tasks import hdr, multifocus, restoration, unconditional  # noqa: F401  (registers them)
from fusiondiff.tasks.base import TASKS, Task, get_task, load_pipeline, model_conditioning, register_task, task_of

__all__ = ["TASKS", "Task", "get_task", "load_pipeline", "model_conditioning", "register_task", "task_of"]
