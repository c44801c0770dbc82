"""Prompt datasets: built-in tasks, local files and folders, Hugging Face Hub datasets, Geometry3K."""

from align.data.loading import (
    BUILTIN_TASK_MODULES,
    BUILTIN_TASKS,
    DatasetSourceError,
    arith_task,
    builtin_tasks,
    load_prompt_dataset,
    register_task,
    to_chat_prompt,
)

__all__ = [
    "BUILTIN_TASKS",
    "BUILTIN_TASK_MODULES",
    "DatasetSourceError",
    "arith_task",
    "builtin_tasks",
    "load_prompt_dataset",
    "register_task",
    "to_chat_prompt",
]
