"""The shared training loop: accumulation grouping, and crash-then-resume equals an uninterrupted run."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlmec_core.train.loop import TrainSettings, _accumulation_group, count_optimizer_steps, train
from rlmec_core.train.sft import IGNORE_INDEX, EncodedExample, SFTCollator, sft_loss


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg)


def dataset(n: int = 40) -> list[EncodedExample]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        length = int(torch.randint(4, 12, (1,), generator=g))
        ids = torch.randint(4, 50, (length,), generator=g).tolist()
        out.append(EncodedExample(input_ids=ids, labels=[IGNORE_INDEX] * 2 + ids[2:]))
    return out


@pytest.mark.parametrize("per_epoch, accum, total", [(10, 1, 10), (10, 4, 25), (7, 3, 14), (5, 8, 12)])
def test_accumulation_groups_cover_every_micro_batch_once(per_epoch, accum, total):
    steps = 0
    for micro in range(total):
        group = _accumulation_group(micro, total, per_epoch, accum)
        assert 1 <= group.size <= accum
        steps += group.is_last
    assert steps == count_optimizer_steps(total, per_epoch, accum)


class Crash(Exception):
    pass


def crashing_loss(crash_at_call=None):
    """``sft_loss`` that raises ``Crash`` at its ``crash_at_call``-th call (a job killed mid-step)."""
    calls = {"n": 0}

    def loss_fn(m, batch):
        calls["n"] += 1
        if crash_at_call is not None and calls["n"] == crash_at_call:
            raise Crash
        return sft_loss(m, batch)

    return loss_fn


def run(tmp_path, name, settings, crash_at_call=None):
    model = tiny_model()
    result = train(model, dataset(), SFTCollator(0), crashing_loss(crash_at_call), settings,
                   checkpoint_dir=tmp_path / name / "ckpt", metrics_path=tmp_path / name / "m.jsonl")
    return model, result


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    settings = TrainSettings(epochs=2, lr=1e-2, batch_size=8, grad_accum=2, checkpoint_every=2, log_every=1,
                             keep_checkpoints=2, seed=3)
    ref, ref_result = run(tmp_path, "ref", settings)
    # 40 examples / batch 8 = 5 micro-batches per epoch, groups of 2,2,1 -> 3 steps per epoch, 6 in all.
    assert ref_result.steps == 6

    # Steps end after micro-batches 2, 4, 5 | 7, 9, 10. Dying in micro-batch 9 (the middle of step 5's
    # accumulation) leaves the checkpoint of step 4, taken in the second epoch.
    with pytest.raises(Crash):
        run(tmp_path, "crash", settings, crash_at_call=9)
    resumed, res = run(tmp_path, "crash", settings)
    assert res.resumed_from_step == 4
    assert res.steps == 6
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    steps = [json.loads(line)["step"] for line in (tmp_path / "crash" / "m.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # no step logged twice or skipped


def test_mismatched_checkpoint_is_refused(tmp_path):
    settings = TrainSettings(epochs=1, lr=1e-2, batch_size=8, checkpoint_every=1, log_every=1)
    with pytest.raises(Crash):
        run(tmp_path, "a", settings, crash_at_call=3)
    with pytest.raises(RuntimeError, match="delete .* to start over"):
        run(tmp_path, "a", TrainSettings(epochs=2, lr=1e-2, batch_size=8, checkpoint_every=1))


def test_empty_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="training set is empty"):
        train(tiny_model(), [], SFTCollator(0), sft_loss, TrainSettings(), checkpoint_dir=tmp_path)


# -- in-training validation: best checkpoint, patience, resume ------------------------------------------------


class Scripted:
    """An ``evaluate_fn`` returning ``values[i]`` at its i-th call (``start`` calls already made by a killed run),
    and keeping a copy of the weights it saw at each call."""

    def __init__(self, values, start=0):
        self.values, self.calls, self.seen = list(values), start, {}

    def __call__(self, model):
        value = self.values[self.calls]
        self.seen[self.calls] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.calls += 1
        return {"val_accuracy": value, "val_total": 10.0}


def run_validated(tmp_path, name, settings, validation, evaluate, crash_at_call=None):
    model = tiny_model()
    saved = {}

    def save(unwrapped, state_dict, result):
        saved.update(state_dict=state_dict, result=result)

    result = train(model, dataset(), SFTCollator(0), crashing_loss(crash_at_call), settings, checkpoint_dir=tmp_path / name / "ckpt",
                   metrics_path=tmp_path / name / "m.jsonl", save_fn=save, validation=validation, evaluate_fn=evaluate)
    return result, saved


def assert_same_weights(a, b):
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


# 40 examples / batch 8 = 5 steps per epoch; every_epochs 0.4 -> an evaluation every 2 steps (and at the end)
VAL_SETTINGS = TrainSettings(epochs=4, lr=1e-2, batch_size=8, checkpoint_every=0, log_every=100, seed=1)


def test_validation_keeps_the_best_weights_not_the_last(tmp_path):
    from rlmec_core.train.loop import ValidationSettings

    evaluate = Scripted([0.1, 0.3, 0.6, 0.5, 0.55, 0.2, 0.4, 0.45, 0.5, 0.58, 0.1])  # 10 evals at steps 2..20
    result, saved = run_validated(tmp_path, "best", VAL_SETTINGS, ValidationSettings(every_epochs=0.4), evaluate)
    assert result.steps == 20 and result.evaluations == 10 and not result.stopped_early
    assert result.best_step == 6 and result.saved_step == 6 and result.best_metric == 0.6
    assert_same_weights(saved["state_dict"], evaluate.seen[2])  # the third evaluation (step 6) was the best
    records = [json.loads(line) for line in (tmp_path / "best" / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_accuracy" in r] == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert records[-1]["best_val_accuracy"] == 0.6 and records[-1]["best_step"] == 6
    assert not list((tmp_path / "best" / "ckpt").glob("best-step-*")), "best weights left behind after saving"


def test_select_last_saves_the_final_weights(tmp_path):
    from rlmec_core.train.loop import ValidationSettings

    model_after = {}
    evaluate = Scripted([0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    result, saved = run_validated(tmp_path, "last", VAL_SETTINGS, ValidationSettings(every_epochs=0.4, select="last"),
                                  evaluate)
    model_after.update(evaluate.seen[9])  # the evaluation at the last step saw the final weights
    assert result.best_step == 2 and result.saved_step == 20
    assert_same_weights(saved["state_dict"], model_after)


def test_patience_stops_training_and_keeps_the_best(tmp_path):
    from rlmec_core.train.loop import ValidationSettings

    # min_delta 0.02: after 0.5 (step 4), neither 0.5 nor 0.51 is an improvement, so patience runs out at the
    # fifth evaluation; the kept weights are still the best value's (0.51, step 8), not the last improvement's
    evaluate = Scripted([0.2, 0.5, 0.5, 0.51, 0.4, 0.9])
    validation = ValidationSettings(every_epochs=0.4, patience=3, min_delta=0.02)
    result, saved = run_validated(tmp_path, "patience", VAL_SETTINGS, validation, evaluate)
    assert result.stopped_early and result.steps == 10 and result.evaluations == 5
    assert result.best_step == 8 and result.best_metric == 0.51 and evaluate.calls == 5  # 0.9 is never seen
    assert_same_weights(saved["state_dict"], evaluate.seen[3])


def test_ties_keep_the_later_weights(tmp_path):
    """On a flat stretch (an untrained model scoring 0 throughout) the kept weights are the latest ones."""
    from rlmec_core.train.loop import ValidationSettings

    evaluate = Scripted([0.0] * 10)
    result, saved = run_validated(tmp_path, "ties", VAL_SETTINGS, ValidationSettings(every_epochs=0.4), evaluate)
    assert result.best_step == 20 and result.saved_step == 20
    assert_same_weights(saved["state_dict"], evaluate.seen[9])


@pytest.mark.parametrize("stale_best", [False, True])
def test_resume_keeps_the_best_so_far(tmp_path, stale_best):
    """Killed after the best evaluation and a later one, the rerun resumes from the checkpoint of the last
    evaluation and ends with the uninterrupted run's best weights, evaluations and log. ``stale_best``: the
    kill also left best weights newer than the checkpoint (written just before the kill), which must go."""
    from rlmec_core.train.loop import ValidationSettings

    values = [0.1, 0.7, 0.3, 0.2, 0.6, 0.65, 0.1, 0.2, 0.3, 0.4]
    validation = ValidationSettings(every_epochs=0.4)
    ref, ref_saved = run_validated(tmp_path, "ref", VAL_SETTINGS, validation, Scripted(values))
    assert ref.best_step == 4

    # micro-batch 11 is step 11: the checkpoint of step 10 (5th evaluation) is the newest
    with pytest.raises(Crash):
        run_validated(tmp_path, "crash", VAL_SETTINGS, validation, Scripted(values), crash_at_call=11)
    ckpt = tmp_path / "crash" / "ckpt"
    assert sorted(p.name for p in ckpt.glob("best-step-*")) == ["best-step-4"]
    state = json.loads((ckpt / "step-10" / "trainer_state.json").read_text())["validation"]
    assert state == {"best_step": 4, "best_value": 0.7, "improved_value": 0.7, "evals_without_improvement": 3,
                     "evaluations": 5, "stopped": False}
    if stale_best:
        (ckpt / "best-step-12").mkdir()
        (ckpt / "best-step-12" / "model.safetensors").write_bytes(b"stale")

    resumed, saved = run_validated(tmp_path, "crash", VAL_SETTINGS, validation, Scripted(values, start=5))
    assert resumed.resumed_from_step == 10 and resumed.best_step == 4 and resumed.evaluations == 10
    assert_same_weights(saved["state_dict"], ref_saved["state_dict"])
    records = [json.loads(line) for line in (tmp_path / "crash" / "m.jsonl").read_text().splitlines()]
    ref_records = [json.loads(line) for line in (tmp_path / "ref" / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [r["step"] for r in ref_records]
    assert [r.get("val_accuracy") for r in records] == [r.get("val_accuracy") for r in ref_records]


def test_at_start_keeps_the_starting_weights_when_no_update_beats_them(tmp_path):
    """A harmful update: the step-0 evaluation (the starting weights) stays the best, so the stage's output
    is the starting policy; every_steps sets the evaluation interval in optimizer steps."""
    from rlmec_core.train.loop import ValidationSettings

    start = tiny_model().state_dict()  # tiny_model is seeded: the weights train() starts from
    evaluate = Scripted([0.6, 0.5, 0.3, 0.2, 0.1, 0.1])  # steps 0, 4, 8, 12, 16, 20
    validation = ValidationSettings(every_steps=4, at_start=True)
    result, saved = run_validated(tmp_path, "start", VAL_SETTINGS, validation, evaluate)
    assert result.steps == 20 and result.evaluations == 6
    assert result.best_step == 0 and result.saved_step == 0 and result.best_metric == 0.6
    assert_same_weights(saved["state_dict"], start)
    records = [json.loads(line) for line in (tmp_path / "start" / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_accuracy" in r] == [0, 4, 8, 12, 16, 20]
    assert records[0]["step"] == 0 and records[0]["tokens_seen"] == 0 and "loss" not in records[0]


def test_resume_keeps_a_starting_best_across_a_kill(tmp_path):
    """Killed after two evaluations below the start, the rerun resumes and still saves the step-0 weights."""
    from rlmec_core.train.loop import ValidationSettings

    start = tiny_model().state_dict()
    values = [0.6, 0.5, 0.3, 0.2, 0.1, 0.1]
    validation = ValidationSettings(every_steps=4, at_start=True)
    with pytest.raises(Crash):
        run_validated(tmp_path, "k", VAL_SETTINGS, validation, Scripted(values), crash_at_call=10)
    ckpt = tmp_path / "k" / "ckpt"
    assert sorted(p.name for p in ckpt.glob("best-step-*")) == ["best-step-0"]
    resumed, saved = run_validated(tmp_path, "k", VAL_SETTINGS, validation, Scripted(values, start=3))
    assert resumed.resumed_from_step == 8 and resumed.best_step == 0 and resumed.evaluations == 6
    assert_same_weights(saved["state_dict"], start)
    records = [json.loads(line) for line in (tmp_path / "k" / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_accuracy" in r] == [0, 4, 8, 12, 16, 20]


def test_mode_min_keeps_the_lowest_metric(tmp_path):
    """A held-out loss: the lowest value is the best; best_metric is reported as measured (not negated)."""
    from rlmec_core.train.loop import ValidationSettings

    class Loss(Scripted):
        def __call__(self, model):
            return {"val_loss": super().__call__(model)["val_accuracy"]}

    evaluate = Loss([2.0, 1.5, 1.2, 1.3, 1.4, 1.6])
    validation = ValidationSettings(every_steps=4, at_start=True, metric="val_loss", mode="min")
    result, saved = run_validated(tmp_path, "min", VAL_SETTINGS, validation, evaluate)
    assert result.best_step == 8 and result.best_metric == 1.2
    assert_same_weights(saved["state_dict"], evaluate.seen[2])
    records = [json.loads(line) for line in (tmp_path / "min" / "m.jsonl").read_text().splitlines()]
    assert records[-1]["best_val_loss"] == 1.2 and records[-1]["best_step"] == 8


def test_heldout_nll_equals_the_per_example_sum():
    """The batched held-out NLL equals a naive twin: each example alone, -log softmax summed over its targets."""
    from rlmec_core.train.sft import heldout_loss_fn, heldout_nll

    model = tiny_model().eval()
    examples = dataset(13)
    total, count = heldout_nll(model, examples, SFTCollator(0), batch_size=4)
    naive_total, naive_count = 0.0, 0
    with torch.no_grad():
        for e in examples:
            logp = torch.log_softmax(model(input_ids=torch.tensor([e.input_ids])).logits[0].double(), -1)
            for t in range(1, len(e.input_ids)):
                if e.labels[t] != -100:
                    naive_total -= float(logp[t - 1, e.labels[t]])
                    naive_count += 1
    assert count == naive_count and total == pytest.approx(naive_total, rel=1e-5)
    figures = heldout_loss_fn(examples, 0, batch_size=5)(model)
    assert figures["val_loss"] == pytest.approx(naive_total / naive_count, rel=1e-5)
    assert figures["val_tokens"] == naive_count
    with pytest.raises(ValueError, match="at least one example"):
        heldout_nll(model, [], SFTCollator(0))


def test_validation_settings_refuse_bad_values():
    from rlmec_core.train.loop import ValidationSettings

    with pytest.raises(ValueError, match="every_steps"):
        ValidationSettings(every_steps=0)
    with pytest.raises(ValueError, match="mode"):
        ValidationSettings(mode="lowest")


def test_resume_refuses_a_checkpoint_whose_best_weights_are_gone(tmp_path):
    from rlmec_core.train.loop import ValidationSettings

    validation = ValidationSettings(every_epochs=0.4)
    values = [0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(Crash):
        run_validated(tmp_path, "gone", VAL_SETTINGS, validation, Scripted(values), crash_at_call=7)
    for d in (tmp_path / "gone" / "ckpt").glob("best-step-*"):
        shutil.rmtree(d)
    with pytest.raises(RuntimeError, match="best weights of step 2 are missing"):
        run_validated(tmp_path, "gone", VAL_SETTINGS, validation, Scripted(values, start=3))


def test_evaluate_fn_without_the_metric_is_a_clear_error(tmp_path):
    from rlmec_core.train.loop import ValidationSettings

    with pytest.raises(KeyError, match="not the metric 'val_accuracy'"):
        run_validated(tmp_path, "nometric", VAL_SETTINGS, ValidationSettings(every_epochs=0.4),
                      lambda m: {"accuracy": 1.0})


def test_evaluation_does_not_change_the_training_run(tmp_path):
    """The evaluator may use the global RNG (sampling); the weights after training are the same with and
    without evaluations (select last)."""
    from rlmec_core.train.loop import ValidationSettings

    def noisy(model):
        torch.rand(100)  # consumes the global RNG
        return {"val_accuracy": 0.5}

    _, with_eval = run_validated(tmp_path, "eval", VAL_SETTINGS, ValidationSettings(every_epochs=0.4, select="last"),
                                 noisy)
    plain, _ = run(tmp_path, "plain", VAL_SETTINGS)
    assert_same_weights(with_eval["state_dict"], plain.state_dict())


def _naive_steps(total_micro: int, per_epoch: int, accum: int) -> int:
    """Optimizer steps of ``total_micro`` micro-batches: a step after every ``accum`` micro-batches of an epoch
    and after an epoch's (or the run's) last one."""
    steps = pending = 0
    for micro in range(total_micro):
        pending += 1
        end_of_epoch = (micro + 1) % per_epoch == 0 or micro + 1 == total_micro
        if pending == accum or end_of_epoch:
            steps, pending = steps + 1, 0
    return steps


@pytest.mark.parametrize("dataset,scheduled,batch,accum,epochs,processes", [
    (100, None, 8, 1, 2.0, 1), (100, 300, 8, 1, 2.0, 1), (100, 37, 8, 1, 2.0, 1), (100, 300, 8, 3, 1.5, 1),
    (50, 513, 4, 2, 3.0, 2), (7, 1000, 16, 4, 0.5, 1), (1000, 10, 32, 1, 1.0, 1), (33, 33, 8, 2, 2.0, 1),
])
def test_planned_micro_batches_equal_a_naive_count(dataset, scheduled, batch, accum, epochs, processes):
    """schedule_examples: the run over `dataset` examples takes exactly the optimizer steps of `epochs` over
    `scheduled` examples, with the most micro-batches that make exactly them (full accumulation groups; a
    brute-force count is the twin)."""
    from rlmec_core.train.loop import TrainSettings, planned_micro_batches

    settings = TrainSettings(epochs=epochs, batch_size=batch, grad_accum=accum, schedule_examples=scheduled)
    per_epoch, total_micro, total_steps = planned_micro_batches(settings, dataset, processes)
    assert per_epoch == math.ceil(dataset / (batch * processes))
    sched_per_epoch = math.ceil((scheduled or dataset) / (batch * processes))
    want_steps = _naive_steps(math.ceil(epochs * sched_per_epoch), sched_per_epoch, accum)
    want_micro = next(m for m in range(1, 10**6) if _naive_steps(m + 1, per_epoch, accum) > want_steps)
    assert (total_micro, total_steps) == (want_micro, want_steps)
    assert _naive_steps(total_micro, per_epoch, accum) == total_steps
