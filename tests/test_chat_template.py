"""Chat templates (config ``task.chat_template``): every stage encodes a policy prompt the same way.

The prompt ids a policy is trained on (SFT, sft_gold, DPO, the RL labels) must be exactly the ids it was
sampled and evaluated with; all of them go through ``rlmec_core.prompting.encode_prompts``. These tests
use a tiny tokenizer that carries a chat template, as an instruct model's does.
"""

from __future__ import annotations

import pytest

from rlmec_core.errors import ConfigError
from rlmec_core.prompting import TINY_CHAT_TEMPLATE, encode_prompts, render_chat
from rlmec_core.tasks import get_adapter

QUESTIONS = ["Tom has 3 apples and buys 4 more. How many apples?", "What is 12 - 5?"]


@pytest.fixture(scope="module")
def chat_tokenizer():
    from rlmec_core.models.tiny import train_tokenizer

    corpus = [f"Question: {q}\nAnswer:\n<|user|>\n<|assistant|>\nThe answer is 7" for q in QUESTIONS] * 20
    tok = train_tokenizer(corpus, vocab_size=300, model_max_length=256)
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


def _naive_chat_ids(tok, prompt: str) -> list[int]:
    """The twin of ``encode_prompts(chat_template=True)``: the template written out by hand."""
    text = f"{tok.bos_token}<|user|>\n{prompt}\n<|assistant|>\n"
    return tok(text, add_special_tokens=False)["input_ids"]


def test_chat_prompts_are_the_rendered_user_turn_with_one_bos(chat_tokenizer):
    tok = chat_tokenizer
    adapter = get_adapter("gsm8k", chat_template=True)
    prompts = [adapter.format_prompt(q) for q in QUESTIONS]
    ids = encode_prompts(tok, prompts, chat_template=True)
    assert ids == [_naive_chat_ids(tok, p) for p in prompts]
    for row, p in zip(ids, prompts, strict=True):
        assert row.count(tok.bos_token_id) == 1 and row[0] == tok.bos_token_id  # the template's BOS only
        assert tok.decode(row, skip_special_tokens=True) == f"<|user|>\n{p}\n<|assistant|>\n"
    assert render_chat(tok, prompts[0]).endswith("<|assistant|>\n")  # the generation prompt is there
    plain = encode_prompts(tok, prompts, chat_template=False)
    assert plain == tok(prompts, add_special_tokens=True)["input_ids"] and plain != ids
    assert adapter.encode_prompts(tok, prompts) == ids and get_adapter("gsm8k").encode_prompts(tok, prompts) == plain


def test_a_tokenizer_without_a_template_names_the_config_key(chat_tokenizer):
    from rlmec_core.models.tiny import train_tokenizer

    bare = train_tokenizer(QUESTIONS * 5, vocab_size=280)
    with pytest.raises(ConfigError, match="task.chat_template"):
        encode_prompts(bare, ["x"], chat_template=True)


def test_every_stage_encodes_the_prompt_as_the_sampler_did(chat_tokenizer, monkeypatch):
    """Sampling, SFT (bootstrap, sft_gold), in-training validation and DPO see the same prompt ids."""
    import rlmec_core.sampling as sampling
    from rlmec_core.stages.evaluate import greedy_accuracy_fn
    from rlmec_core.stages.rl import gold_sft_examples
    from rlmec_core.tasks import Problem
    from rlmec_core.train.dpo import pairs_from_samples

    tok = chat_tokenizer
    adapter = get_adapter("gsm8k", chat_template=True)
    problems = [Problem(id=f"p{i}", question=q, reference_solution="3 + 4 = 7\nThe answer is 7", answer="7", task="gsm8k")
                for i, q in enumerate(QUESTIONS)]
    prompts = [adapter.format_prompt(p.question) for p in problems]
    expected = [_naive_chat_ids(tok, p) for p in prompts]

    # the sampler: generate() hands these ids to the backend
    seen: dict[str, list] = {}

    def fake_backend(model_path, tokenizer, prompt_ids, settings, engine):
        seen["sample"] = [list(x) for x in prompt_ids]
        raise RuntimeError("stop here")

    monkeypatch.setattr(sampling, "load_tokenizer", lambda *a, **k: tok)
    monkeypatch.setattr(sampling, "check_model_weights", lambda *a, **k: None)
    monkeypatch.setattr(sampling, "model_context", lambda *a, **k: 256)
    monkeypatch.setattr(sampling, "_generate_hf", fake_backend)
    with pytest.raises(RuntimeError, match="stop here"):
        sampling.generate(".", prompts, sampling.SampleSettings(n=1, temperature=0.0, max_new_tokens=8),
                          sampling.EngineSettings(backend="hf"), chat_template=True)
    assert seen["sample"] == expected

    # SFT of the bootstrap and of sft_gold: the prompt part of each example (labels masked there)
    examples, _ = gold_sft_examples(problems, adapter, tok, max_length=256)
    assert [e.input_ids[: len(x)] for e, x in zip(examples, expected, strict=True)] == expected
    assert all(all(lab == -100 for lab in e.labels[: len(x)]) for e, x in zip(examples, expected, strict=True))

    # in-training validation decodes from the same ids
    captured = {}

    def fake_generate_with_model(model, tokenizer, prompt_ids, settings, **_):
        captured["ids"] = [list(x) for x in prompt_ids]
        return [[sampling.Completion("The answer is 7", [], "stop")] for _ in prompt_ids], 0

    import rlmec_core.stages.evaluate as evaluate

    monkeypatch.setattr(evaluate, "generate_with_model", fake_generate_with_model)
    assert greedy_accuracy_fn(tok, problems, adapter, max_new_tokens=8)(None)["val_accuracy"] == 1.0
    assert captured["ids"] == expected

    # DPO pairs from the samples table's prompt texts
    rows = [{"problem_id": p.id, "prompt": x, "completion": c, "correct": ok, "finish_reason": "stop",
             "token_ids": tok(c, add_special_tokens=False)["input_ids"]}
            for p, x in zip(problems, prompts, strict=True)
            for c, ok in (("The answer is 7", True), ("The answer is 8", False))]
    pairs = pairs_from_samples(rows, tok, chat_template=True)
    assert [p.prompt_ids for p in pairs] == expected
