"""Tests of rlmec_core.logprobs.token_logprobs against the full log_softmax on a tiny LLaMA model."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from naive import token_logprobs_full
from rlmec_core.logprobs import token_logprobs

VOCAB = 97


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def _padded_batch(side: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[list[int]]]:
    """Three sequences (prompt + response) of different lengths, padded on ``side`` with id 0."""
    g = torch.Generator().manual_seed(seed)
    lengths, prompt_lengths = [11, 6, 9], [4, 2, 3]
    T = max(lengths)
    seqs = [torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in lengths]
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    attn = torch.zeros(len(seqs), T, dtype=torch.long)
    target = torch.zeros(len(seqs), T, dtype=torch.bool)
    for b, (seq, p) in enumerate(zip(seqs, prompt_lengths)):
        start = 0 if side == "right" else T - len(seq)
        ids[b, start : start + len(seq)] = torch.tensor(seq)
        attn[b, start : start + len(seq)] = 1
        target[b, start + p : start + len(seq)] = True
    return ids, attn, target, seqs


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("chunk_size", [1, 5, 1024])
def test_matches_full_log_softmax(model: LlamaForCausalLM, side: str, chunk_size: int) -> None:
    ids, attn, target, _ = _padded_batch(side)
    with torch.no_grad():
        got = token_logprobs(model, ids, attn, target, chunk_size=chunk_size)
        ref = token_logprobs_full(model, ids, attn, target)
    assert got.shape == ids.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert torch.all(got[~target] == 0)
    assert torch.all(got[target] < 0)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("checkpoint_chunks", [True, False])
def test_gradients_match_full_log_softmax(model: LlamaForCausalLM, side: str, checkpoint_chunks: bool) -> None:
    ids, attn, target, _ = _padded_batch(side, seed=1)
    weights = torch.randn(ids.shape, generator=torch.Generator().manual_seed(3))
    grads = []
    for fn in (
        lambda: token_logprobs(model, ids, attn, target, chunk_size=4, checkpoint_chunks=checkpoint_chunks),
        lambda: token_logprobs_full(model, ids, attn, target),
    ):
        model.zero_grad()
        (fn() * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in grads[1].items():
        torch.testing.assert_close(grads[0][name], grad, atol=1e-5, rtol=1e-4, msg=name)
    model.zero_grad()


def test_padding_does_not_change_the_values(model: LlamaForCausalLM) -> None:
    """A left- or right-padded row gives the log-probs of the same sequence alone (position ids)."""
    left = _padded_batch("left")
    right = _padded_batch("right")
    with torch.no_grad():
        out_left = token_logprobs(model, *left[:3])
        out_right = token_logprobs(model, *right[:3])
        for b, seq in enumerate(left[3]):
            alone = torch.tensor([seq])
            full = torch.ones_like(alone, dtype=torch.bool)
            ref = token_logprobs(model, alone, full, full)[0]
            n = len(seq)
            torch.testing.assert_close(out_right[b, :n], torch.where(right[2][b, :n], ref, 0.0), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out_left[b, -n:], torch.where(left[2][b, -n:], ref, 0.0), atol=1e-5, rtol=1e-5)


def test_first_token_has_no_prefix(model: LlamaForCausalLM) -> None:
    ids, attn, _, _ = _padded_batch("left")
    with torch.no_grad():
        out = token_logprobs(model, ids, attn, attn.bool())
    assert torch.all(out[:, 0] == 0)
    first_real = attn.argmax(dim=1)
    assert torch.all(out[torch.arange(3), first_real] == 0)  # the first real token of a left-padded row
    assert torch.all(out[attn.bool() & (torch.arange(ids.shape[1]) > first_real[:, None])] < 0)


def test_empty_target_mask(model: LlamaForCausalLM) -> None:
    ids, attn, target, _ = _padded_batch("right")
    out = token_logprobs(model, ids, attn, torch.zeros_like(target))
    assert torch.all(out == 0) and out.shape == ids.shape


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ids, a, t: (ids.float(), a, t), "input_ids must hold integer"),
        (lambda ids, a, t: (ids[0], a, t), "input_ids must be a 2-D"),
        (lambda ids, a, t: (ids[:, :0], a[:, :0], t[:, :0]), "input_ids is empty"),
        (lambda ids, a, t: (ids.index_fill(1, torch.tensor([0]), VOCAB), a, t), r"input_ids must lie in \[0, 97\)"),
        (lambda ids, a, t: (ids, a[:, :-1], t), "attention_mask has shape"),
        (lambda ids, a, t: (ids, a, t[:-1]), "target_mask has shape"),
        (lambda ids, a, t: (ids, a * 2, t), "attention_mask must hold only 0 and 1"),
        (lambda ids, a, t: (ids, a.float(), t), "attention_mask must be bool or integer"),
        (lambda ids, a, t: (ids, a, torch.ones_like(t)), "target_mask marks positions where attention_mask is 0"),
    ],
)
def test_bad_inputs_name_the_argument(model: LlamaForCausalLM, change, message: str) -> None:  # type: ignore[no-untyped-def]
    ids, attn, target, _ = _padded_batch("right")
    with pytest.raises(ValueError, match=message):
        token_logprobs(model, *change(ids, attn, target))
    with pytest.raises(ValueError, match="chunk_size"):
        token_logprobs(model, ids, attn, target, chunk_size=0)


class _Wrapped(torch.nn.Module):
    """Stands in for DDP/FSDP/DeepSpeed: the model sits in ``.module``, the forward goes through the wrapper."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.calls = 0

    def forward(self, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.module(**kwargs)


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_wrapped_model_goes_through_its_wrapper_and_matches(model: LlamaForCausalLM, side: str) -> None:
    ids, attn, target, _ = _padded_batch(side)
    wrapped = _Wrapped(model)
    got = token_logprobs(wrapped, ids, attn, target, chunk_size=4)
    ref = token_logprobs_full(model, ids, attn, target)
    assert wrapped.calls == 1  # the wrapper's forward ran (gradient sync / parameter gathering happen there)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    got.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    token_logprobs_full(model, ids, attn, target).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)
    model.zero_grad()
    bad = ids.clone()
    bad[0, 0] = VOCAB
    with pytest.raises(ValueError, match="vocabulary"):
        token_logprobs(wrapped, bad, attn, target)
