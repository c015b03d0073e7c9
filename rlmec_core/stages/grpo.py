"""The GRPO baseline of the comparison (issue 7): TRL's ``GRPOTrainer`` with an outcome reward.

The external anchor a user would otherwise pick: the same starting policy, the same problems as the RL
draw (``sample.draws.rl``), the same number of sampled solutions per problem (``sample.n``) with the
same temperature, top-p and length, and a reward of 1 for a correct final answer and 0 otherwise (the
task adapter's check). Everything else is TRL's GRPO (group-normalised advantages, clipped ratio).

Resumable: every ``checkpoint_every`` optimizer steps the trainer saves its full state (model as
safetensors, optimizer, scheduler, RNG, log history) under ``checkpoint_dir``; a rerun after a kill
resumes from the newest complete checkpoint, and a finished run deletes them.

In-training validation (config ``rl.validation`` and ``rl.select``, as every policy update of the
comparison): :class:`ValidationCallback` measures greedy validation accuracy of the starting weights and
every few optimizer steps, logs it, keeps the best weights beside the checkpoints (its state is saved with
each checkpoint, so a resumed run keeps the best so far) and the saved policy is the best evaluated one.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from rlmec_core.io import atomic_path, write_json_atomic
from rlmec_core.preflight import update_check_from_log
from rlmec_core.prompting import chat_messages
from rlmec_core.sampling import check_model_weights, load_tokenizer
from rlmec_core.stages.data import draw_problems, load_problems
from rlmec_core.stages.policy import write_model_dir
from rlmec_core.stages.rl import policy_validation
from rlmec_core.tasks import get_adapter
from rlmec_core.tracking import Trackers
from rlmec_core.tracking import from_env as tracking_from_env
from rlmec_core.train.loop import (BestSoFar, EvaluateFn, ValidationSettings, best_weights_dir, prune_best_weights,
                                   save_best_weights)

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


VALIDATION_STATE = "validation_state.json"


class ValidationCallback(TrainerCallback):
    """In-training validation of a ``transformers``/TRL trainer, as ``rlmec_core.train.loop.train`` does it.

    Evaluates ``evaluate_fn(model)`` (in eval mode, the global RNG restored after it) at step 0 when
    ``settings.at_start``, every ``settings.every_steps`` optimizer steps (``every_epochs`` converted by the
    caller) and at the last step; keeps the best weights in ``checkpoint_dir/best-step-<N>/``; stops the
    trainer after ``patience`` evaluations without improvement. On every trainer checkpoint it writes its
    state (best so far, evaluation records) to ``checkpoint_dir/validation_state.json``, so that a run
    resumed from checkpoint ``resumed_step`` restores it and drops best weights newer than that checkpoint.
    ``records`` holds one record per evaluation (step, epoch, the figures, ``best_<metric>``, ``best_step``).
    """

    def __init__(self, settings: ValidationSettings, evaluate_fn: EvaluateFn, checkpoint_dir: str | Path, *,
                 every_steps: int, resumed_step: int = 0, trackers: Trackers | None = None) -> None:
        self.settings, self.evaluate_fn, self.every = settings, evaluate_fn, max(1, int(every_steps))
        self.dir, self.trackers = Path(checkpoint_dir), trackers
        self.best, self.records = BestSoFar(), []
        state_file = self.dir / VALIDATION_STATE
        if resumed_step:
            if not state_file.is_file():
                raise RuntimeError(f"{self.dir}: resuming from step {resumed_step} without {VALIDATION_STATE} (the "
                                   f"run was started without validation?); delete {self.dir} to start over")
            state = json.loads(state_file.read_text())
            if state.get("step") != resumed_step:
                raise RuntimeError(f"{state_file}: written at step {state.get('step')}, the checkpoint resumed is "
                                   f"step {resumed_step}; delete {self.dir} to start over")
            self.best = BestSoFar(**state["best"])
            self.records = [r for r in state["records"] if r["step"] <= resumed_step]
            if self.best.best_step is not None and not (best_weights_dir(self.dir, self.best.best_step)
                                                        / "model.safetensors").exists():
                raise RuntimeError(f"{self.dir}: the best weights of step {self.best.best_step} are missing; "
                                   f"delete {self.dir} to start over")
        prune_best_weights(self.dir, self.best.best_step)  # best weights newer than the checkpoint are stale

    def _evaluate(self, model: torch.nn.Module, step: int, epoch: float, max_steps: int) -> None:
        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[]):
            figures = {k: float(v) for k, v in self.evaluate_fn(model).items()}
        model.train(was_training)
        if self.best.observe(self.settings, step, figures, "grpo"):
            save_best_weights(self.dir, step, model.state_dict())
        metric, best = self.settings.metric, self.best.best_metric(self.settings)
        record = {"step": step, "epoch": epoch, **figures, f"best_{metric}": best, "best_step": self.best.best_step}
        self.records.append(record)
        if self.trackers is not None:
            self.trackers.log(record, step)
        log.info("[grpo] step %d/%d: %s %.4f; best %.4f at step %s%s", step, max_steps, metric, figures[metric], best,
                 self.best.best_step, "; no improvement: stopping" if self.best.stopped else "")

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.settings.at_start and state.global_step == 0 and not self.records:
            self._evaluate(model, 0, 0.0, state.max_steps)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step % self.every == 0 or step >= state.max_steps:
            self._evaluate(model, step, float(state.epoch or 0.0), state.max_steps)
            if self.best.stopped:
                control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_json_atomic(self.dir / VALIDATION_STATE, {"step": state.global_step, "best": asdict(self.best),
                                                            "records": self.records})
            prune_best_weights(self.dir, self.best.best_step)

    def best_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The kept weights (``select: best``), or None: save the model as it is."""
        if self.settings.select != "best" or self.best.best_step is None:
            return None
        from safetensors.torch import load_file

        return load_file(str(best_weights_dir(self.dir, self.best.best_step) / "model.safetensors"))


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
    validation_cfg: Mapping[str, Any] | None = None,
    validation_path: str | Path | None = None,
) -> dict[str, Any]:
    """Train ``policy_dir`` with TRL's GRPO on the draw's problems; write an HF model directory.

    With ``chat_template`` (config ``task.chat_template``) each prompt is one user message, which TRL
    renders through the tokenizer's chat template as ``rlmec_core.prompting`` does. ``validation_cfg``:
    ``{"validation": rl.validation, "select": rl.select}`` on the problems of ``validation_path``
    (:class:`ValidationCallback`; None: no validation, the last weights)."""
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
    resumed_step = int(Path(resume).name.rsplit("-", 1)[1]) if resume else None
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
    callbacks: list[TrainerCallback] = [TrackerCallback(trackers)]
    card_validation = None
    validation = policy_validation(validation_cfg or {}, tokenizer, validation_path, adapter_name=adapter_name,
                                   prompt_template=prompt_template, chat_template=chat_template)
    if validation is not None:
        settings, evaluate_fn = validation
        steps_per_epoch = math.ceil(len(problems) / int(grpo_cfg["problems_per_step"]))
        every = settings.every_steps or max(1, round(settings.every_epochs * steps_per_epoch))
        callbacks.append(ValidationCallback(settings, evaluate_fn, checkpoint_dir, every_steps=every,
                                            resumed_step=resumed_step or 0, trackers=trackers))
        card_validation = {**asdict(settings), "every_steps": every, "data": str(validation_path)}
    trainer = GRPOTrainer(model=model, reward_funcs=[outcome_reward(adapter)], args=args, train_dataset=data,
                          processing_class=tokenizer, callbacks=callbacks)
    log.info("GRPO on %d problems x %d samples: %s", len(problems), n, dict(grpo_cfg))
    if resume:
        log.info("resuming GRPO from %s", resume)
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    finally:
        trackers.close()
    records = [{**r, "step": r.get("step", i + 1)} for i, r in enumerate(trainer.state.log_history)
               if "loss" in r or "reward" in r]
    validator = callbacks[-1] if isinstance(callbacks[-1], ValidationCallback) else None
    if validator is not None:  # the evaluations, each after the trainer's record of its step
        records = sorted([*records, *validator.records], key=lambda r: (r["step"], "val_accuracy" in r))
    Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(metrics_path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    card = {"stage": "grpo", "method": "grpo", "init_model": str(policy_dir), "problems": len(problems),
            "num_generations": n, "grpo": dict(grpo_cfg), "steps": trainer.state.global_step,
            "wall_seconds": time.monotonic() - t0, "train_runtime": result.metrics.get("train_runtime"),
            "tokens_seen": int(trainer.state.num_input_tokens_seen or 0) or None,
            "prompt_template": adapter.prompt_template, "chat_template": adapter.chat_template,
            "resumed_from_step": resumed_step}
    state_dict = None
    if validator is not None:
        best = validator.best
        state_dict = validator.best_state_dict()
        check = update_check_from_log(records, lr=float(grpo_cfg["lr"]), where=str(metrics_path))
        card.update(validation=card_validation, best_step=best.best_step, evaluations=best.evaluations,
                    best_metric=best.best_metric(validator.settings),
                    saved_step=best.best_step if state_dict is not None else card["steps"],
                    stopped_early=best.stopped, update_check=None if check is None else asdict(check))
        log.info("saved the weights of step %s: validation accuracy %.4f, the best of %d evaluations",
                 card["saved_step"], card["best_metric"], best.evaluations)
        if check is not None and check.status != "green":
            log.warning("%s", check.message)
    write_model_dir(out_dir, trainer.model, tokenizer, card, state_dict)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info("GRPO policy saved to %s: %d steps, %.0f s", out_dir, card["steps"], card["wall_seconds"])
    return card
