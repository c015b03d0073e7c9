"""A small, resumable training loop over `accelerate`, shared by every training stage.

The loop owns what all stages have in common (seeded per-epoch order, gradient accumulation, clipping,
cosine schedule with warm-up, mixed precision, checkpoints, a JSONL of per-step metrics, a progress
bar); a stage supplies only ``loss_fn(model, batch) -> (loss, stats)``.

Checkpoints are written under ``checkpoint_dir`` (outside the stage's declared output) every
``checkpoint_every`` optimizer steps, atomically, keeping the newest ``keep_checkpoints``. A rerun with
the same arguments resumes from the newest one: same batch order, no step repeated or skipped.

With ``validation`` and an ``evaluate_fn``, the loop also measures the model on held-out data every
``validation.every_epochs`` epochs (or ``every_steps`` optimizer steps) and at the end, and with
``at_start`` the starting weights too (a record at step 0); it logs the figures with that step's record,
keeps the best weights seen so far (``checkpoint_dir/best-step-<N>/``; the starting weights when no
update beat them), stops after ``patience`` evaluations without improvement, and hands the best (or the
last) weights to ``save_fn``. A checkpoint follows every evaluation, so a resumed run knows the
best-so-far, its weights and the patience count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from rlmec_core.tracking import Trackers, TrackingSettings
from rlmec_core.tracking import from_env as tracking_from_env

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]
CollateFn = Callable[[list[Any]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings (config ``<stage>.train``)."""

    epochs: float = 1.0
    lr: float = 1e-3
    batch_size: int = 32  # per optimizer step = batch_size * grad_accum * processes
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    schedule: str = "cosine"  # any name transformers.get_scheduler knows: cosine, linear, constant_with_warmup
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"  # auto (bf16 on a bf16-capable GPU, else fp32) | no | bf16 | fp16
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = 100  # optimizer steps; 0 disables mid-run checkpoints
    keep_checkpoints: int = 1
    log_every: int = 10
    loss_normalization: str = "token"  # SFT losses: "token" (mean over target tokens) or "example"
    # Take the optimizer steps that `epochs` over this many examples would take, whatever the dataset's size
    # (cycling it): sft_gold trains as many steps as the RL update it is compared with. None: the dataset's size.
    schedule_examples: int | None = None

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.lr <= 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError(f"epochs, lr, batch_size and grad_accum must be positive: {self}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.schedule_examples is not None and self.schedule_examples < 1:
            raise ValueError(f"schedule_examples must be >= 1 or None, got {self.schedule_examples}")


@dataclass(frozen=True)
class ValidationSettings:
    """In-training validation (config ``<stage>.validation``): when to evaluate, when to stop, what to keep."""

    every_epochs: float = 1.0  # evaluate every this many epochs (rounded to optimizer steps) and at the end
    patience: int | None = None  # stop after this many evaluations in a row without improvement; None: full schedule
    min_delta: float = 0.0  # an improvement (for patience) exceeds the last improvement by more than this
    select: str = "best"  # "best": the output is the best evaluated weights; "last": the final weights
    metric: str = "val_accuracy"  # the key of evaluate_fn's result that is optimised
    every_steps: int | None = None  # optimizer steps between evaluations; set, it replaces every_epochs
    at_start: bool = False  # also evaluate the starting weights (step 0): a candidate for "best" like any other
    mode: str = "max"  # "max": a higher metric is better (accuracy); "min": a lower one is (a held-out loss)

    def __post_init__(self) -> None:
        if self.every_epochs <= 0:
            raise ValueError(f"every_epochs must be positive, got {self.every_epochs}")
        if self.every_steps is not None and self.every_steps < 1:
            raise ValueError(f"every_steps must be >= 1 or null, got {self.every_steps}")
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")

    @property
    def sign(self) -> float:
        """+1 for a metric to maximise, -1 for one to minimise (``BestSoFar`` maximises ``sign * metric``)."""
        return -1.0 if self.mode == "min" else 1.0
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or null, got {self.patience}")
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta}")
        if self.select not in ("best", "last"):
            raise ValueError(f"select must be 'best' or 'last', got {self.select!r}")


