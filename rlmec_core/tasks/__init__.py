"""Task adapters behind one interface (``TaskAdapter``), looked up by name."""

from __future__ import annotations

import importlib

from rlmec_core.tasks.base import DEFAULT_PROMPT_TEMPLATE, Judgement, Problem, TaskAdapter

# name -> "module:Class"; imported lazily so that a task's dependencies load only when it is used.
_ADAPTERS: dict[str, str] = {
    "arith": "rlmec_core.tasks.arith:ArithTask",
    "gsm8k": "rlmec_core.tasks.gsm8k:GSM8KTask",
    "svamp": "rlmec_core.tasks.svamp:SVAMPTask",
    "mcqa": "rlmec_core.tasks.mcqa:MCQATask",
    "math": "rlmec_core.tasks.math:MATHTask",
    "mmlu": "rlmec_core.tasks.mmlu:MMLUTask",
}

ADAPTER_NAMES: tuple[str, ...] = tuple(_ADAPTERS)


def get_adapter(name: str, prompt_template: str | None = None, chat_template: bool = False) -> TaskAdapter:
    """Instantiate the adapter called ``name`` (one of ``ADAPTER_NAMES``); ``chat_template``: prompts go
    through the tokenizer's chat template (config ``task.chat_template``)."""
    try:
        target = _ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown task adapter {name!r}; known: {', '.join(ADAPTER_NAMES)}") from None
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(prompt_template=prompt_template, chat_template=chat_template)


__all__ = ["ADAPTER_NAMES", "DEFAULT_PROMPT_TEMPLATE", "Judgement", "Problem", "TaskAdapter", "get_adapter"]
