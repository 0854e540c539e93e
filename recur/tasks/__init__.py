"""Tasks by name: data generators with their metric, one file each.

Every module in this package is imported here, so a new task file registers itself.
`build_task("parity")` gives a task; `task.sample(n, generator, split)` draws a batch
and `task.metrics(logits, labels)` scores a model's outputs on it.
"""

import importlib
import pkgutil

from .base import IGNORE, TASKS, Batch, Task, TaskConfig, build_task, get_task, register_task

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["IGNORE", "TASKS", "Batch", "Task", "TaskConfig", "build_task", "get_task", "register_task"]
