"""The pyarrow schemas of every Parquet artefact, in one place.

Each field carries a ``doc`` metadata entry; ``docs/artifacts.md`` is generated from these schemas.
Readers check files against them (``rlmec_core.io.read_parquet``), writers cast to them
(``rlmec_core.io.write_parquet``), so a drifted column fails loudly with the file's name.
"""

from __future__ import annotations

import pyarrow as pa


def _f(name: str, type_: pa.DataType, doc: str, *, nullable: bool = False, optional: bool = False) -> pa.Field:
    """A documented field; ``optional``: a table may lack the column (read as nulls, see ``io.conform``)."""
    meta = {"doc": doc, **({"optional": "true"} if optional else {})}
    return pa.field(name, type_, nullable=nullable or optional, metadata=meta)


def field_doc(field: pa.Field) -> str:
    """The ``doc`` metadata of a schema field ('' when absent)."""
    meta = field.metadata or {}
    return meta.get(b"doc", b"").decode("utf-8")


PROBLEMS = pa.schema(
    [
        _f("id", pa.string(), "Problem id, unique within the split (e.g. `arith-train-000017`)."),
        _f("question", pa.string(), "The problem text shown to the policy (never empty)."),
        _f(
            "reference_solution",
            pa.string(),
            "Gold step-by-step solution, one step per line, last line `The answer is <answer>`.",
        ),
        _f("answer", pa.string(), "Gold final answer (a number for math tasks, the option text for QA)."),
        _f("task", pa.string(), "Task adapter name (`arith`, `gsm8k`, `svamp`, `mcqa`, `math`, `mmlu`)."),
        _f("attributes", pa.map_(pa.string(), pa.string()),
           "What the source says about the problem beyond the text, for breaking accuracy down (`evaluate` metrics `by_attribute`) (MATH: `level`, "
           "`type`, `source_id`; MMLU: `subject`); empty or null when the source has none; tables written without it read as null.", optional=True),
    ],
    metadata={"artifact": "data/<task>/{train,validation,test}.parquet"},
)

SAMPLES = pa.schema(
    [
        _f("sample_id", pa.string(), "`<problem id>#<sample index>`, unique within the file."),
        _f("problem_id", pa.string(), "Id of the problem in the split's Parquet."),
        _f("sample_index", pa.int32(), "0..n-1 among the samples drawn for this problem."),
        _f("prompt", pa.string(), "The exact prompt text given to the model (task template applied)."),
        _f("completion", pa.string(), "The generated solution text (special tokens stripped)."),
        _f("token_ids", pa.list_(pa.int32()), "Token ids of the completion as generated (EOS excluded)."),
        _f("num_tokens", pa.int32(), "Number of generated tokens (length of `token_ids`)."),
        _f("finish_reason", pa.string(), "`stop` (EOS or a stop string), `length` (hit max_new_tokens) or `prompt_too_long` (prompt left no room in the context: nothing generated, counted wrong)."),
        _f("pred_answer", pa.string(), "Answer extracted by the task adapter; null when none was found.", nullable=True),
        _f("gold_answer", pa.string(), "The problem's gold answer."),
        _f("correct", pa.bool_(), "Whether `pred_answer` is equivalent to `gold_answer` (task adapter check)."),
        _f("backend", pa.string(), "Sampler backend that produced the row (`vllm` or `hf`)."),
        _f("temperature", pa.float32(), "Sampling temperature (0 = greedy)."),
        _f("top_p", pa.float32(), "Nucleus sampling threshold."),
        _f("seed", pa.int64(), "Seed of this request (base seed + problem position, for reproducibility)."),
    ],
    metadata={"artifact": "results/<run>/samples/<policy>/<draw>.parquet, results/<run>/eval/<policy>/<split>/predictions.parquet"},
)

REWRITE_STATUSES = ("ok", "wrong_answer", "parse_error", "api_error", "filtered")

