"""The label stage (token rewards to Parquet) and the RLMEC policy update on a tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from teacher_support import make_teacher_inputs
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlmec_core.config import validate_config
from rlmec_core.edits import imitation_weights
from rlmec_core.errors import DataError
from rlmec_core.grm.prompts import GRMPrompts
from rlmec_core.io import read_parquet, write_parquet
from rlmec_core.losses import rlmec_loss
from rlmec_core.rewards import step_reward_sums, token_rewards
from rlmec_core.sampling import EngineSettings, vllm_available
from rlmec_core.schemas import REWRITES, SAMPLES, TOKEN_REWARDS
from rlmec_core.stages.label import label_samples, normalise_solution, select_rows
from rlmec_core.stages.rl import load_rl_examples, rl_update
from rlmec_core.stages.teacher import run_teacher
from rlmec_core.tasks import get_adapter
from rlmec_core.train.rl import RLCollator, RLExample, rl_batch_loss

COMPACT = {"rewrite": "Problem: {question}\nReference:\n{reference}\nPrediction:\n{prediction}\nCorrect prediction:\n"}
ENGINE = EngineSettings(backend="hf")


def cfg(section: str, **overrides):
    """A validated config block; ``rl`` without in-training validation unless the test sets it (those tests
    give the update no validation split)."""
    if section == "rl":
        overrides.setdefault("validation", {"enabled": False})
    return validate_config({section: overrides})[section]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, demo_policy):
    """Oracle rewrites of synthetic samples (token ids under the demo policy's tokenizer), labelled with the
    demo policy standing in for the GRM (any causal LM sharing the vocabulary will do)."""
    d = tmp_path_factory.mktemp("label")
    samples_path, problems_path, _ = make_teacher_inputs(d, 24, wrong_per_problem=2, correct_per_problem=2, seed=3)
    tok = AutoTokenizer.from_pretrained(str(demo_policy))
    rows = read_parquet(samples_path, SAMPLES).to_pylist()
    for i, r in enumerate(rows):
        r["token_ids"] = tok(r["completion"], add_special_tokens=False)["input_ids"]
        r["num_tokens"] = len(r["token_ids"])
        if i == 1:  # one sample cut at max_new_tokens: no EOS is appended to it
            r["finish_reason"] = "length"
    write_parquet(pa.Table.from_pylist(rows, schema=SAMPLES), samples_path, SAMPLES)
    run_teacher(samples_path, problems_path, demo_policy, d / "rewrites.parquet", d / "t.json", adapter_name="arith",
                teacher_cfg=validate_config({})["teacher"], seed=0, cache_path=d / "cache.jsonl")
    metrics = label_samples(demo_policy, demo_policy, samples_path, d / "rewrites.parquet", d / "labels.parquet",
                            d / "metrics.json", adapter_name="arith", grm_cfg={"prompts": COMPACT},
                            label_cfg=cfg("label"), engine=ENGINE)
    return {"dir": d, "samples": samples_path, "rewrites": d / "rewrites.parquet", "labels": d / "labels.parquet",
            "metrics": metrics, "policy": demo_policy}


def test_normalised_duplicates_and_selection():
    assert normalise_solution("12 + 3 = 15.\nThe answer is 15") == normalise_solution("12+3 = 15\nthe answer is 15 ")
    assert normalise_solution("12 + 3 = 15") != normalise_solution("12 + 3 = 16")
    base = {"sample_id": "a#0", "problem_id": "a", "prediction": "1 + 1 = 2", "prediction_correct": True,
            "status": "ok", "rewrite": "1 + 1 = 2"}
    rows = [base, {**base, "sample_id": "a#1", "prediction": "1+1 = 2."},  # a duplicate after normalisation
            {**base, "sample_id": "b#0", "problem_id": "b"},  # same text, other problem: kept
            {**base, "sample_id": "a#2", "prediction": "1 + 1 = 3", "prediction_correct": False, "rewrite": "x"},
            {**base, "sample_id": "a#3", "prediction": "1 + 2 = 3", "prediction_correct": False,
             "status": "wrong_answer", "rewrite": "y"}]
    table = pa.Table.from_pylist(rows)
    kept, counts = select_rows(table, "r.parquet")
    assert [r["sample_id"] for r in kept] == ["a#0", "b#0", "a#2"]
    assert counts == {"rewrite_rows": 5, "correct_duplicates": 1, "wrong_without_rewrite": 1}
    with pytest.raises(DataError, match="r.parquet: none of 1"):
        select_rows(pa.Table.from_pylist(rows[-1:]), "r.parquet")


def test_labels_equal_one_sample_at_a_time(labelled):
    """Every column against a naive twin: one full-logits forward pass per sample."""
    table = pq.read_table(labelled["labels"])
    assert table.schema.equals(TOKEN_REWARDS)
    rows = table.to_pylist()
    rewrites = read_parquet(labelled["rewrites"], REWRITES).to_pylist()
    assert len(rows) == labelled["metrics"]["labelled"] > 0
    assert {r["correct"] for r in rows} == {True, False}
    model = AutoModelForCausalLM.from_pretrained(str(labelled["policy"])).eval()
    tok = AutoTokenizer.from_pretrained(str(labelled["policy"]))
    adapter, prompts = get_adapter("arith"), GRMPrompts.from_config(COMPACT)
    label = cfg("label")
    samples = {r["sample_id"]: r for r in read_parquet(labelled["samples"], SAMPLES).to_pylist()}

    def naive_logprobs(prompt_ids, target):
        ids = torch.tensor([prompt_ids + target])
        with torch.no_grad():
            logp = model(ids).logits[0].float().log_softmax(-1)
        return np.array([logp[len(prompt_ids) + t - 1, tok_id].item() for t, tok_id in enumerate(target)])

    for r in rows:
        s = samples[r["sample_id"]]
        eos = [tok.eos_token_id] if s["finish_reason"] == "stop" else []
        assert r["token_ids"] == s["token_ids"] + eos
        assert r["prompt_ids"] == tok(s["prompt"])["input_ids"]
        grm_prompt = tok(prompts.rewrite_prompt(r["question"], adapter.split_steps(r["reference_solution"]),
                                                adapter.split_steps(r["prediction"])))["input_ids"]
        np.testing.assert_allclose(r["grm_probs"], np.exp(naive_logprobs(grm_prompt, r["token_ids"])), atol=1e-5)
        np.testing.assert_allclose(r["old_logprobs"], naive_logprobs(r["prompt_ids"], r["token_ids"]), atol=1e-4)
        expected = token_rewards(np.array(r["grm_probs"], dtype=np.float64), r["correct"],
                                 tuple(label["pos_clip"]), tuple(label["neg_clip"]))
        np.testing.assert_allclose(r["rewards"], expected, atol=1e-6)
        assert (np.array(r["rewards"]) >= 0).all() if r["correct"] else (np.array(r["rewards"]) <= 0).all()
        assert "".join(r["tokens"]).replace(tok.eos_token, "") == r["prediction"]
        np.testing.assert_allclose(r["step_rewards"], step_reward_sums(r["tokens"], r["rewards"]), atol=1e-5)
        if r["correct"]:
            assert r["imitation_ids"] == r["token_ids"] and set(r["imitation_weights"]) == {0.5}
            assert r["error_step"] == -1 and r["rewrite_source"] == "passthrough"
        else:
            src = next(w for w in rewrites if w["sample_id"] == r["sample_id"])
            assert src["status"] == "ok" and r["rewrite"] == src["rewrite"] and r["error_step"] == src["error_step"]
            z = tok(r["rewrite"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            assert r["imitation_ids"] == z
            assert r["imitation_weights"] == pytest.approx(imitation_weights(r["token_ids"], z))
            assert 1.0 in r["imitation_weights"]  # a rewrite of a wrong answer changes something


@pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")
def test_labels_scored_through_vllm_equal_the_transformers_labels(labelled, tmp_path):
    """engine.score_backend vllm: p_t from vLLM's prompt log-probs, the old log-probs still from transformers."""
    pol = labelled["policy"]
    m = label_samples(pol, pol, labelled["samples"], labelled["rewrites"], tmp_path / "labels.parquet",
                      tmp_path / "m.json", adapter_name="arith", grm_cfg={"prompts": COMPACT}, label_cfg=cfg("label"),
                      engine=EngineSettings(backend="hf", score_backend="vllm"))
    assert m["grm_score_backend"] == "vllm" and labelled["metrics"]["grm_score_backend"] == "hf"
    hf, vl = pq.read_table(labelled["labels"]).to_pylist(), pq.read_table(tmp_path / "labels.parquet").to_pylist()
    assert [r["sample_id"] for r in hf] == [r["sample_id"] for r in vl]
    p_hf, p_vl = (np.concatenate([r["grm_probs"] for r in rows]) for rows in (hf, vl))
    assert np.mean((p_hf < 0.5) == (p_vl < 0.5)) >= 0.999
    np.testing.assert_allclose(p_vl, p_hf, atol=1e-5)
    for a, b in zip(hf, vl, strict=True):
        assert a["old_logprobs"] == b["old_logprobs"]  # the training forward's values: first ratio exactly 1
        np.testing.assert_allclose(b["rewards"], a["rewards"], atol=1e-5)
        assert a["imitation_ids"] == b["imitation_ids"] and a["imitation_weights"] == b["imitation_weights"]


def test_score_backend_follows_the_engine_unless_set():
    from rlmec_core.sampling import resolve_score_backend

    assert resolve_score_backend(EngineSettings(backend="hf")) == "hf"
    assert resolve_score_backend(EngineSettings(backend="hf", score_backend="hf")) == "hf"
    assert resolve_score_backend(EngineSettings(backend="auto")) == ("vllm" if vllm_available() else "hf")
    with pytest.raises(ValueError, match="score_backend must be one of"):
        EngineSettings(score_backend="tgi")
    with pytest.raises(Exception, match="score_backend"):
        validate_config({"engine": {"score_backend": "tgi"}})


def test_label_metrics_and_deduplication(labelled):
    m = labelled["metrics"]
    table = pq.read_table(labelled["labels"]).to_pylist()
    # every problem has 2 identical correct samples (the reference): one label per problem
    correct = [r for r in table if r["correct"]]
    assert len(correct) == len({r["problem_id"] for r in correct}) == m["labelled_correct"]
    assert m["labelled_wrong"] + m["labelled_correct"] == m["labelled"]
    assert m["reward_tokens"] == sum(len(r["token_ids"]) for r in table)
    assert m["tokens_per_s"] > 0 and m["labelled"] >= 20
    # every row of the rewrites file is accounted for (the tiny model's 192 positions do not fit them all)
    assert m["labelled"] + m["too_long"] + m["correct_duplicates"] + m["wrong_without_rewrite"] == m["rewrite_rows"]


def test_label_bad_inputs(labelled, tmp_path):
    kw = {"adapter_name": "arith", "grm_cfg": {"prompts": COMPACT}, "label_cfg": cfg("label"), "engine": ENGINE}
    pol = labelled["policy"]
    # rewrites that refer to samples of another draw
    rows = read_parquet(labelled["rewrites"], REWRITES).to_pylist()
    rows[0]["sample_id"] = "nope#0"
    bad = tmp_path / "bad_rewrites.parquet"
    write_parquet(pa.Table.from_pylist(rows, schema=REWRITES), bad, REWRITES)
    with pytest.raises(DataError, match="sample 'nope#0' is not in"):
        label_samples(pol, pol, labelled["samples"], bad, tmp_path / "o.parquet", tmp_path / "m.json", **kw)
    assert not (tmp_path / "o.parquet").exists()
    # a GRM with another vocabulary
    _, _, other_tok = make_teacher_inputs(tmp_path / "other", 4, seed=9)
    other = tmp_path / "other_grm"
    AutoModelForCausalLM.from_pretrained(str(pol)).save_pretrained(str(other))
    AutoTokenizer.from_pretrained(str(other_tok)).save_pretrained(str(other))
    with pytest.raises(DataError, match="tokenizer differs from the policy"):
        label_samples(other, pol, labelled["samples"], labelled["rewrites"], tmp_path / "o.parquet",
                      tmp_path / "m.json", **kw)
    assert not (tmp_path / "o.parquet").exists()


def test_prompts_longer_than_the_context_are_skipped_and_counted(labelled, tmp_path):
    long_prompt = {"rewrite": "x " * 400 + COMPACT["rewrite"]}  # longer than the tiny model's 192 positions
    m = label_samples(labelled["policy"], labelled["policy"], labelled["samples"], labelled["rewrites"],
                      tmp_path / "o.parquet", tmp_path / "m.json", adapter_name="arith",
                      grm_cfg={"prompts": long_prompt}, label_cfg=cfg("label"), engine=ENGINE)
    before = labelled["metrics"]
    assert m["too_long"] == before["labelled"] + before["too_long"] and m["labelled"] == 0
    assert pq.read_table(tmp_path / "o.parquet").num_rows == 0


# -- the update ------------------------------------------------------------------------------------------
def test_collator_layout():
    ex = [RLExample([1, 2], [3, 4, 5], [0.1, -0.1, 0.0], [-1.0, -2.0, -3.0], [3, 6], [0.5, 1.0]),
          RLExample([1], [7], [0.4], [-0.5], [7, 8, 9], [0.5, 0.5, 1.0])]
    b = RLCollator(0)(ex)
    assert b["input_ids"].shape == (4, 5)
    assert b["input_ids"][0].tolist() == [1, 2, 3, 4, 5] and b["input_ids"][2].tolist() == [1, 2, 3, 6, 0]
    assert b["input_ids"][1].tolist() == [1, 7, 0, 0, 0] and b["input_ids"][3].tolist() == [1, 7, 8, 9, 0]
    assert b["target_mask"][0].tolist() == [False, False, True, True, True]
    assert b["target_mask"][3].tolist() == [False, True, True, True, False]
    assert b["rewards"][0].tolist() == pytest.approx([0, 0, 0.1, -0.1, 0])
    assert b["old_logprobs"][1].tolist() == pytest.approx([0, -0.5, 0, 0, 0])
    assert b["imitation_weights"][1].tolist() == pytest.approx([0, 0.5, 0.5, 1.0, 0])
    assert (b["attention_mask"].sum(1) == torch.tensor([5, 2, 4, 4])).all()
    with pytest.raises(ValueError, match="differ in length"):
        RLExample([1], [2, 3], [0.1], [0.0, 0.0], [2], [1.0])


def test_batch_loss_equals_the_per_example_formula(labelled):
    """rl_batch_loss on a padded batch vs. RLMEC.md stage 6 written out with one forward pass per sequence."""
    examples = load_rl_examples(labelled["labels"])[:6]
    model = AutoModelForCausalLM.from_pretrained(str(labelled["policy"]))
    with torch.no_grad():  # perturb so that ratios differ from 1 and the clip is active somewhere
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss, stats = rl_batch_loss(model, RLCollator(0)(examples), clip_eps=0.2, imitation_coef=0.7,
                                ratio_form="published")
    num_rl = den_rl = num_ir = den_ir = 0.0
    for e in examples:
        with torch.no_grad():
            lp_y = model(torch.tensor([e.prompt_ids + e.token_ids])).logits[0].log_softmax(-1)
            lp_z = model(torch.tensor([e.prompt_ids + e.imitation_ids])).logits[0].log_softmax(-1)
        p = len(e.prompt_ids)
        for t, tid in enumerate(e.token_ids):
            lp = lp_y[p + t - 1, tid].item()
            rho, r = math.exp(lp - e.old_logprobs[t]), e.rewards[t]
            a = min(rho * r, min(max(rho, 0.8), 1.2) * r)
            num_rl += a * lp
            den_rl += r != 0
        for j, zid in enumerate(e.imitation_ids):
            num_ir += e.imitation_weights[j] * -lp_z[p + j - 1, zid].item()
            den_ir += e.imitation_weights[j] != 0
    expected_rl, expected_ir = -num_rl / max(den_rl, 1), num_ir / max(den_ir, 1)
    assert stats["loss_rl"] == pytest.approx(expected_rl, rel=1e-4, abs=1e-6)
    assert stats["loss_ir"] == pytest.approx(expected_ir, rel=1e-4)
    assert float(loss.detach()) == pytest.approx(expected_rl + 0.7 * expected_ir, rel=1e-4, abs=1e-6)
    assert stats["clip_frac"] > 0
    assert stats["n_reward_tokens"] == den_rl and stats["n_imitation_tokens"] == den_ir
    assert rlmec_loss  # the kernel the stage trains with (tested against its own twin in test_losses)


def test_first_step_ratio_is_one(labelled):
    """The labels' old log-probs come from the same forward function: the unchanged policy has rho = 1."""
    examples = load_rl_examples(labelled["labels"])
    model = AutoModelForCausalLM.from_pretrained(str(labelled["policy"]))
    _, stats = rl_batch_loss(model, RLCollator(0)(examples), clip_eps=0.3, imitation_coef=1.0, ratio_form="ppo")
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-6) and stats["clip_frac"] == 0.0


