"""GRM token probabilities through vLLM's prompt log-probs agree with the transformers path (issue 18).

The policy bootstrapped on the demo task stands in for a GRM (any causal LM will do for scoring): it
scores the gold solutions of demo problems (mostly confident tokens) and corrupted copies of them
(digits changed: unlikely tokens), so the probabilities spread over the whole of [0, 1] and the flag
``p_t < 0.5`` is not trivially the same.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlmec_core.sampling import EngineSettings, load_tokenizer, model_context, open_vllm, vllm_available
from rlmec_core.scoring import score_model, score_targets, score_targets_vllm
from rlmec_core.stages.data import load_problems
from rlmec_core.tasks import get_adapter

pytestmark = pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")


def corrupt(text: str, rng: np.random.Generator) -> str:
    digits = [i for i, c in enumerate(text) if c.isdigit()]
    out = list(text)
    for i in rng.choice(digits, size=min(3, len(digits)), replace=False) if digits else []:
        out[i] = str((int(out[i]) + int(rng.integers(1, 10))) % 10)
    return "".join(out)


@pytest.fixture(scope="module")
def pairs(demo_policy, demo_task):
    tok = load_tokenizer(demo_policy)
    adapter = get_adapter("arith")
    rng = np.random.default_rng(0)
    problems = load_problems(demo_task["validation"])[:60]
    prompts = tok([adapter.format_prompt(p.question) for p in problems])["input_ids"]
    prompt_ids, target_ids = [], []
    for p, ids in zip(problems, prompts, strict=True):
        for text in (p.reference_solution, corrupt(p.reference_solution, rng)):
            prompt_ids.append(ids)
            target_ids.append(tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    ctx = model_context(demo_policy, EngineSettings())
    # edge cases: a pair that fills the context exactly, a one-token target, an empty target
    filler = target_ids[0] * (ctx // len(target_ids[0]) + 1)
    prompt_ids += [prompts[0], prompts[1], prompts[2]]
    target_ids += [filler[: ctx - len(prompts[0])], [target_ids[2][0]], []]
    return prompt_ids, target_ids, ctx


def test_vllm_prompt_logprobs_agree_with_transformers(demo_policy, pairs, tmp_path):
    from transformers import AutoModelForCausalLM

    prompt_ids, target_ids, ctx = pairs
    assert len(prompt_ids[-3]) + len(target_ids[-3]) == ctx
    model = AutoModelForCausalLM.from_pretrained(str(demo_policy))
    hf = score_targets(model, prompt_ids, target_ids, pad_token_id=0, batch_tokens=4096)
    llm = open_vllm(demo_policy, EngineSettings(backend="vllm"), scoring=True)
    vl = score_targets_vllm(llm, prompt_ids, target_ids)
    again = score_targets_vllm(llm, prompt_ids[::-1], target_ids[::-1])[::-1]  # other order, warm prefix cache
    del llm
    assert [len(v) for v in vl] == [len(t) for t in target_ids] and len(vl[-1]) == 0
    p_hf, p_vl = (np.exp(np.concatenate(x).astype(np.float64)) for x in (hf, vl))
    flags_same = float(np.mean((p_hf < 0.5) == (p_vl < 0.5)))
    max_diff = float(np.abs(p_hf - p_vl).max())
    report = {"tokens": int(p_hf.size), "flagged_hf": int((p_hf < 0.5).sum()), "same_flags": flags_same,
              "max_abs_diff_p": max_diff}
    print(json.dumps(report))
    assert 0.1 < report["flagged_hf"] / report["tokens"] < 0.9, report  # the flags are not trivially equal
    assert flags_same >= 0.999, report
    assert max_diff < 1e-4, report
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate(vl))  # batching does not change a score


def test_score_model_loads_either_backend_and_rejects_others(demo_policy, pairs):
    prompt_ids, target_ids, _ = pairs
    engine = EngineSettings(backend="hf")
    vl, seconds = score_model(demo_policy, prompt_ids[:6], target_ids[:6], engine=engine, backend="vllm")
    hf, _ = score_model(demo_policy, prompt_ids[:6], target_ids[:6], engine=engine, backend="hf", batch_tokens=512)
    assert seconds > 0
    for a, b in zip(vl, hf, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="backend must be"):
        score_model(demo_policy, prompt_ids[:1], target_ids[:1], engine=engine, backend="auto")
    with pytest.raises(ValueError, match="2 prompts but 1 targets"):
        score_targets_vllm(None, prompt_ids[:2], target_ids[:1])