EvaluateFn = Callable[[torch.nn.Module], dict[str, float]]


@dataclass(frozen=True)
class TrainResult:
    steps: int
    resumed_from_step: int
    examples_seen: int
    tokens_seen: int
    wall_seconds: float
    final_loss: float
    # in-training validation (None / 0 / False without it)
    best_step: int | None = None  # the evaluated step with the highest metric
    best_metric: float | None = None
    saved_step: int | None = None  # the step whose weights save_fn received (best_step with select "best")
    evaluations: int = 0
    stopped_early: bool = False  # patience ran out before the schedule's last step


@dataclass
class BestSoFar:
    """What the loop remembers of its evaluations (saved in every checkpoint's trainer_state.json).

    The kept weights are those of the highest value, the later evaluation on a tie (on a flat stretch the
    better-trained weights). Patience counts evaluations since the last *real* improvement: a value above
    the previous real improvement by more than ``min_delta``.
    """

    best_step: int | None = None
    best_value: float | None = None
    improved_value: float | None = None  # the value of the last real improvement
    evals_without_improvement: int = 0
    evaluations: int = 0
    stopped: bool = False

    def update(self, step: int, value: float, min_delta: float) -> bool:
        """Record an evaluation (``value``: higher is better; the loop negates a metric it minimises); True
        when its weights become the kept ones."""
        self.evaluations += 1
        if self.improved_value is None or value > self.improved_value + min_delta:
            self.improved_value, self.evals_without_improvement = value, 0
        else:
            self.evals_without_improvement += 1
        if self.best_value is None or value >= self.best_value:
            self.best_step, self.best_value = step, value
            return True
        return False

    def observe(self, settings: ValidationSettings, step: int, figures: dict[str, float], where: str) -> bool:
        """Record ``figures`` of the evaluation at ``step`` under ``settings`` (its metric, direction,
        ``min_delta`` and ``patience``: ``stopped`` is set when patience runs out); True when the evaluated
        weights are to be kept as the best (an improvement with ``select: best``). ``KeyError`` naming
        ``where`` when ``figures`` lacks the metric."""
        if settings.metric not in figures:
            raise KeyError(f"{where}: evaluate_fn returned {sorted(figures)}, not the metric {settings.metric!r}")
        improved = self.update(step, settings.sign * figures[settings.metric], settings.min_delta)
        if settings.patience is not None and self.evals_without_improvement >= settings.patience:
            self.stopped = True
        return improved and settings.select == "best"

    def best_metric(self, settings: ValidationSettings) -> float | None:
        """The best value of ``settings.metric`` as measured (not negated), or None before any evaluation."""
        return None if self.best_value is None else settings.sign * self.best_value


def best_weights_dir(checkpoint_dir: Path, step: int) -> Path:
    return checkpoint_dir / f"best-step-{step}"


def save_best_weights(checkpoint_dir: Path, step: int, state_dict: dict[str, torch.Tensor]) -> None:
    """Write the best weights atomically (safetensors; tied tensors are stored as separate copies)."""
    from safetensors.torch import save_file

    tmp = checkpoint_dir / f".tmp-best-step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().to("cpu").clone().contiguous() for k, v in state_dict.items()}, str(tmp / "model.safetensors"))
    final = best_weights_dir(checkpoint_dir, step)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def prune_best_weights(checkpoint_dir: Path, keep_step: int | None) -> None:
    """Remove every best-weights directory but ``keep_step``'s (stale ones of a run killed before its checkpoint)."""
    for d in checkpoint_dir.glob("best-step-*"):
        if keep_step is None or d.name != best_weights_dir(checkpoint_dir, keep_step).name:
            shutil.rmtree(d, ignore_errors=True)


