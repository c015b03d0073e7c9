"""The GRPO baseline of the comparison (issue 7): TRL's ``GRPOTrainer`` with an outcome reward.

The external anchor a user would otherwise pick: the same starting policy, the same problems as the RL
draw (``sample.draws.rl``), the same number of sampled solutions per problem (``sample.n``) with the
same temperature, top-p and length, and a reward of 1 for a correct final answer and 0 otherwise (the
task adapter's check). Everything else is TRL's GRPO (group-normalised advantages, clipped ratio).

Resumable: every ``checkpoint_every`` optimizer steps the trainer saves its full state (model as
safetensors, optimizer, scheduler, RNG, log history) under ``checkpoint_dir``; a rerun after a kill
resumes from the newest complete checkpoint, and a finished run deletes them.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from rlmec_core.io import atomic_path
from rlmec_core.prompting import chat_messages
from rlmec_core.sampling import check_model_weights, load_tokenizer
from rlmec_core.stages.data import draw_problems, load_problems
from rlmec_core.stages.policy import write_model_dir
from rlmec_core.tasks import get_adapter
from rlmec_core.tracking import Trackers
from rlmec_core.tracking import from_env as tracking_from_env

log = logging.getLogger(__name__)


def outcome_reward(adapter):
    """A TRL reward function: 1.0 when a completion's answer matches the row's ``answer``, else 0.0."""

    def text(c: Any) -> str:  # conversational prompts give the completion as a list of messages
        return c if isinstance(c, str) else "".join(m.get("content", "") for m in c)

    def reward(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
        return [1.0 if adapter.judge(text(c), a).correct else 0.0 for c, a in zip(completions, answer, strict=True)]

    reward.__name__ = "outcome"
    return reward


def last_complete_checkpoint(checkpoint_dir: str | Path) -> str | None:
    """The newest ``checkpoint-<step>`` under ``checkpoint_dir`` that the trainer finished writing (its
    ``trainer_state.json`` is written last), or None. Half-written ones newer than it (a kill during the
    save) are removed."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    found = sorted((int(p.name.split("-", 1)[1]), p) for p in root.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-", 1)[1].isdigit())
    complete = [(step, p) for step, p in found if (p / "trainer_state.json").is_file()]
    newest = complete[-1][0] if complete else -1
    for step, p in found:
        if step > newest:
            log.warning("removing %s: written only in part (the job was killed while saving it)", p)
            shutil.rmtree(p, ignore_errors=True)
    return str(complete[-1][1]) if complete else None


class TrackerCallback(TrainerCallback):
    """Sends each of the trainer's log records to the stage's trackers (``rlmec_core.tracking``) at its
    global step, on the main process."""

    def __init__(self, trackers: Trackers) -> None:
        self.trackers = trackers

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            self.trackers.log(logs, state.global_step)


def grpo_update(
    problems_path: str | Path,
    policy_dir: str | Path,
    out_dir: str | Path,
    *,
    adapter_name: str,
    prompt_template: str | None,
    draw: Mapping[str, int],
    sample_cfg: Mapping[str, Any],
    grpo_cfg: Mapping[str, Any],
    seed: int,
    checkpoint_dir: str | Path,
    metrics_path: str | Path,
    trust_remote_code: bool = False,
    chat_template: bool = False,
) -> dict[str, Any]:
    """Train ``policy_dir`` with TRL's GRPO on the draw's problems; write an HF model directory.

    With ``chat_template`` (config ``task.chat_template``) each prompt is one user message, which TRL
    renders through the tokenizer's chat template as ``rlmec_core.prompting`` does."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    t0 = time.monotonic()
    adapter = get_adapter(adapter_name, prompt_template, chat_template)
    problems = draw_problems(load_problems(problems_path), draw["first"], draw["problems"], problems_path)
    prompts = [adapter.format_prompt(p.question) for p in problems]
    data = Dataset.from_list([{"prompt": chat_messages(x) if chat_template else x, "answer": p.answer}
                              for x, p in zip(prompts, problems, strict=True)])
    check_model_weights(policy_dir)
    tokenizer = load_tokenizer(policy_dir, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(str(policy_dir), trust_remote_code=trust_remote_code,
                                                 use_safetensors=True, dtype=torch.float32)
    n = int(sample_cfg["n"])
    cuda = torch.cuda.is_available()
    every = int(grpo_cfg.get("checkpoint_every", 0))
    checkpoint_dir = Path(checkpoint_dir)
    resume = last_complete_checkpoint(checkpoint_dir)
    args = GRPOConfig(
        output_dir=str(checkpoint_dir),
        num_generations=n,
        per_device_train_batch_size=n * int(grpo_cfg["problems_per_step"]),
        max_completion_length=int(sample_cfg["max_new_tokens"]),
        temperature=float(sample_cfg["temperature"]),
        top_p=float(sample_cfg["top_p"]),
        learning_rate=float(grpo_cfg["lr"]),
        num_train_epochs=float(grpo_cfg["epochs"]),
        beta=float(grpo_cfg["beta"]),
        lr_scheduler_type="cosine",
        logging_steps=int(grpo_cfg["log_every"]),
        save_strategy="steps" if every > 0 else "no",
        save_steps=max(every, 1),
        save_total_limit=1,
        report_to="none",
        seed=seed,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        disable_tqdm=False,
    )
    trackers = Trackers(tracking_from_env())  # TRL's own reporting stays off: the same trackers as every stage
    trainer = GRPOTrainer(model=model, reward_funcs=[outcome_reward(adapter)], args=args, train_dataset=data,
                          processing_class=tokenizer, callbacks=[TrackerCallback(trackers)])
    log.info("GRPO on %d problems x %d samples: %s", len(problems), n, dict(grpo_cfg))
    if resume:
        log.info("resuming GRPO from %s", resume)
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    finally:
        trackers.close()
    records = [{**r, "step": r.get("step", i + 1)} for i, r in enumerate(trainer.state.log_history)
               if "loss" in r or "reward" in r]
    Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(metrics_path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    card = {"stage": "grpo", "method": "grpo", "init_model": str(policy_dir), "problems": len(problems),
            "num_generations": n, "grpo": dict(grpo_cfg), "steps": trainer.state.global_step,
            "wall_seconds": time.monotonic() - t0, "train_runtime": result.metrics.get("train_runtime"),
            "tokens_seen": int(trainer.state.num_input_tokens_seen or 0) or None,
            "prompt_template": adapter.prompt_template, "chat_template": adapter.chat_template,
            "resumed_from_step": int(Path(resume).name.rsplit("-", 1)[1]) if resume else None}
    write_model_dir(out_dir, trainer.model, tokenizer, card)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info("GRPO policy saved to %s: %d steps, %.0f s", out_dir, card["steps"], card["wall_seconds"])
    return card