def test_rl_update_trains_logs_and_saves(labelled, tmp_path):
    rl = cfg("rl", train={"epochs": 2, "lr": 2e-3, "batch_size": 8, "log_every": 1, "checkpoint_every": 3})
    card = rl_update(labelled["labels"], labelled["policy"], tmp_path / "rlmec", rl_cfg=rl, seed=0,
                     checkpoint_dir=tmp_path / "ckpt", metrics_path=tmp_path / "rl.jsonl")
    assert (tmp_path / "rlmec" / "model.safetensors").exists()
    saved = json.loads((tmp_path / "rlmec" / "rlmec_model.json").read_text())
    assert saved["ratio_form"] == "published" and saved["prompt_template"] == "Question: {question}\nAnswer:\n"
    records = [json.loads(line) for line in (tmp_path / "rl.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, card["steps"] + 1))
    for key in ("loss", "loss_rl", "loss_ir", "clip_frac", "approx_kl", "ratio_mean", "grad_norm", "lr"):
        assert all(math.isfinite(r[key]) for r in records), key
    assert records[0]["ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert not list((tmp_path / "ckpt").glob("step-*"))  # checkpoints removed once the result is saved
    before = AutoModelForCausalLM.from_pretrained(str(labelled["policy"]))
    after = AutoModelForCausalLM.from_pretrained(str(tmp_path / "rlmec"))
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))
    # on the whole labelled set, the update lowered the objective it optimises
    batch = RLCollator(0)(load_rl_examples(labelled["labels"]))
    with torch.no_grad():
        kw = {"clip_eps": 0.3, "imitation_coef": 1.0, "ratio_form": "published"}
        assert rl_batch_loss(after, batch, **kw)[1]["loss_ir"] < rl_batch_loss(before, batch, **kw)[1]["loss_ir"]


def saved_accuracy(model_dir, problems_path, limit=40, **kw):
    """Greedy validation accuracy of a saved policy, measured as the in-training validation measures it."""
    from rlmec_core.stages.data import load_problems
    from rlmec_core.stages.evaluate import greedy_accuracy_fn

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    fn = greedy_accuracy_fn(tok, load_problems(problems_path)[:limit], get_adapter("arith", "Question: {question}\nAnswer:\n"),
                            **kw)
    return fn(model)["val_accuracy"]


@pytest.mark.parametrize("select", ["best", "last"])
def test_rl_update_keeps_the_best_validation_checkpoint(labelled, demo_task, tmp_path, select):
    """rl.validation evaluates the starting policy (step 0) and every 2 steps; select best saves the evaluated
    weights with the highest accuracy (measured again on the saved model: the same figure), select last the
    final ones. The card carries the update check of the log. A learning rate far too high makes the
    later evaluations worse than the start."""
    val = {"every_steps": 2, "limit": 40, "max_new_tokens": 48, "batch_size": 64}
    rl = cfg("rl", train={"epochs": 2, "lr": 3e-2, "batch_size": 8, "log_every": 1, "checkpoint_every": 0},
             validation=val, select=select)
    card = rl_update(labelled["labels"], labelled["policy"], tmp_path / "rlmec", rl_cfg=rl, seed=0,
                     checkpoint_dir=tmp_path / "ckpt", metrics_path=tmp_path / "rl.jsonl",
                     validation_path=demo_task["validation"], adapter_name="arith",
                     prompt_template="Question: {question}\nAnswer:\n")
    records = [json.loads(line) for line in (tmp_path / "rl.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val_accuracy" in r]
    assert [r["step"] for r in evals] == [*range(0, card["steps"], 2), card["steps"]] if card["steps"] % 2 else \
        list(range(0, card["steps"] + 1, 2))
    assert records[0]["step"] == 0 and "loss" not in records[0] and evals[0]["val_total"] == 40
    best = max(reversed(evals), key=lambda r: r["val_accuracy"])
    assert card["best_step"] == best["step"] and card["best_metric"] == best["val_accuracy"]
    assert card["validation"]["select"] == select and card["validation"]["problems"] == 40
    start = saved_accuracy(labelled["policy"], demo_task["validation"], max_new_tokens=48)
    assert evals[0]["val_accuracy"] == start  # step 0 is the starting policy
    saved = saved_accuracy(tmp_path / "rlmec", demo_task["validation"], max_new_tokens=48)
    if select == "best":
        assert card["saved_step"] == best["step"] and saved == best["val_accuracy"]
    else:
        assert card["saved_step"] == card["steps"] and saved == evals[-1]["val_accuracy"]
    from rlmec_core.preflight import update_check_from_log

    assert card["update_check"] == json.loads(json.dumps(
        update_check_from_log(records, lr=3e-2, where=str(tmp_path / "rl.jsonl")).__dict__))


def test_rl_validation_without_a_split_is_a_clear_error(labelled, tmp_path):
    rl = cfg("rl", validation={"enabled": True})
    with pytest.raises(DataError, match="rl.validation is enabled but the stage was given no validation split"):
        rl_update(labelled["labels"], labelled["policy"], tmp_path / "x", rl_cfg=rl, seed=0,
                  checkpoint_dir=tmp_path / "c", metrics_path=tmp_path / "m.jsonl")
    assert not (tmp_path / "x").exists()


def test_rl_bad_labels(labelled, tmp_path):
    rows = read_parquet(labelled["labels"], TOKEN_REWARDS).to_pylist()
    rows[2]["rewards"] = [float("nan")] * len(rows[2]["rewards"])
    bad = tmp_path / "nan.parquet"
    write_parquet(pa.Table.from_pylist(rows, schema=TOKEN_REWARDS), bad, TOKEN_REWARDS)
    with pytest.raises(DataError, match=rf"row 2 \(sample '{rows[2]['sample_id']}'\) has a NaN"):
        load_rl_examples(bad)
    rows = read_parquet(labelled["labels"], TOKEN_REWARDS).to_pylist()
    rows[0]["token_ids"] = [*rows[0]["token_ids"][:-1], 10_000]
    big = tmp_path / "vocab.parquet"
    write_parquet(pa.Table.from_pylist(rows, schema=TOKEN_REWARDS), big, TOKEN_REWARDS)
    with pytest.raises(DataError, match="token id 10000 is outside the vocabulary"):
        rl_update(big, labelled["policy"], tmp_path / "out", rl_cfg=cfg("rl"), seed=0, checkpoint_dir=tmp_path / "c",
                  metrics_path=tmp_path / "m.jsonl")
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty.parquet"
    write_parquet(TOKEN_REWARDS.empty_table(), empty, TOKEN_REWARDS)
    with pytest.raises(DataError, match="no labelled samples"):
        load_rl_examples(empty)


def test_label_and_rl_from_the_command_line(labelled, tmp_path, capsys):
    from rlmec_core.cli import main

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text("grm:\n  prompts:\n    rewrite: " + json.dumps(COMPACT["rewrite"]) + "\n"
                        "rl:\n  train: {epochs: 1, batch_size: 16}\n")
    pol = str(labelled["policy"])
    assert main(["label", "--grm", pol, "--policy", pol, "--samples", str(labelled["samples"]), "--rewrites",
                 str(labelled["rewrites"]), "--out", str(tmp_path / "lab"), "--config", str(cfg_path),
                 "--backend", "hf"]) == 0
    assert json.loads(capsys.readouterr().out)["labelled"] == labelled["metrics"]["labelled"]
    assert pq.read_table(tmp_path / "lab" / "token_rewards.parquet").equals(pq.read_table(labelled["labels"]))
    assert main(["rl", "--labels", str(tmp_path / "lab" / "token_rewards.parquet"), "--policy", pol, "--out",
                 str(tmp_path / "rlmec"), "--config", str(cfg_path)]) == 0
    assert (tmp_path / "rlmec" / "model.safetensors").exists()
    assert main(["rl", "--labels", str(tmp_path / "missing.parquet"), "--policy", pol, "--out",
                 str(tmp_path / "x")]) == 2
    assert "missing.parquet" in capsys.readouterr().err


def test_killed_rl_update_resumes_from_its_last_checkpoint(labelled, demo_task, tmp_path):
    """SIGKILLed once a checkpoint exists, the rerun resumes there: each step logged once, and the in-training
    validation (--validation) keeps its best so far: every evaluation once, the saved policy the best."""
    import subprocess
    import sys
    from pathlib import Path

    from killing import checkpoint_steps, run_and_kill

    rlmec = str(Path(sys.executable).with_name("rlmec"))
    cfg_path = tmp_path / "cfg.yaml"
    # Long enough (in steps) that the kill lands mid-run however fast the machine is.
    cfg_path.write_text("rl:\n  train: {epochs: 16, lr: 1.0e-4, batch_size: 4, checkpoint_every: 10, log_every: 1}\n"
                        "  validation: {every_steps: 25, limit: 20, max_new_tokens: 48}\n")
    cmd = [rlmec, "rl", "--labels", str(labelled["labels"]), "--policy", str(labelled["policy"]), "--out",
           str(tmp_path / "model"), "--config", str(cfg_path), "--checkpoint-dir", str(tmp_path / "ckpt"),
           "--validation", str(demo_task["validation"])]
    outcome = run_and_kill(cmd, tmp_path, lambda: bool(checkpoint_steps(tmp_path / "ckpt")), timeout_s=300,
                           log_path=tmp_path / "killed.log")
    assert outcome.killed and outcome.reason == "predicate", f"not killed mid-run: {outcome.output[-2000:]}"
    steps = checkpoint_steps(tmp_path / "ckpt")
    assert steps and not (tmp_path / "model").exists()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    card = json.loads(out.stdout[out.stdout.index("{"):])
    assert card["resumed_from_step"] == steps[-1]
    records = [json.loads(line) for line in (tmp_path / "model.train_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(0, card["steps"] + 1))  # no step twice, none skipped
    evals = [r for r in records if "val_accuracy" in r]
    assert [r["step"] for r in evals] == [*range(0, card["steps"], 25), card["steps"]]
    best = max(reversed(evals), key=lambda r: r["val_accuracy"])
    assert card["evaluations"] == len(evals) and card["saved_step"] == card["best_step"] == best["step"]
    assert saved_accuracy(tmp_path / "model", demo_task["validation"], limit=20, max_new_tokens=48) == best["val_accuracy"]
    assert not list((tmp_path / "ckpt").glob("step-*"))


@pytest.mark.parametrize("method", ["rft", "instance_rl", "rlmec_no_imitation"])
def test_baselines_train_through_the_same_update(labelled, tmp_path, method):
    rl = cfg("rl", train={"epochs": 1, "lr": 1e-3, "batch_size": 16, "log_every": 1})
    card = rl_update(labelled["labels"], labelled["policy"], tmp_path / method, rl_cfg=rl, seed=1,
                     checkpoint_dir=tmp_path / "ckpt", metrics_path=tmp_path / "m.jsonl", method=method)
    assert card["method"] == method and (tmp_path / method / "model.safetensors").exists()
    n_correct = sum(pq.read_table(labelled["labels"]).column("correct").to_pylist())
    assert card["train_examples"] == (n_correct if method == "rft" else labelled["metrics"]["labelled"])
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    if method == "rlmec_no_imitation":
        assert all(r["loss_ir"] == 0.0 and r["n_imitation_tokens"] == 0 for r in records)
    if method == "rft":
        assert all(r["loss_rl"] == 0.0 and r["n_reward_tokens"] == 0 for r in records)
    if method == "instance_rl":  # every token of every sample carries the sequence reward
        assert records[0]["n_reward_tokens"] > 0 and records[0]["loss_rl"] != 0.0


def test_dpo_pairs_and_loss(labelled, tmp_path):
    from rlmec_core.train.dpo import DPOCollator, dpo_batch_loss, pairs_from_samples, with_reference

    tok = AutoTokenizer.from_pretrained(str(labelled["policy"]))
    sample_rows = read_parquet(labelled["samples"], SAMPLES).to_pylist()
    sample_pairs = pairs_from_samples(sample_rows, tok)
    # every wrong sample of a problem with a correct one is rejected once (duplicates counted once)
    assert len(sample_pairs) == len({(r["problem_id"], r["completion"]) for r in sample_rows if not r["correct"]}) > 0
    eos = [tok.eos_token_id]
    by_ids = {tuple(r["token_ids"] + (eos if r["finish_reason"] == "stop" else [])): r["correct"] for r in sample_rows}
    assert all(by_ids[tuple(p.chosen_ids)] and not by_ids[tuple(p.rejected_ids)] for p in sample_pairs)
    model = AutoModelForCausalLM.from_pretrained(str(labelled["policy"]))
    pairs = with_reference(sample_pairs, model, tok.pad_token_id)
    batch = DPOCollator(0)(pairs)
    loss, stats = dpo_batch_loss(model, batch, beta=0.1)
    assert float(loss.detach()) == pytest.approx(math.log(2), abs=1e-4)  # the policy is its own reference
    with torch.no_grad():  # against the formula with one forward pass per sequence
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        loss, _ = dpo_batch_loss(model, batch, beta=0.5)

        def seq_logp(prompt, y):
            lp = model(torch.tensor([prompt + y])).logits[0].log_softmax(-1)
            return sum(lp[len(prompt) + t - 1, tok].item() for t, tok in enumerate(y))

        margins = [0.5 * ((seq_logp(p.prompt_ids, p.chosen_ids) - p.chosen_ref)
                          - (seq_logp(p.prompt_ids, p.rejected_ids) - p.rejected_ref)) for p in pairs]
    expected = sum(math.log1p(math.exp(-m)) for m in margins) / len(margins)
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    rl = cfg("rl", train={"epochs": 1, "lr": 1e-3, "batch_size": 4, "log_every": 1})
    with pytest.raises(DataError, match="needs the samples"):
        rl_update(labelled["labels"], labelled["policy"], tmp_path / "x", rl_cfg=cfg("rl"), seed=0,
                  checkpoint_dir=tmp_path / "c0", metrics_path=tmp_path / "m0.jsonl", method="dpo")
    card = rl_update(labelled["labels"], labelled["policy"], tmp_path / "dpo", rl_cfg=rl, seed=0,
                     checkpoint_dir=tmp_path / "c", metrics_path=tmp_path / "m.jsonl", method="dpo", dpo_beta=0.1,
                     samples_path=labelled["samples"])
    assert card["train_examples"] == len(sample_pairs) and card["dpo_beta"] == 0.1
    first = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(math.log(2), abs=0.05) and "reward_margin" in first


def test_sft_gold_trains_on_the_gold_solutions_of_exactly_the_rl_draw(demo_policy, demo_task, tmp_path):
    """sft_gold's examples are the reference solutions of the rl draw's problems (rows first..first+n of the
    split), in order, with the policy's prompt; the loss covers the solution and EOS only."""
    from rlmec_core.stages.data import load_problems
    from rlmec_core.stages.rl import gold_sft_examples, sft_gold_update
    from rlmec_core.train.sft import IGNORE_INDEX

    problems = load_problems(demo_task["train"])
    draw = {"first": 100, "problems": 37}
    train = {**cfg("rl")["train"], "epochs": 1, "lr": 1e-3, "batch_size": 16, "log_every": 1}
    card = sft_gold_update(demo_task["train"], demo_policy, tmp_path / "gold", draw=draw, adapter_name="arith",
                           prompt_template="Question: {question}\nAnswer:\n", train_cfg=train, seed=0,
                           checkpoint_dir=tmp_path / "ckpt", metrics_path=tmp_path / "gold.jsonl")
    assert card["method"] == "sft_gold" and card["train_examples"] == 37
    assert card["draw"] == {"first": 100, "problems": 37} and card["train"]["lr"] == 1e-3
    assert card["steps"] == 3 and (tmp_path / "gold" / "model.safetensors").exists()  # ceil(37 / 16)

    tok = AutoTokenizer.from_pretrained(str(demo_policy))
    adapter = get_adapter("arith", "Question: {question}\nAnswer:\n")
    examples, report = gold_sft_examples(problems[100:137], adapter, tok, max_length=192)
    assert report.skipped_too_long == 0 and len(examples) == 37
    for ex, problem in zip(examples, problems[100:137], strict=True):
        prompt = tok(adapter.format_prompt(problem.question))["input_ids"]
        target = [t for t in ex.labels if t != IGNORE_INDEX]
        assert ex.input_ids[: len(prompt)] == prompt and ex.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
        assert target[-1] == tok.eos_token_id
        assert tok.decode(target[:-1]) == problem.reference_solution  # the gold solution, nothing else

    with pytest.raises(DataError, match=r"train.parquet: no problems in the range first=5000"):
        sft_gold_update(demo_task["train"], demo_policy, tmp_path / "none", draw={"first": 5000, "problems": 10},
                        adapter_name="arith", prompt_template=None, train_cfg=train, seed=0,
                        checkpoint_dir=tmp_path / "c2", metrics_path=tmp_path / "none.jsonl")


# -- the baselines of iterative RLMEC (rounds) ------------------------------------------------------------------
def test_rft_round_examples_equal_those_of_the_label_path(labelled, tmp_path):
    """Iterated RFT builds its examples from a draw's samples without the GRM: the same correct samples, prompt
    ids, target y (EOS when stopped), imitation weights and old log-probs as `rl_update(method="rft")` takes
    from the label stage's table of that draw."""
    from rlmec_core.methods import get_method, method_examples
    from rlmec_core.stages.rl import correct_sample_rows, load_labelled, rft_examples, rft_update

    rows = correct_sample_rows(labelled["samples"])
    tok = AutoTokenizer.from_pretrained(str(labelled["policy"]))
    model = AutoModelForCausalLM.from_pretrained(str(labelled["policy"]))
    mine = rft_examples(rows, tok, model, chat_template=False)
    examples, correct = load_labelled(labelled["labels"])
    theirs = method_examples(get_method("rft"), examples, correct)
    # the label stage also drops samples whose GRM prompt overflows the GRM's context; rft has no GRM prompt
    assert len(mine) == len(rows) >= len(theirs) == sum(correct) > 0
    by_key = {(tuple(e.prompt_ids), tuple(e.token_ids)): e for e in mine}
    for other in theirs:
        e = by_key[(tuple(other.prompt_ids), tuple(other.token_ids))]
        assert e.imitation_ids == other.imitation_ids == e.token_ids
        assert e.imitation_weights == other.imitation_weights == [1.0] * len(e.token_ids)
        assert e.rewards == other.rewards == [0.0] * len(e.token_ids)
        np.testing.assert_allclose(e.old_logprobs, other.old_logprobs, atol=1e-5)

    rl = cfg("rl", train={"epochs": 1, "lr": 1e-3, "batch_size": 8, "log_every": 1})
    card = rft_update(labelled["samples"], labelled["policy"], tmp_path / "rft", rl_cfg=rl, seed=0,
                      checkpoint_dir=tmp_path / "ckpt", metrics_path=tmp_path / "rft.jsonl")
    assert card["method"] == "rft" and card["train_examples"] == len(mine)
    first = json.loads((tmp_path / "rft.jsonl").read_text().splitlines()[0])
    assert first["ratio_mean"] == pytest.approx(1.0, abs=1e-4) and first["approx_kl"] == pytest.approx(0.0, abs=1e-6)

    rows = read_parquet(labelled["samples"], SAMPLES).to_pylist()
    for r in rows:
        r["correct"] = False
    write_parquet(pa.Table.from_pylist(rows, schema=SAMPLES), tmp_path / "wrong.parquet", SAMPLES)
    with pytest.raises(DataError, match=r"wrong.parquet: no correct sample to fine-tune on"):
        rft_update(tmp_path / "wrong.parquet", labelled["policy"], tmp_path / "none", rl_cfg=rl, seed=0,
                   checkpoint_dir=tmp_path / "c2", metrics_path=tmp_path / "none.jsonl")


def test_sft_gold_takes_the_optimizer_steps_of_the_rl_update_it_is_compared_with(labelled, demo_task, tmp_path):
    """With match_labels, sft_gold trains exactly as many optimizer steps as the RL update on those labels,
    whatever the number of gold solutions (they are cycled)."""
    from rlmec_core.stages.rl import sft_gold_update

    rl = cfg("rl", train={"epochs": 2, "lr": 1e-3, "batch_size": 8, "log_every": 1, "checkpoint_every": 0})
    rl_card = rl_update(labelled["labels"], labelled["policy"], tmp_path / "rlmec", rl_cfg=rl, seed=0,
                        checkpoint_dir=tmp_path / "c1", metrics_path=tmp_path / "rl.jsonl")
    n = labelled["metrics"]["labelled"]
    assert rl_card["steps"] == 2 * math.ceil(n / 8)
    for problems in (5, n, 3 * n):  # fewer, as many and more gold solutions than labelled samples
        card = sft_gold_update(demo_task["train"], labelled["policy"], tmp_path / f"gold{problems}",
                               draw={"first": 0, "problems": problems}, adapter_name="arith",
                               prompt_template="Question: {question}\nAnswer:\n", train_cfg=rl["train"], seed=0,
                               checkpoint_dir=tmp_path / f"c{problems}", metrics_path=tmp_path / f"g{problems}.jsonl",
                               match_labels=labelled["dir"] / "metrics.json")
        assert card["steps"] == rl_card["steps"], problems
        assert card["train_examples"] == problems and card["matched_labels"].endswith("metrics.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match=r"bad.json: no positive 'labelled' count"):
        sft_gold_update(demo_task["train"], labelled["policy"], tmp_path / "bad", draw={"first": 0, "problems": 5},
                        adapter_name="arith", prompt_template=None, train_cfg=rl["train"], seed=0,
                        checkpoint_dir=tmp_path / "cb", metrics_path=tmp_path / "b.jsonl", match_labels=tmp_path / "bad.json")