def resolve_mixed_precision(choice: str) -> str:
    """'auto' -> 'bf16' on a CUDA device that supports it, else 'no'."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


@dataclass(frozen=True)
class _Group:
    size: int  # micro-batches whose gradients this optimizer step accumulates
    is_last: bool  # this micro-batch closes the group (optimizer step after it)


def _accumulation_group(micro: int, total_micro: int, per_epoch: int, accum: int) -> _Group:
    """Where micro-batch number ``micro`` (0-based, global) falls in its accumulation group.

    Groups of ``accum`` micro-batches never straddle an epoch boundary or the end of training; the
    last group of an epoch may be shorter (its loss is scaled by its own size).
    """
    epoch, idx = divmod(micro, per_epoch)
    epoch_len = min(per_epoch, total_micro - epoch * per_epoch)
    group_start = (idx // accum) * accum
    size = min(accum, epoch_len - group_start)
    return _Group(size=size, is_last=idx == group_start + size - 1)


def count_optimizer_steps(total_micro: int, per_epoch: int, accum: int) -> int:
    """Optimizer steps for ``total_micro`` micro-batches, grouped as ``_accumulation_group`` does."""
    full, rest = divmod(total_micro, per_epoch)
    return full * math.ceil(per_epoch / accum) + math.ceil(rest / accum)


def planned_micro_batches(settings: TrainSettings, dataset_size: int, processes: int = 1) -> tuple[int, int, int]:
    """``(batches_per_epoch, total_micro, total_steps)`` of a run over ``dataset_size`` examples.

    The optimizer steps are those of ``settings.epochs`` over ``settings.schedule_examples`` examples when it
    is set (else over the dataset); the micro-batches are then the most over the real dataset (cycled in
    epochs) that make exactly that many optimizer steps under ``_accumulation_group``'s grouping (the last
    accumulation group full).
    """
    per_step = settings.batch_size * processes
    per_epoch = math.ceil(dataset_size / per_step)
    scheduled = settings.schedule_examples or dataset_size
    sched_per_epoch = math.ceil(scheduled / per_step)
    total_steps = count_optimizer_steps(math.ceil(settings.epochs * sched_per_epoch), sched_per_epoch,
                                        settings.grad_accum)
    if settings.schedule_examples is None:
        return per_epoch, math.ceil(settings.epochs * per_epoch), total_steps
    steps_per_epoch = math.ceil(per_epoch / settings.grad_accum)
    full, rest = divmod(total_steps, steps_per_epoch)
    return per_epoch, full * per_epoch + rest * settings.grad_accum, total_steps


def _records_up_to(path: Path, step: int) -> list[str]:
    """JSONL lines of ``path`` logged at or before ``step`` (a resumed run re-logs the later ones)."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError):
            break  # a line cut short by the crash: it and anything after it are dropped
    return kept


def _latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    if not checkpoint_dir.is_dir():
        return None
    ckpts = [p for p in checkpoint_dir.glob("step-*") if (p / "trainer_state.json").exists()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[1]), default=None)