REWRITES = pa.schema(
    [
        _f("sample_id", pa.string(), "First sample (in sampling order) with this prediction."),
        _f("sample_ids", pa.list_(pa.string()), "Every sample of the problem with exactly this prediction (sent once)."),
        _f("problem_id", pa.string(), "Id of the problem."),
        _f("question", pa.string(), "The problem text."),
        _f("reference_solution", pa.string(), "The gold solution shown to the teacher (numbered by step)."),
        _f("gold_answer", pa.string(), "The problem's gold answer."),
        _f("prediction", pa.string(), "The policy's solution `y`."),
        _f("prediction_correct", pa.bool_(), "Whether `y` reaches the gold answer (task adapter)."),
        _f("error_step", pa.int32(), "First wrong step of `y` (0-based line index; -1 for a correct `y`; "
           "len(steps) when `y` stops before its answer); null when the teacher gave none.", nullable=True),
        _f("rewrite", pa.string(), "`z` = the steps of `y` before `error_step` + the teacher's continuation "
           "(= `y` for a correct `y`); null when there is none.", nullable=True),
        _f("rewrite_correct", pa.bool_(), "Whether `z` reaches the gold answer.", nullable=True),
        _f("edit_distance", pa.int32(), "Token Levenshtein distance d(y, z) under the policy's tokenizer.", nullable=True),
        _f("edit_ratio", pa.float32(), "d(y, z) / max(|y|, |z|) in tokens.", nullable=True),
        _f("teacher_backend", pa.string(), "`oracle`, `openai`, `anthropic`, or `grm` for the GRM's rewrites "
           "(`passthrough` for correct samples)."),
        _f("teacher_model", pa.string(), "Model name sent to the backend."),
        _f("error_step_reply", pa.string(), "The teacher's raw reply to the first-error question.", nullable=True),
        _f("rewrite_reply", pa.string(), "The teacher's raw continuation.", nullable=True),
        _f("status", pa.string(), "`ok`, `wrong_answer` (z misses the gold answer), `parse_error` (no usable "
           "step label or continuation), `api_error` (requests failed after retries) or `filtered` "
           "(edit ratio above teacher.max_edit_ratio)."),
        _f("detail", pa.string(), "Why the row is not `ok` (human-readable).", nullable=True),
        _f("attempts", pa.int32(), "Requests it took to get this row's replies, retries included (as recorded when "
           "they were fetched, also when a rerun reads them from the cache)."),
        _f("prompt_tokens", pa.int32(), "Prompt tokens the teacher reported for this row's requests."),
        _f("completion_tokens", pa.int32(), "Completion tokens the teacher reported for this row's requests."),
    ],
    metadata={"artifact": "results/<run>/teacher/rewrites.parquet, results/<run>/grm/rewrites.parquet"},
)

GRM_DATA = pa.schema(
    [
        _f("example_id", pa.string(), "`<sample id>/<kind>`, unique."),
        _f("split", pa.string(), "`train` or `validation` (held out by problem: no problem is in both)."),
        _f("kind", pa.string(), "`error_step` (find the first wrong step) or `rewrite` (minimal correction)."),
        _f("prompt", pa.string(), "The GRM's input (template `grm.prompts.<kind>` filled in)."),
        _f("target", pa.string(), "What the GRM learns to answer (loss on these tokens only)."),
        _f("sample_id", pa.string(), "The sample the example is made from (rewrites.parquet)."),
        _f("problem_id", pa.string(), "Its problem."),
        _f("question", pa.string(), "The problem text."),
        _f("reference_solution", pa.string(), "The gold solution."),
        _f("gold_answer", pa.string(), "The gold answer."),
        _f("prediction", pa.string(), "The policy's solution `y`."),
        _f("prediction_correct", pa.bool_(), "Whether `y` is correct (then the rewrite target is `y` itself)."),
        _f("error_step", pa.int32(), "The teacher's first wrong step of `y` (-1 for a correct `y`)."),
        _f("rewrite", pa.string(), "The teacher's rewrite `z` (`y` for a correct `y`)."),
    ],
    metadata={"artifact": "results/<run>/grm/data.parquet"},
)

