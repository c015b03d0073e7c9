"""The shared training loop: accumulation grouping, and crash-then-resume equals an uninterrupted run."""

from __future__ import annotations

import json

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


def run(tmp_path, name, settings, crash_at_call=None):
    model = tiny_model()
    calls = {"n": 0}

    def loss_fn(m, batch):
        calls["n"] += 1
        if crash_at_call is not None and calls["n"] == crash_at_call:
            raise Crash
        return sft_loss(m, batch)

    result = train(model, dataset(), SFTCollator(0), loss_fn, settings,
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