def train(
    model: torch.nn.Module,
    dataset: Sequence[Any],
    collate_fn: CollateFn,
    loss_fn: LossFn,
    settings: TrainSettings,
    *,
    checkpoint_dir: str | os.PathLike[str],
    metrics_path: str | os.PathLike[str] | None = None,
    count_tokens: Callable[[dict[str, torch.Tensor]], int] | None = None,
    description: str = "train",
    save_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor], TrainResult], None] | None = None,
    validation: ValidationSettings | None = None,
    evaluate_fn: EvaluateFn | None = None,
    tracking: TrackingSettings | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``dataset``; resume from ``checkpoint_dir`` when it holds a checkpoint.

    ``count_tokens(batch)`` (default: sum of ``attention_mask``) feeds the tokens/s figures.
    ``save_fn(unwrapped_model, full_state_dict, result)`` runs once on the main process after training (the
    state dict is gathered across processes, so it also works under DeepSpeed ZeRO-3 / FSDP). With
    ``validation.select == "best"`` the state dict is the best evaluated one, not the model's final weights.
    Returns when ``ceil(epochs * batches_per_epoch / grad_accum)`` optimizer steps are done, or earlier when
    ``validation.patience`` evaluations in a row did not improve ``validation.metric``.

    ``evaluate_fn(unwrapped_model) -> {metric: value, ...}`` runs on every process with the model in eval
    mode (the global RNG state is restored after it, so evaluating does not change the training run).

    ``tracking`` (``rlmec_core.tracking``; default: what the stage script published in the environment): the
    main process also sends every record of the JSONL log, at its optimizer step, to the configured trackers
    (TensorBoard, W&B, MLflow), with ``settings`` as the run's configuration.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    if len(dataset) == 0:
        raise ValueError(f"{description}: the training set is empty")
    if (validation is None) != (evaluate_fn is None):
        raise ValueError(f"{description}: validation settings and evaluate_fn go together")
    checkpoint_dir = Path(checkpoint_dir)
    # cpu=True without CUDA: accelerate then joins a torchrun/`accelerate launch` group over gloo (MULTI_CPU)
    accelerator = Accelerator(mixed_precision=resolve_mixed_precision(settings.mixed_precision),
                              cpu=not torch.cuda.is_available())
    if settings.grad_accum > 1 and accelerator.distributed_type.name == "DEEPSPEED":
        # DeepSpeed steps inside backward() on its own accumulation counter; this loop accumulates itself
        raise ValueError(f"{description}: grad_accum={settings.grad_accum} is not supported under DeepSpeed; "
                         "set grad_accum 1 and raise batch_size or the number of processes instead")
    set_seed(settings.seed)
    if settings.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable()
        if hasattr(model, "config"):
            model.config.use_cache = False
    count_tokens = count_tokens or (lambda b: int(b["attention_mask"].sum()))

    batches_per_epoch, total_micro, total_steps = planned_micro_batches(settings, len(dataset), accelerator.num_processes)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
        betas=settings.adam_betas,
    )
    scheduler = get_scheduler(
        settings.schedule,
        optimizer,
        num_warmup_steps=int(round(settings.warmup_ratio * total_steps)),
        num_training_steps=total_steps,
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    eval_every = None
    if validation is not None and validation.every_steps is not None:
        eval_every = validation.every_steps
    elif validation is not None:  # optimizer steps between evaluations (one full epoch has this many steps)
        eval_every = max(1, round(validation.every_epochs * count_optimizer_steps(batches_per_epoch, batches_per_epoch,
                                                                                   settings.grad_accum)))
    best = BestSoFar()

    step, micro_done, examples_seen, tokens_seen, elapsed_before = 0, 0, 0, 0, 0.0
    resumed_from = 0
    latest = _latest_checkpoint(checkpoint_dir)
    if latest is not None:
        accelerator.load_state(str(latest))
        state = json.loads((latest / "trainer_state.json").read_text())
        if state.get("total_steps") != total_steps or state.get("dataset_size") != len(dataset):
            raise RuntimeError(
                f"{latest}: checkpoint was made for {state.get('dataset_size')} examples / "
                f"{state.get('total_steps')} steps, this run has {len(dataset)} / {total_steps}; "
                f"delete {checkpoint_dir} to start over"
            )
        step, micro_done = state["step"], state["micro_batches"]
        examples_seen, tokens_seen = state["examples_seen"], state["tokens_seen"]
        elapsed_before = state.get("wall_seconds", 0.0)
        resumed_from = step
        if validation is not None:
            best = BestSoFar(**state.get("validation", {}))
            if best.best_step is not None and not (best_weights_dir(checkpoint_dir, best.best_step) / "model.safetensors").exists():
                raise RuntimeError(f"{latest}: the best weights of step {best.best_step} are missing from "
                                   f"{checkpoint_dir}; delete {checkpoint_dir} to start over")
    if validation is not None and accelerator.is_main_process:  # best weights newer than the checkpoint are stale
        prune_best_weights(checkpoint_dir, best.best_step)
        accelerator.print(f"[{description}] resuming from {latest} (step {step}/{total_steps})")

    metrics_file = None
    if metrics_path is not None and accelerator.is_main_process:
        metrics_path = Path(metrics_path)
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        kept = _records_up_to(metrics_path, resumed_from) if resumed_from else []
        metrics_file = open(metrics_path, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        metrics_file.writelines(kept)

    tracking = tracking if tracking is not None else tracking_from_env()
    trackers = Trackers(dataclasses.replace(tracking, config={**tracking.config, **asdict(settings)})
                        if tracking is not None and accelerator.is_main_process else None)

    def save_checkpoint() -> None:
        tmp = checkpoint_dir / f".tmp-step-{step}"
        final = checkpoint_dir / f"step-{step}"
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        if accelerator.is_main_process:
            (tmp / "trainer_state.json").write_text(
                json.dumps(
                    {
                        "step": step,
                        "micro_batches": micro_done,
                        "examples_seen": examples_seen,
                        "tokens_seen": tokens_seen,
                        "total_steps": total_steps,
                        "dataset_size": len(dataset),
                        "wall_seconds": elapsed_before + time.monotonic() - t0,
                        "settings": asdict(settings),
                        "validation": asdict(best),
                    }
                )
            )
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            old = sorted(checkpoint_dir.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
            for p in old[: -settings.keep_checkpoints]:
                shutil.rmtree(p, ignore_errors=True)
            if validation is not None:  # the checkpoint names the best step: older best weights can go
                prune_best_weights(checkpoint_dir, best.best_step)
        accelerator.wait_for_everyone()

    def run_validation() -> dict[str, float]:
        """Evaluate, remember the best (and its weights), and say so in the log."""
        unwrapped = accelerator.unwrap_model(model)
        was_training = unwrapped.training
        unwrapped.eval()
        with torch.random.fork_rng(devices=[]):
            figures = {k: float(v) for k, v in evaluate_fn(unwrapped).items()}
        unwrapped.train(was_training)
        if best.observe(validation, step, figures, description):
            state_dict = accelerator.get_state_dict(model)
            if accelerator.is_main_process:
                save_best_weights(checkpoint_dir, step, state_dict)
            accelerator.wait_for_everyone()
        best_value = best.best_metric(validation)
        accelerator.print(
            f"[{description}] step {step}/{total_steps} (epoch {micro_done / batches_per_epoch:.2f}): "
            f"{validation.metric} {figures[validation.metric]:.4f}; best {best_value:.4f} at step {best.best_step}"
            + ("; no improvement for %d evaluations: stopping" % best.evals_without_improvement if best.stopped else ""))
        return {**figures, f"best_{validation.metric}": best_value, "best_step": best.best_step}

    model.train()
    t0 = time.monotonic()
    last_loss = float("nan")
    window: dict[str, float] = {}
    window_n = 0
    bar = tqdm(total=total_steps, initial=step, desc=description, disable=not accelerator.is_main_process,
               mininterval=5.0, dynamic_ncols=True)
    if validation is not None and validation.at_start and step == 0:  # the starting weights: step 0
        record = {"step": 0, "epoch": 0.0, "lr": scheduler.get_last_lr()[0], "examples_seen": 0, "tokens_seen": 0,
                  "wall_seconds": elapsed_before + time.monotonic() - t0, **run_validation()}
        if metrics_file is not None:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
        trackers.log(record, 0)
    while micro_done < total_micro and not best.stopped:
        epoch, offset = divmod(micro_done, batches_per_epoch)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(settings.seed + epoch))
        loader = DataLoader(Subset(dataset, order.tolist()), batch_size=settings.batch_size,
                            shuffle=False, collate_fn=collate_fn)
        loader = accelerator.prepare_data_loader(loader)
        if offset:
            loader = accelerator.skip_first_batches(loader, offset)
        for batch in loader:
            if micro_done >= total_micro:
                break
            group = _accumulation_group(micro_done, total_micro, batches_per_epoch, settings.grad_accum)
            sync = group.is_last
            ctx = contextlib.nullcontext() if sync else accelerator.no_sync(model)
            with ctx:
                loss, stats = loss_fn(model, batch)
                accelerator.backward(loss / group.size)
            grad_norm = None
            if sync:
                if settings.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            micro_done += 1
            n_examples = int(next(iter(batch.values())).shape[0]) * accelerator.num_processes
            examples_seen += n_examples
            tokens_seen += count_tokens(batch) * accelerator.num_processes
            last_loss = float(loss.detach())
            for k, v in {"loss": last_loss, **stats}.items():
                window[k] = window.get(k, 0.0) + float(v)
            window_n += 1
            if not sync:
                continue
            step += 1
            bar.update(1)
            evaluated = None
            if eval_every is not None and (step % eval_every == 0 or step == total_steps):
                evaluated = run_validation()
            if step % settings.log_every == 0 or step == total_steps or evaluated is not None:
                elapsed = elapsed_before + time.monotonic() - t0
                record = {k: v / window_n for k, v in window.items()}
                if accelerator.num_processes > 1:  # the mean over processes (= the global batch's loss, see dist.py)
                    keys = sorted(record)
                    values = torch.tensor([record[k] for k in keys], dtype=torch.float64, device=accelerator.device)
                    record = dict(zip(keys, accelerator.reduce(values, reduction="mean").tolist(), strict=True))
                record.update(
                    step=step,
                    epoch=micro_done / batches_per_epoch,
                    lr=scheduler.get_last_lr()[0],
                    grad_norm=float(grad_norm) if grad_norm is not None else None,
                    examples_seen=examples_seen,
                    tokens_seen=tokens_seen,
                    tokens_per_s=tokens_seen / max(elapsed, 1e-9),
                    wall_seconds=elapsed,
                )
                if evaluated is not None:
                    record.update(evaluated)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                if metrics_file is not None:
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                trackers.log(record, step)
                window, window_n = {}, 0
            if step < total_steps and not best.stopped and (
                    evaluated is not None or (settings.checkpoint_every and step % settings.checkpoint_every == 0)):
                save_checkpoint()
            if best.stopped:
                break
    bar.close()
    trackers.close()
    if metrics_file is not None:
        metrics_file.close()
    accelerator.wait_for_everyone()
    use_best = validation is not None and validation.select == "best" and best.best_step is not None
    result = TrainResult(
        steps=step,
        resumed_from_step=resumed_from,
        examples_seen=examples_seen,
        tokens_seen=tokens_seen,
        wall_seconds=elapsed_before + time.monotonic() - t0,
        final_loss=last_loss,
        best_step=best.best_step,
        best_metric=best.best_metric(validation) if validation is not None else None,
        saved_step=best.best_step if use_best else step,
        evaluations=best.evaluations,
        stopped_early=best.stopped,
    )
    if save_fn is not None:
        if use_best:  # read by the process that saves (the others pass nothing)
            from safetensors.torch import load_file

            best_file = best_weights_dir(checkpoint_dir, best.best_step) / "model.safetensors"
            state_dict = load_file(str(best_file)) if accelerator.is_main_process else {}
        else:
            state_dict = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            save_fn(accelerator.unwrap_model(model), state_dict, result)
            for ckpt in [*checkpoint_dir.glob("step-*"), *checkpoint_dir.glob("best-step-*")]:
                shutil.rmtree(ckpt, ignore_errors=True)  # the result is saved: nothing left to resume
        accelerator.wait_for_everyone()
    return result