TOKEN_REWARDS = pa.schema(
    [
        _f("sample_id", pa.string(), "The labelled sample (first sample with this prediction, as in the rewrites file)."),
        _f("problem_id", pa.string(), "Id of the problem."),
        _f("question", pa.string(), "The problem text."),
        _f("reference_solution", pa.string(), "The gold solution."),
        _f("gold_answer", pa.string(), "The problem's gold answer."),
        _f("prompt", pa.string(), "The policy's prompt text (task template applied)."),
        _f("prompt_ids", pa.list_(pa.int32()), "Policy token ids of the prompt (BOS included when the tokenizer adds one)."),
        _f("prediction", pa.string(), "The sampled solution `y`."),
        _f("correct", pa.bool_(), "Whether `y` reaches the gold answer (its rewards are then >= 0, else <= 0)."),
        _f("error_step", pa.int32(), "First wrong step of `y` found by the rewriter (-1 for a correct `y`).", nullable=True),
        _f("rewrite", pa.string(), "The imitation target `z` as text (`y` itself for a correct `y`)."),
        _f("rewrite_source", pa.string(), "Who wrote `z`: `grm`, a teacher backend, or `passthrough` (correct `y`)."),
        _f("token_ids", pa.list_(pa.int32()), "Token ids of `y` as sampled, plus EOS when the sample stopped by itself."),
        _f("tokens", pa.list_(pa.string()), "Each token of `y` decoded on its own (joined they give `y`)."),
        _f("grm_probs", pa.list_(pa.float32()), "p_t = P_GRM(y_t | rewrite prompt, y_<t), teacher-forced."),
        _f("rewards", pa.list_(pa.float32()), "r_t = clip(p_t - 0.5, label.pos_clip) for a correct `y`, "
           "clip(p_t - 0.5, label.neg_clip) for an incorrect one."),
        _f("old_logprobs", pa.list_(pa.float32()), "log pi_old(y_t | x, y_<t) from a forward pass of the sampling policy."),
        _f("step_rewards", pa.list_(pa.float32()), "Sum of `rewards` over each step (line) of `y`, for inspection."),
        _f("imitation_ids", pa.list_(pa.int32()), "Token ids of `z` (plus EOS): the imitation target."),
        _f("imitation_tokens", pa.list_(pa.string()), "Each token of `z` decoded on its own."),
        _f("imitation_weights", pa.list_(pa.float32()), "w_j: label.changed_weight where the minimum-edit alignment "
           "inserts or substitutes z_j, label.kept_weight where z_j is kept from `y`."),
        _f("edit_distance", pa.int32(), "Token Levenshtein distance d(y, z)."),
        _f("edit_ratio", pa.float32(), "d(y, z) / max(|y|, |z|)."),
    ],
    metadata={"artifact": "results/<run>/label/token_rewards.parquet"},
)

ALL_SCHEMAS: dict[str, pa.Schema] = {
    "problems": PROBLEMS,
    "samples": SAMPLES,
    "rewrites": REWRITES,
    "grm_data": GRM_DATA,
    "token_rewards": TOKEN_REWARDS,
}


def artifacts_markdown() -> str:
    """A Markdown reference of every Parquet artefact's columns (docs/artifacts.md is this text)."""
    lines = [
        "# Parquet artefacts",
        "",
        "<!-- Generated from rlmec_core/schemas.py by `python scripts/gen_docs.py`; do not edit by hand. -->",
        "",
        "Every stage writes Parquet with one of these explicit schemas and checks it on read. Open any file",
        "with `pyarrow.parquet.read_table(path).to_pandas()`, DuckDB or `rlmec`'s stage commands.",
    ]
    for name, schema in ALL_SCHEMAS.items():
        meta = schema.metadata or {}
        where = meta.get(b"artifact", b"").decode("utf-8")
        lines += ["", f"## `{name}`", "", f"Files: `{where}`", "", "| column | type | nullable | meaning |",
                  "| --- | --- | --- | --- |"]
        for field in schema:
            doc = field_doc(field).replace("|", "/")
            lines.append(f"| `{field.name}` | `{field.type}` | {'yes' if field.nullable else 'no'} | {doc} |")
    return "\n".join(lines) + "\n"
