"""The pyarrow schemas of every Parquet artefact, in one place.

Each field carries a ``doc`` metadata entry; ``docs/artifacts.md`` is generated from these schemas.
Readers check files against them (``rlmec_core.io.read_parquet``), writers cast to them
(``rlmec_core.io.write_parquet``), so a drifted column fails loudly with the file's name.
"""

from __future__ import annotations

import pyarrow as pa


def _f(name: str, type_: pa.DataType, doc: str, *, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


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
        _f("task", pa.string(), "Task adapter name (`arith`, `gsm8k`, `svamp`, `mcqa`)."),
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
    metadata={"artifact": "results/<run>/samples/*.parquet, results/<run>/eval/*/predictions.parquet"},
)

ALL_SCHEMAS: dict[str, pa.Schema] = {
    "problems": PROBLEMS,
    "samples": SAMPLES,
}
