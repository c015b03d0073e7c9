"""Build the demo's tokenizer and tiny LLaMA-architecture policy locally (no model hub).

The tokenizer is a byte-level BPE trained on the task's own text with every digit its own token (as in
LLaMA), so arithmetic is learnable and an edit to one digit is an edit to one token. It is saved as a
standard ``PreTrainedTokenizerFast`` directory that transformers and vLLM both load.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"

# Head sizes vLLM's attention kernels accept (its CPU backend lists exactly these; GPU backends more).
VLLM_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256)


@dataclass(frozen=True)
class TinyArch:
    """Shape of the tiny LLaMA policy (config ``policy.bootstrap.arch``; same defaults as the schema)."""

    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        where = "policy.bootstrap.arch"
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"{where}: hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"{where}: num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        head_dim = self.hidden_size // self.num_attention_heads
        if head_dim not in VLLM_HEAD_SIZES:
            raise ValueError(
                f"{where}: head size hidden_size / num_attention_heads = {head_dim} is not one that vLLM's "
                f"attention kernels support {VLLM_HEAD_SIZES}; change hidden_size or num_attention_heads"
            )


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, *, model_max_length: int = 256) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts``: digits split one per token, ``<s>`` prepended.

    Special tokens: ``<pad>`` (id 0), ``<s>`` (1), ``</s>`` (2), ``<unk>`` (3). Deterministic for the
    same texts in the same order.
    """
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=model_max_length,
        padding_side="right",
    )


def build_tiny_llama(tokenizer: PreTrainedTokenizerFast, arch: TinyArch, *, seed: int) -> LlamaForCausalLM:
    """A freshly initialised LLaMA causal LM sized by ``arch`` for ``tokenizer``'s vocabulary (float32)."""
    import torch

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        max_position_embeddings=arch.max_position_embeddings,
        rope_theta=arch.rope_theta,
        tie_word_embeddings=arch.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model
