"""Text generation behind one function with two backends: vLLM (default when importable) and
transformers ``generate`` (the fallback, and the reference for exactness).

Both backends take the same token-id prompts (tokenized once here, with the model's own tokenizer), so
they see identical inputs, and both return ``Completion`` objects with the same fields; the stage code
turns them into rows of ``rlmec_core.schemas.SAMPLES``.

vLLM notes: it may spawn worker processes (always on GPUs), so any script that calls ``generate`` with
the vLLM backend must guard its entry point with ``if __name__ == "__main__":``. On a CPU it reserves
``gpu_memory_utilization`` x RAM for its KV cache: keep that small (about 0.2) there; see also
``CPU_VLLM_ENV``.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rlmec_core.errors import DataError
from rlmec_core.prompting import encode_prompts

BACKENDS = ("auto", "vllm", "hf")

# Environment defaults for vLLM on a CPU (an explicit setting in the environment wins).
CPU_VLLM_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


@dataclass(frozen=True)
class SampleSettings:
    """What to generate (config ``sampling`` / ``evaluate``)."""

    n: int = 1  # completions per prompt
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0  # request i is seeded with seed + i (vLLM); batch b with seed + first index (hf)
    stop: tuple[str, ...] = ()  # extra stop strings (EOS always stops)
    ignore_eos: bool = False  # benchmarks only: always generate max_new_tokens

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class EngineSettings:
    """How to run the model (config ``engine``)."""

    backend: str = "auto"  # auto | vllm | hf
    dtype: str = "auto"  # auto: float32 on CPU, bfloat16 on GPU; or float32 | bfloat16 | float16
    hf_batch_size: int = 64  # prompts per transformers generate call
    gpu_memory_utilization: float = 0.2  # vLLM; on a CPU this fraction of RAM is reserved for the KV cache
    tensor_parallel_size: int = 1  # vLLM
    max_model_len: int | None = None  # vLLM; default: the model's max_position_embeddings
    enforce_eager: bool | None = None  # vLLM; default: True on CPU (compilation costs more than it saves)
    trust_remote_code: bool = False
    score_backend: str = "auto"  # GRM token probabilities: auto (= backend) | vllm | hf
    extra_vllm_args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.score_backend not in BACKENDS:
            raise ValueError(f"score_backend must be one of {BACKENDS}, got {self.score_backend!r}")
        if self.hf_batch_size < 1:
            raise ValueError(f"hf_batch_size must be >= 1, got {self.hf_batch_size}")


@dataclass(frozen=True)
class Completion:
    """One generated continuation of a prompt."""

    text: str  # decoded without special tokens, cut before a stop string
    token_ids: list[int]  # generated ids, trailing EOS removed
    finish_reason: str  # "stop" (EOS or a stop string), "length" (max_new_tokens) or "prompt_too_long"


@dataclass(frozen=True)
class GenerationResult:
    completions: list[list[Completion]]  # [num_prompts][n]
    backend: str
    load_seconds: float
    generate_seconds: float
    skipped: int = 0  # prompts too long for the context: given empty "prompt_too_long" completions

    @property
    def generated_tokens(self) -> int:
        return sum(len(c.token_ids) for row in self.completions for c in row)


def vllm_available() -> bool:
    """Whether vLLM can be imported (without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(name: str) -> str:
    """'auto' -> 'vllm' when vLLM is installed, else 'hf'; an explicit 'vllm' must be installed."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        return "vllm" if vllm_available() else "hf"
    if name == "vllm" and not vllm_available():
        raise RuntimeError("engine.backend is 'vllm' but vLLM is not installed (pip install -e '.[cpu]' or '.[gpu]')")
    return name


def resolve_score_backend(engine: EngineSettings) -> str:
    """Backend of teacher-forced GRM scoring: ``engine.score_backend``, where 'auto' follows ``engine.backend``."""
    return resolve_backend(engine.backend if engine.score_backend == "auto" else engine.score_backend)


def resolve_dtype(dtype: str) -> str:
    import torch

    if dtype != "auto":
        return dtype
    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def load_tokenizer(model_path: str | os.PathLike[str], *, trust_remote_code: bool = False):
    """The model's tokenizer, with a pad token (EOS is used when the tokenizer has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_path), trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise DataError(f"{model_path}: tokenizer has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    return tok


def check_model_weights(model_path: str | os.PathLike[str]) -> None:
    """Raise ``DataError`` when a local model directory holds no safetensors weights (only pickled
    ``*.bin``/``*.pt`` files, which are never loaded, or none at all). Hub names (no such directory) pass."""
    path = Path(model_path)
    if not path.is_dir():
        return
    if any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").exists():
        return
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
    if pickled:
        raise DataError(f"{path}: no safetensors weights, only pickled files {pickled}, which are not loaded "
                        "(untrusted pickles can run code): convert them with save_pretrained(safe_serialization=True)")
    raise DataError(f"{path}: no model weights (model.safetensors) in this directory")


def _max_token_chars(tokenizer) -> int:
    """An upper bound on the characters one token covers (the longest vocabulary entry, at least 1)."""
    return max((len(t) for t in tokenizer.get_vocab()), default=1) or 1


def model_context(model_path: Path, engine: EngineSettings) -> int | None:
    """Positions the engine gives a prompt plus its completion: ``engine.max_model_len``, else the model
    config's ``max_position_embeddings`` (None when the config has none)."""
    from transformers import AutoConfig

    if engine.max_model_len:
        return int(engine.max_model_len)
    cfg = AutoConfig.from_pretrained(str(model_path), trust_remote_code=engine.trust_remote_code)
    return getattr(cfg, "max_position_embeddings", None)


PROMPT_TOO_LONG = "prompt_too_long"


def _skip_too_long(prompt_ids: list[list[int]], max_new_tokens: int, context: int | None) -> set[int]:
    """Indices of prompts that leave no room for ``max_new_tokens`` in a ``context``-token window."""
    if context is None:
        return set()
    return {i for i, ids in enumerate(prompt_ids) if len(ids) + max_new_tokens > context}


def _placeholder(n: int) -> list[Completion]:
    return [Completion(text="", token_ids=[], finish_reason=PROMPT_TOO_LONG) for _ in range(n)]


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def generate(
    model_path: str | os.PathLike[str],
    prompts: Sequence[str],
    settings: SampleSettings,
    engine: EngineSettings = EngineSettings(),
    *,
    chat_template: bool = False,
) -> GenerationResult:
    """Generate ``settings.n`` completions for every prompt with the chosen backend.

    Prompts are tokenized here with the model's tokenizer (``rlmec_core.prompting.encode_prompts``: special
    tokens as the tokenizer defines them, or the chat template when ``chat_template``) and handed to either
    backend as token ids. A prompt that leaves no room for
    ``max_new_tokens`` in the model's context is not generated from: it gets ``n`` empty completions
    with ``finish_reason == "prompt_too_long"`` (counted in ``GenerationResult.skipped``), never a crash.
    """
    model_path = Path(model_path)
    if not model_path.exists():
        raise FileNotFoundError(f"model directory {model_path} does not exist")
    check_model_weights(model_path)
    backend = resolve_backend(engine.backend)
    tokenizer = load_tokenizer(model_path, trust_remote_code=engine.trust_remote_code)
    # A prompt with more characters than the context could hold tokens is skipped without tokenizing it
    # (a 10 MB prompt costs the tokenizer tens of seconds, to be skipped anyway).
    context = model_context(model_path, engine)
    char_cap = context * _max_token_chars(tokenizer) if context else None
    huge = {i for i, p in enumerate(prompts) if char_cap is not None and len(p) > char_cap}
    prompt_ids = encode_prompts(tokenizer, [p if i not in huge else "" for i, p in enumerate(prompts)],
                                chat_template=chat_template)
    for i in huge:  # certainly longer than the context: _skip_too_long skips it
        prompt_ids[i] = [tokenizer.pad_token_id] * (context + 1)
    if backend == "vllm":
        return _generate_vllm(model_path, tokenizer, prompt_ids, settings, engine)
    return _generate_hf(model_path, tokenizer, prompt_ids, settings, engine)


def _finish(tokenizer, ids: list[int], hit_eos: bool, settings: SampleSettings) -> Completion:
    eos = tokenizer.eos_token_id
    while ids and ids[-1] == eos and not settings.ignore_eos:
        ids = ids[:-1]
        hit_eos = True
    text = tokenizer.decode(ids, skip_special_tokens=True)
    text, hit_stop = _cut_at_stop(text, settings.stop)
    return Completion(text=text, token_ids=list(ids), finish_reason="stop" if (hit_eos or hit_stop) else "length")


def load_inference_model(model_path: str | os.PathLike[str], engine: EngineSettings):
    """A transformers causal LM for inference (generation, scoring): ``engine.dtype``, safetensors only,
    ``engine.trust_remote_code``, on the GPU when there is one, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=getattr(torch, resolve_dtype(engine.dtype)),
                                                 trust_remote_code=engine.trust_remote_code, use_safetensors=True)
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval()


def _generate_hf(model_path, tokenizer, prompt_ids, settings: SampleSettings, engine: EngineSettings) -> GenerationResult:
    t0 = time.monotonic()
    model = load_inference_model(model_path, engine)
    load_s = time.monotonic() - t0
    t1 = time.monotonic()
    results, skipped = generate_with_model(model, tokenizer, prompt_ids, settings, batch_size=engine.hf_batch_size)
    gen_s = time.monotonic() - t1
    del model
    gc.collect()
    return GenerationResult(results, "hf", load_s, gen_s, skipped=skipped)


def generate_with_model(model, tokenizer, prompt_ids: Sequence[Sequence[int]], settings: SampleSettings, *,
                        batch_size: int = 64, progress: bool = True) -> tuple[list[list[Completion]], int]:
    """``settings.n`` completions of every prompt (token ids) with an already loaded transformers model.

    The model is used as it is (device, dtype, weights; in eval mode for dropout-free decoding): the
    transformers backend loads a model and calls this, and training loops call it on the model they train
    (in-training validation). Prompts that leave no room for ``max_new_tokens`` in the model's
    ``max_position_embeddings`` get ``prompt_too_long`` placeholders. Returns ``(completions, skipped)``.
    """
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    skipped = _skip_too_long(prompt_ids, settings.max_new_tokens, getattr(model.config, "max_position_embeddings", None))
    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    # Longest first, so that the first batch shows the worst-case memory early.
    order = sorted((i for i in range(len(prompt_ids)) if i not in skipped), key=lambda i: -len(prompt_ids[i]))
    results: list[list[Completion]] = [_placeholder(settings.n) for _ in prompt_ids]
    bs = batch_size
    with torch.inference_mode(), tqdm(total=len(order), desc="generate[hf]", mininterval=5.0,
                                      disable=not progress) as bar:
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            width = max(len(prompt_ids[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding: generation continues at the right edge
                ids = prompt_ids[i]
                input_ids[row, width - len(ids):] = torch.tensor(ids)
                mask[row, width - len(ids):] = 1
            torch.manual_seed(settings.seed + idx[0])
            kwargs = dict(
                max_new_tokens=settings.max_new_tokens,
                num_return_sequences=settings.n,
                pad_token_id=pad,
                eos_token_id=eos,
            )
            if settings.greedy:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            else:
                kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)
            if settings.ignore_eos:
                kwargs.update(min_new_tokens=settings.max_new_tokens)
            if settings.stop:
                kwargs.update(stop_strings=list(settings.stop), tokenizer=tokenizer)
            out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), **kwargs)
            new = out[:, width:].cpu().tolist()
            for row, i in enumerate(idx):
                comps = []
                for k in range(settings.n):
                    ids = new[row * settings.n + k]
                    hit_eos = False
                    if eos in ids and not settings.ignore_eos:
                        ids = ids[: ids.index(eos)]
                        hit_eos = True
                    elif not settings.ignore_eos:
                        while ids and ids[-1] == pad:  # a row stopped by a stop string, padded after
                            ids = ids[:-1]
                    comps.append(_finish(tokenizer, ids, hit_eos, settings))
                results[i] = comps
            bar.update(len(idx))
    return results, len(skipped)


def open_vllm(model_path: str | os.PathLike[str], engine: EngineSettings, *, seed: int = 0, scoring: bool = False):
    """A ``vllm.LLM`` for ``model_path`` with the engine settings of config ``engine`` (and the CPU defaults
    below). ``scoring``: an engine for teacher-forced scoring (``rlmec_core.scoring.score_targets_vllm``):
    log-probabilities from the raw logits, whatever ``engine.extra_vllm_args`` says."""
    import torch
    from vllm import LLM

    on_cpu = not torch.cuda.is_available()
    enforce_eager = engine.enforce_eager if engine.enforce_eager is not None else on_cpu
    extra = dict(engine.extra_vllm_args)
    if on_cpu:
        # vLLM's CPU build crashes ("CPU Generator does not use offset") when a seeded request's prefill
        # is split across steps; without chunked prefill every prompt is prefilled in one step.
        extra.setdefault("enable_chunked_prefill", False)
        # Measured on 2 cores (benchmarks/bench_sampling.py): the engine in this process, using every
        # core, starts in ~2.5 s instead of ~18 s and generates ~1.5x faster than the default engine
        # subprocess pinned to one core with the other reserved for the front end.
        for var, value in CPU_VLLM_ENV.items():
            os.environ.setdefault(var, value)
    if scoring:
        extra["logprobs_mode"] = "raw_logprobs"
    return LLM(
        model=str(model_path),
        tokenizer=str(model_path),
        dtype=resolve_dtype(engine.dtype),
        seed=seed,
        gpu_memory_utilization=engine.gpu_memory_utilization,
        tensor_parallel_size=engine.tensor_parallel_size,
        max_model_len=engine.max_model_len,
        enforce_eager=enforce_eager,
        trust_remote_code=engine.trust_remote_code,
        **extra,
    )


def _generate_vllm(model_path, tokenizer, prompt_ids, settings: SampleSettings, engine: EngineSettings) -> GenerationResult:
    from vllm import SamplingParams

    t0 = time.monotonic()
    llm = open_vllm(model_path, engine, seed=settings.seed)
    load_s = time.monotonic() - t0
    skipped = _skip_too_long(prompt_ids, settings.max_new_tokens, llm.llm_engine.model_config.max_model_len)
    todo = [i for i in range(len(prompt_ids)) if i not in skipped]
    params = [
        SamplingParams(
            n=settings.n,
            temperature=settings.temperature,
            top_p=settings.top_p if not settings.greedy else 1.0,
            max_tokens=settings.max_new_tokens,
            seed=settings.seed + i,
            stop=list(settings.stop) or None,
            ignore_eos=settings.ignore_eos,
            skip_special_tokens=True,
            detokenize=bool(settings.stop),  # text is decoded here from the ids; vLLM needs it only for stop strings
        )
        for i in todo
    ]
    t1 = time.monotonic()
    outputs = llm.generate([{"prompt_token_ids": prompt_ids[i]} for i in todo], params, use_tqdm=True) if todo else []
    gen_s = time.monotonic() - t1
    results = [_placeholder(settings.n) for _ in prompt_ids]
    for i, out in zip(todo, outputs, strict=True):
        results[i] = [
            _finish(tokenizer, list(o.token_ids), o.finish_reason == "stop", settings)
            for o in sorted(out.outputs, key=lambda o: o.index)
        ]
    del llm
    gc.collect()
    return GenerationResult(results, "vllm", load_s, gen_s, skipped=len(skipped))


def tokens_per_second(result: GenerationResult) -> float:
    return result.generated_tokens / max(result.generate_seconds, 1e-9)


__all__ = [
    "BACKENDS",
    "Completion",
    "EngineSettings",
    "GenerationResult",
    "SampleSettings",
    "check_model_weights",
    "model_context",
    "open_vllm",
    "generate",
    "generate_with_model",
    "load_inference_model",
    "load_tokenizer",
    "resolve_backend",
    "resolve_dtype",
    "resolve_score_backend",
    "tokens_per_second",
    "vllm_available",
]
