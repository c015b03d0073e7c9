"""GPU check (issue 8): the demo models' training and sampling paths on one CUDA device.

Builds the demo tokenizer and tiny LLaMA policy (config defaults) from generated demo problems, then on
the GPU:

1. RL: ``--steps`` optimizer steps of the RLMEC loss (``rlmec_core.train.rl``) through the shared accelerate
   loop in bf16 mixed precision (labels made by the model itself: its log-probs as ``old_logprobs``,
   seeded random token rewards, the reference solution as the imitation target);
2. GRM: ``--steps`` optimizer steps of the GRM SFT loss (``rlmec_core.train.sft``) in bf16 on
   (two-step prompt, rewrite) pairs;
3. sampling with the transformers backend (``rlmec_core.sampling.generate``, bf16) on ``--prompts`` prompts
   x 4 samples;

each with its throughput (tokens/s) and peak GPU memory (``torch.cuda.max_memory_allocated``). The same
three at a larger width (``--wide``, a ~100M-parameter LLaMA of the same vocabulary) show the GPU doing
real work. Prints a table and writes JSON (``--out``). Run it with ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from rlmec_core.models.tiny import TinyArch, build_tiny_llama, train_tokenizer
from rlmec_core.sampling import EngineSettings, SampleSettings, generate
from rlmec_core.stages.policy import write_model_dir
from rlmec_core.tasks.arith import ArithSpec, generate_problems
from rlmec_core.train.loop import TrainSettings, train
from rlmec_core.train.rl import RLCollator, RLExample, count_rl_tokens, rl_batch_loss
from rlmec_core.train.sft import SFTCollator, encode_sft_examples, sft_loss

PROMPT = "Question: {question}\nAnswer:\n"


def _settings(steps: int, batch: int, n_examples: int) -> TrainSettings:
    return TrainSettings(epochs=steps * batch / n_examples, lr=1e-3, batch_size=batch, mixed_precision="bf16",
                         checkpoint_every=0, log_every=max(steps // 4, 1), warmup_ratio=0.0)


CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def _timed(fn):
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    if CUDA:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0, (torch.cuda.max_memory_allocated() / 2**20 if CUDA else float("nan"))


def check(name: str, arch: TinyArch, problems, tokenizer, work: Path, steps: int, batch: int, n_prompts: int) -> dict:
    model = build_tiny_llama(tokenizer, arch, seed=0)
    params = sum(p.numel() for p in model.parameters())
    model_dir = work / name
    write_model_dir(model_dir, model, tokenizer, {"stage": "gpu_check", "prompt_template": PROMPT})
    rng = random.Random(0)
    prompts = [PROMPT.format(question=p.question) for p in problems]
    n_examples = steps * batch

    # 1. RL steps (bf16 autocast through accelerate)
    model = model.to(DEVICE)
    examples = []
    with torch.no_grad():
        for p, prompt in zip(problems[:n_examples], prompts, strict=False):
            pid = tokenizer(prompt)["input_ids"]
            y = tokenizer(p.reference_solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            logits = model(torch.tensor([pid + y], device=DEVICE)).logits[0, len(pid) - 1 : -1].float()
            old = logits.log_softmax(-1).gather(-1, torch.tensor(y, device=DEVICE)[:, None])[:, 0].tolist()
            examples.append(RLExample(pid, y, [rng.uniform(-0.2, 0.3) for _ in y], old, y, [1.0] * len(y)))
    import functools

    loss_fn = functools.partial(rl_batch_loss, clip_eps=0.3, imitation_coef=1.0, ratio_form="published")
    res, secs, mem = _timed(lambda: train(model, examples, RLCollator(tokenizer.pad_token_id), loss_fn,
                                          _settings(steps, batch, len(examples)), checkpoint_dir=work / f"{name}-rl-ck",
                                          count_tokens=count_rl_tokens, description=f"{name}-rl"))
    rl = {"steps": res.steps, "tokens": res.tokens_seen, "seconds": secs, "tokens_per_s": res.tokens_seen / secs,
          "peak_mem_mib": mem, "final_loss": res.final_loss}

    # 2. GRM SFT steps
    grm_prompts = [f"Problem: {p.question}\nReference:\n{p.reference_solution}\nPrediction:\n{p.reference_solution}\n"
                   "Correct prediction:\n" for p in problems[:n_examples]]
    sft, _ = encode_sft_examples(tokenizer, grm_prompts, [p.reference_solution for p in problems[:n_examples]],
                                 max_length=arch.max_position_embeddings)
    res, secs, mem = _timed(lambda: train(model, sft, SFTCollator(tokenizer.pad_token_id), sft_loss,
                                          _settings(steps, batch, len(sft)), checkpoint_dir=work / f"{name}-grm-ck",
                                          description=f"{name}-grm"))
    grm = {"steps": res.steps, "tokens": res.tokens_seen, "seconds": secs, "tokens_per_s": res.tokens_seen / secs,
           "peak_mem_mib": mem, "final_loss": res.final_loss}
    model = None  # free the GPU memory before sampling
    if CUDA:
        torch.cuda.empty_cache()

    # 3. sampling with the transformers backend (bf16)
    settings = SampleSettings(n=4, temperature=0.7, top_p=0.95, max_new_tokens=96, seed=0)
    engine = EngineSettings(backend="hf", dtype="bfloat16" if CUDA else "float32", hf_batch_size=256)
    generate(model_dir, prompts[:16], settings, engine)  # warm-up (CUDA context, kernels)
    out, secs, mem = _timed(lambda: generate(model_dir, prompts[:n_prompts], settings, engine))
    sample = {"prompts": n_prompts, "samples": n_prompts * 4, "generated_tokens": out.generated_tokens,
              "seconds": secs, "tokens_per_s": out.generated_tokens / secs, "peak_mem_mib": mem}
    return {"parameters": params, "arch": arch.__dict__, "rl": rl, "grm": grm, "sample": sample}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--no-wide", dest="wide", action="store_false", help="skip the ~100M-parameter model")
    ap.add_argument("--out", default="benchmarks/out/gpu_check.json")
    ap.add_argument("--allow-cpu", action="store_true", help="run on the CPU (checks the script; figures meaningless)")
    args = ap.parse_args(argv)
    if not CUDA and not args.allow_cpu:
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    problems = generate_problems(max(args.steps * args.batch, args.prompts) + 64, 7, ArithSpec(), split="train")
    tokenizer = train_tokenizer([PROMPT.format(question=p.question) + p.reference_solution for p in problems],
                                384, model_max_length=384)
    report = {"device": torch.cuda.get_device_name(0) if CUDA else "cpu", "torch": torch.__version__,
              "bf16_supported": CUDA and torch.cuda.is_bf16_supported(), "runs": {}}
    archs = {"demo": TinyArch(max_position_embeddings=384)}
    if args.wide:
        archs["wide"] = TinyArch(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                                 num_key_value_heads=12, max_position_embeddings=384)
    with tempfile.TemporaryDirectory() as tmp:
        for name, arch in archs.items():
            report["runs"][name] = check(name, arch, problems, tokenizer, Path(tmp), args.steps, args.batch, args.prompts)
    print(f"\n{report['device']}, torch {report['torch']}, bf16 {report['bf16_supported']}")
    print(f"{'model':6} {'params':>8} {'stage':7} {'tokens/s':>10} {'peak MiB':>9} {'seconds':>8}")
    for name, r in report["runs"].items():
        for stage in ("rl", "grm", "sample"):
            s = r[stage]
            print(f"{name:6} {r['parameters'] / 1e6:7.1f}M {stage:7} {s['tokens_per_s']:10,.0f} {s['peak_mem_mib']:9,.0f} "
                  f"{s['seconds']:8.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
