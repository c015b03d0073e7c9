"""Probe: where does a tiny policy converge on a demo task? (how the demo's task and model were chosen)

Trains a tiny LLaMA from scratch on a generated arithmetic task with a plain loop (AdamW, cosine
schedule, batch 32: the bootstrap's optimisation without its checkpoints) and prints, every
``--eval-every`` epochs, greedy accuracy on the validation split and on the first 300 training problems
(a train/validation gap means memorisation), and at the end on the test split. One JSON line per
evaluation on stdout. docs/demo.md quotes the runs that chose config/config.yaml.

    .venv/bin/python benchmarks/probe_tasks.py --epochs 16                                    # the old demo task
    .venv/bin/python benchmarks/probe_tasks.py --arch '{"hidden_size": 64, "intermediate_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2}' \\
        --mix '{"operators": ["+", "-", "*"], "mul_max": 99, "max_value": 9999, "operand_max": 99}' \\
        --share 0.6 --epochs 36 --eval-every 4 --n-val 500 --n-test 1000                      # the demo's

``--spec`` and ``--mix`` are ``ArithSpec`` keys as JSON (``--mix``: a second kind of problem taking
``--share`` of every split, as config ``task.synth.hard`` does). The pipeline's own bootstrap logs the same
curve (``val_accuracy`` in results/<run>/train_logs/policy_sft.jsonl).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from rlmec_core.models.tiny import TinyArch, build_tiny_llama, train_tokenizer  # noqa: E402
from rlmec_core.sampling import SampleSettings, generate_with_model  # noqa: E402
from rlmec_core.tasks import get_adapter  # noqa: E402
from rlmec_core.tasks.arith import ArithSpec, Tier, generate_splits  # noqa: E402
from rlmec_core.train.sft import SFTCollator, encode_sft_examples, sft_loss  # noqa: E402

DEFAULT_ARCH = {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 3, "num_attention_heads": 4,
                "num_key_value_heads": 4}


def spec_from(text: str) -> ArithSpec:
    kwargs = json.loads(text)
    if "operators" in kwargs:
        kwargs["operators"] = tuple(kwargs["operators"])
    return ArithSpec(**kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="{}", help="ArithSpec keys of the (main) task, JSON")
    parser.add_argument("--mix", default="", help="ArithSpec keys of a second kind of problem, JSON")
    parser.add_argument("--share", type=float, default=0.5, help="share of every split drawn from --mix")
    parser.add_argument("--arch", default="{}", help="TinyArch keys overriding the old demo model's, JSON")
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--n-val", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--eval-every", type=float, default=1.0, help="epochs between evaluations")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and batch order")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tier = Tier(args.share, spec_from(args.mix)) if args.mix else None
    splits = generate_splits({"test": args.n_test, "validation": args.n_val, "train": args.n_train}, 0,
                             spec_from(args.spec), tier=tier)
    adapter = get_adapter("arith", "Question: {question}\nAnswer:\n")
    train = splits["train"]
    prompts = [adapter.format_prompt(p.question) for p in train]
    tok = train_tokenizer(prompts + [p.reference_solution for p in train], vocab_size=384, model_max_length=384)
    model = build_tiny_llama(tok, TinyArch(max_position_embeddings=384, **{**DEFAULT_ARCH, **json.loads(args.arch)}),
                             seed=args.seed)
    examples, _ = encode_sft_examples(tok, prompts, [p.reference_solution for p in train], max_length=384)
    collate = SFTCollator(tok.pad_token_id)
    per_epoch = math.ceil(len(examples) / args.batch_size)
    total = math.ceil(args.epochs * per_epoch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    from transformers import get_scheduler

    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=int(0.03 * total), num_training_steps=total)
    greedy = SampleSettings(n=1, temperature=0.0, max_new_tokens=96)

    def accuracy(problems) -> float:
        model.eval()
        ids = tok([adapter.format_prompt(p.question) for p in problems])["input_ids"]
        completions, _ = generate_with_model(model, tok, ids, greedy, batch_size=128, progress=False)
        model.train()
        return sum(adapter.is_correct(c[0].text, p.answer) for p, c in zip(problems, completions, strict=True)) / len(problems)

    print(json.dumps({"tag": args.tag, "parameters": sum(p.numel() for p in model.parameters()), **vars(args)}), flush=True)
    t0, step, epoch = time.monotonic(), 0, 0
    every = max(1, int(round(args.eval_every * per_epoch)))
    model.train()
    while step < total:
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(args.seed + epoch)).tolist()
        for start in range(0, len(order), args.batch_size):
            if step >= total:
                break
            loss, _ = sft_loss(model, collate([examples[i] for i in order[start: start + args.batch_size]]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step % every == 0 or step == total:
                record = {"tag": args.tag, "epoch": round(step / per_epoch, 2), "loss": round(float(loss.detach()), 4),
                          "train_seconds": round(time.monotonic() - t0, 1), "validation": accuracy(splits["validation"]),
                          "train_first_300": accuracy(train[:300])}
                if step == total:
                    record["test"] = accuracy(splits["test"])
                print(json.dumps(record), flush=True)
        epoch += 1


if __name__ == "__main__":
    main()
