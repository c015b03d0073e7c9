"""Task sources through Hugging Face ``datasets`` (``rlmec_core.sources``): every source form, column mapping,
the errors that name the config key, file or data set, row and column, and the data rule's inputs.

No network: every test runs with the hub offline and the ``datasets`` cache in a temporary directory; the
hub form is exercised with a local dataset folder, and an uncached hub id must fail fast.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

datasets = pytest.importorskip("datasets")

from rlmec_core.config import validate_config  # noqa: E402
from rlmec_core.errors import ConfigError, DataError  # noqa: E402
from rlmec_core.sources import describe_source, local_source_inputs, local_source_path, read_records  # noqa: E402
from rlmec_core.stages.data import SPLITS, build_splits, load_problems, run_data  # noqa: E402
from rlmec_core.tasks import get_adapter  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
KEY = "task.source.test"

GSM = [
    {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"},
    {"question": "Ann has 7 pens and loses 4. How many?", "answer": "7 - 4 = <<7-4=3>>3\n#### 3"},
    {"question": "A box holds 6 eggs. How many in 2 boxes?", "answer": "6 * 2 = <<6*2=12>>12\n#### 12"},
]
SVAMP = [
    {"ID": "chal-1", "Body": "Each pack costs 76 dollars. There is a discount of 25 dollars on each pack",
     "Question": "How much do you pay for each pack?", "Equation": "( 76.0 - 25.0 )", "Answer": 51.0,
     "Type": "Subtraction"},
    {"ID": "chal-2", "Body": "Dan had $ 3 left after he bought a candy bar. He had $ 4 at the start",
     "Question": "How much did the candy bar cost?", "Equation": "( 4.0 - 3.0 )", "Answer": 1.0,
     "Type": "Subtraction"},
]


@pytest.fixture(autouse=True)
def offline_tmp_cache(tmp_path, monkeypatch) -> Path:
    """The hub offline (``datasets`` reads these settings at import, so the module attributes are set too)
    and the ``datasets`` cache in a temporary directory, never in the repository or the home directory."""
    import huggingface_hub.constants

    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def write_jsonl(path: Path, rows: list[dict], *, blank_after: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def records(source, **kw) -> list[tuple[str, dict]]:
    return list(read_records(source, key=KEY, default_split="test", **kw))


def questions(problems) -> list[tuple[str, str, str]]:
    return [(p.question, p.reference_solution, p.answer) for p in problems]


# -- each source form ---------------------------------------------------------------------------------------
def test_jsonl_rows_are_numbered_from_one_and_skip_blank_lines(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", GSM, blank_after=1)
    got = records(str(path))
    assert [w for w, _ in got] == [f"{path}: row {n}" for n in (1, 2, 3)]
    assert [r for _, r in got] == GSM


def test_json_list_of_objects_keeps_numeric_answers(tmp_path):
    path = tmp_path / "svamp.json"
    path.write_text(json.dumps(SVAMP, indent=4), encoding="utf-8")
    got = records(str(path))
    assert [r["Answer"] for _, r in got] == [51.0, 1.0]
    adapter = get_adapter("svamp")
    via_datasets = adapter.problems_from_records(iter(got), split="test")
    assert questions(via_datasets) == questions(adapter.load_source(path, split="test"))
    assert via_datasets[0].answer == "51"


def test_csv_and_parquet(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("question,answer\n" + "".join(
        '"{}","{}"\n'.format(r["question"], r["answer"].replace('"', '""')) for r in GSM), encoding="utf-8")
    parquet = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pylist(GSM), parquet)
    for path in (csv, parquet):
        got = records(str(path))
        assert [r for _, r in got] == GSM, path
        assert got[2][0] == f"{path}: row 3"


def test_save_to_disk_dataset_and_dataset_dict(tmp_path):
    one = tmp_path / "one"
    datasets.Dataset.from_list(GSM).save_to_disk(str(one))
    assert [r for _, r in records(str(one))] == GSM

    both = tmp_path / "both"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(GSM[:2]),
                          "test": datasets.Dataset.from_list(GSM[2:])}).save_to_disk(str(both))
    # the config split's own name by default; an explicit split otherwise
    assert records(str(both)) == [(f"{both} (split test): row 1", GSM[2])]
    assert [r for _, r in records({"path": str(both), "split": "train"})] == GSM[:2]
    with pytest.raises(ConfigError, match=rf"^task\.source\.test\.split: {both} is a DatasetDict without a split "
                                          r"'dev' \(splits: train, test\)"):
        records({"path": str(both), "split": "dev"})
    with pytest.raises(ConfigError, match=r"^task\.source\.validation: .* without a split 'validation' .*"
                                          r"set task\.source\.validation\.split"):
        list(read_records(str(both), key="task.source.validation", default_split="validation"))


def test_hub_form_with_a_local_dataset_folder(tmp_path, offline_tmp_cache):
    folder = tmp_path / "my_set"
    write_jsonl(folder / "train.jsonl", GSM[:2])
    write_jsonl(folder / "test.jsonl", GSM[2:])
    got = records({"path": str(folder)})  # split: the config split's name
    assert got == [(f"{folder} (split test): row 1", GSM[2])]
    assert [r for _, r in records({"path": str(folder), "split": "train[:1]"})] == GSM[:1]
    with pytest.raises(ConfigError, match=r"^task\.source\.test\.split: .*Unknown split \"dev\""):
        records({"path": str(folder), "split": "dev"})
    # data_dir picks a subfolder
    write_jsonl(folder / "extra" / "test.jsonl", GSM[:1])
    assert [r for _, r in records({"path": str(folder), "data_dir": "extra"})] == GSM[:1]
    # local sources leave no cache behind (a temporary one is used unless cache_dir is given)
    assert not offline_tmp_cache.exists() or not any(offline_tmp_cache.iterdir())
    records({"path": str(folder)}, cache_dir=tmp_path / "kept")
    assert any((tmp_path / "kept").iterdir())


def test_dates_stay_text(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "2020-01-01", "answer": "x"},
                                              {"question": "2021-12-31", "answer": "y"}])
    assert [r["question"] for _, r in records(str(path))] == ["2020-01-01", "2021-12-31"]


def test_empty_sources_have_no_rows(tmp_path):
    for name, text in [("e.jsonl", ""), ("b.jsonl", "\n\n"), ("l.json", "[]"), ("h.csv", "question,answer\n")]:
        (tmp_path / name).write_text(text)
        assert records(str(tmp_path / name)) == [], name
    pq.write_table(pa.Table.from_pylist(GSM).slice(0, 0), tmp_path / "e.parquet")
    empty = datasets.Dataset.from_list(GSM).select([])
    empty.save_to_disk(str(tmp_path / "e_saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(GSM), "test": empty}).save_to_disk(str(tmp_path / "e_dd"))
    for name in ("e.parquet", "e_saved", "e_dd"):
        assert records(str(tmp_path / name)) == [], name


# -- column mapping -----------------------------------------------------------------------------------------
def test_columns_map_adapter_fields_to_data_set_columns(tmp_path):
    rows = [{"problem": r["question"], "solution": r["answer"], "level": "1"} for r in GSM]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    got = records(str(path), columns={"question": "problem", "answer": "solution"})
    assert got[0][1] == {"question": GSM[0]["question"], "answer": GSM[0]["answer"], "level": "1"}
    swapped = records(str(path), columns={"question": "solution", "answer": "problem"})
    assert swapped[0][1]["question"] == GSM[0]["answer"]


def test_build_splits_reads_every_form_with_mapped_columns(tmp_path):
    rows = [{"problem": r["question"], "solution": r["answer"]} for r in GSM]
    train = tmp_path / "train_dir"
    datasets.Dataset.from_list(rows * 3).save_to_disk(str(train))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test.parquet")
    task = validate_config({"task": {"name": "g", "adapter": "gsm8k", "validation_fraction": 0.25,
                                     "source": {"train": str(train), "test": {"path": str(tmp_path / "test.parquet")}},
                                     "columns": {"question": "problem", "answer": "solution"}}})["task"]
    out = tmp_path / "out"
    stats = run_data(task, 0, {s: out / f"{s}.parquet" for s in SPLITS}, out / "stats.json")
    assert {s: v["problems"] for s, v in stats["splits"].items()} == {"train": 7, "validation": 2, "test": 3}
    test = load_problems(out / "test.parquet")
    assert [p.answer for p in test] == ["5", "3", "12"] and test[0].id == "g-test-000000"


# -- errors ---------------------------------------------------------------------------------------------------
def test_missing_mapped_column_names_key_file_column_and_existing_columns(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", GSM)
    with pytest.raises(DataError) as info:
        records(str(path), columns={"question": "problem"})
    assert str(info.value) == (f"{KEY}: {path}: no column 'problem' (for 'question') in any row; task.columns maps "
                               "it but the data set's columns are: question, answer")


def test_a_row_without_the_mapped_value_names_the_file_and_row(tmp_path):
    rows = [{"problem": r["question"], "solution": r["answer"]} for r in GSM]
    del rows[1]["problem"]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    with pytest.raises(DataError, match=rf"^{path}: row 2: missing field 'question'"):
        get_adapter("gsm8k").problems_from_records(
            read_records(str(path), key=KEY, columns={"question": "problem", "answer": "solution"}), split="test")


def test_missing_file_names_key_and_path(tmp_path):
    with pytest.raises(DataError, match=rf"^{KEY}: {tmp_path}/nope\.jsonl: file not found$"):
        records(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match=rf"^{KEY}: {tmp_path}/gone: file not found$"):
        records({"path": str(tmp_path / "gone")})  # an absolute path is never a hub id


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.jsonl", b'{"question": "a", "answer": "b"}\n{"question": \n', r"bad\.jsonl:2: bad JSON"),
        ("utf.jsonl", b'{"question": "a", "answer": "b"}\n{"question": "caf\xe9"}\n', r"utf\.jsonl:2: not valid UTF-8"),
        ("arr.jsonl", b'{"question": "a"}\n[1, 2]\n', r"arr\.jsonl:2: expected a JSON object, got list"),
        ("list.json", b'[{"question": "a"},\n {"question": ]', r"list\.json:2: bad JSON"),
        ("items.json", b'[{"question": "a"}, 3]', r"items\.json: item 2: expected a JSON object, got int"),
        ("broken.parquet", b"PAR1 this is not parquet", r"broken\.parquet: datasets cannot read it as Parquet \("),
    ],
)
def test_unreadable_file_names_key_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=rf"^{KEY}: {tmp_path}/{message}"):
        records(str(tmp_path / name))


def test_uncached_hub_id_offline_names_the_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        records({"path": "made-up-org/no-such-set", "name": "main", "revision": "v1"})
    message = str(info.value)
    assert message.startswith(f"{KEY}: hub data set made-up-org/no-such-set (name main, split test, revision v1) "
                              "is not in the datasets cache and offline mode is on (HF_DATASETS_OFFLINE or HF_HUB_OFFLINE)")
    assert f"point {KEY} at a local copy" in message


def test_keys_that_do_not_apply_and_unsupported_files(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", GSM)
    with pytest.raises(ConfigError, match=rf"^{KEY}\.revision: does not apply to a file \({path}\)"):
        records({"path": str(path), "revision": "main"})
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ConfigError, match=rf"^{KEY}: {tmp_path}/x\.txt: unsupported file type '\.txt'"):
        records(str(tmp_path / "x.txt"))
    with pytest.raises(ConfigError, match=rf"^{KEY}: unknown key\(s\) spilt"):
        records({"path": str(path), "spilt": "test"})


def test_data_stage_errors_name_the_split_key(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", GSM)
    task = validate_config({"task": {"adapter": "gsm8k", "columns": {"question": "problem"},
                                     "source": {"train": str(path), "test": str(path)}}})["task"]
    with pytest.raises(DataError, match=r"^task\.source\.train: .*train\.jsonl: no column 'problem'"):
        build_splits(task, 0)
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.Table.from_pylist(GSM).slice(0, 0), empty)
    task = validate_config({"task": {"adapter": "gsm8k", "source": {"train": str(path), "test": str(empty)}}})["task"]
    with pytest.raises(DataError, match=r"^task\.source\.test: .*empty\.parquet: no problems \(the test file is empty\)"):
        build_splits(task, 0)


# -- real data through the new path ------------------------------------------------------------------------
@pytest.mark.parametrize("task, rel", [("svamp", "svamp/SVAMP.json"), ("gsm8k", "gsm8k/test.jsonl"),
                                       ("mcqa", "openbookqa/test.jsonl")])
def test_real_sets_read_as_the_adapters_own_loader_reads_them(shared_data, task, rel):
    path = shared_data / rel
    if not path.exists():
        pytest.skip(f"{path} not found")
    adapter = get_adapter(task)
    via_datasets = adapter.problems_from_records(read_records(str(path), key=KEY), split="test")
    assert questions(via_datasets) == questions(adapter.load_source(path, split="test"))


@pytest.mark.parametrize("rel", ["svamp/SVAMP.json", "mmlu/biology.json", "math/test.jsonl"])
def test_real_rows_arrive_as_written(shared_data, rel):
    """JSON lists (numeric answers, lists of choices) and JSON Lines rows reach the adapter unchanged."""
    path = shared_data / rel
    if not path.exists():
        pytest.skip(f"{path} not found")
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line.strip()]
    got = records(str(path))
    assert [r for _, r in got] == raw
    assert got[-1][0] == f"{path}: row {len(raw)}"


# -- config and workflow --------------------------------------------------------------------------------------
def test_local_source_path_is_a_workflow_input_and_a_hub_source_is_not(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    assert local_source_path("data/x.jsonl") == "data/x.jsonl"  # a string is a path, even when missing
    assert local_source_path({"path": str(folder), "split": "test"}) == str(folder)
    assert local_source_path({"path": "openai/gsm8k", "name": "main"}) is None
    assert local_source_path(None) is None
    (folder / "test.jsonl").write_text("{}\n")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x").write_text("")
    assert local_source_inputs({"path": str(folder)}) == [str(folder), str(folder / "test.jsonl")]
    assert local_source_inputs("data/x.jsonl") == ["data/x.jsonl"]
    assert local_source_inputs({"path": "openai/gsm8k"}) == []
    assert describe_source({"path": "openai/gsm8k", "name": "main"}) == "openai/gsm8k (name main)"


def test_schema_accepts_both_forms_and_rejects_unknown_keys():
    task = validate_config({"task": {"source": {"train": "a.jsonl", "test": {"path": "o/n", "split": "test"}},
                                     "columns": {"question": "problem"}}})["task"]
    assert task["source"] == {"train": "a.jsonl", "test": {"path": "o/n", "split": "test"}, "validation": None}
    assert validate_config({})["task"]["columns"] == {}
    for bad, problem in [({"test": {"split": "test"}}, "'path' is a required property"),
                         ({"test": {"path": "o/n", "config": "x"}}, "Additional properties are not allowed"),
                         ({"test": 3}, "3 is not of type")]:
        with pytest.raises(ConfigError, match=rf"task\.source\.test: {problem}"):
            validate_config({"task": {"source": bad}})


@pytest.mark.slow
def test_snakemake_data_rule_reads_sources_and_reruns_when_a_local_one_changes(tmp_path):
    """Through Snakemake: a save_to_disk DatasetDict (string form) and a local folder (object form) with
    mapped columns build the tables; a hub source is no input; editing the local folder reruns the stage."""
    work = tmp_path / "work"
    work.mkdir()
    for item in ("Snakefile", "workflow", "config", "profiles", "environment.yml"):
        src = REPO_ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    rows = [{"problem": r["question"], "solution": r["answer"]} for r in GSM]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows * 4)}).save_to_disk(str(work / "src" / "dd"))
    write_jsonl(work / "src" / "folder" / "test.jsonl", rows)
    layer = {"task": {"name": "g", "adapter": "gsm8k", "columns": {"question": "problem", "answer": "solution"},
                      "source": {"train": "src/dd", "test": {"path": "src/folder"}}}}
    (work / "layer.yaml").write_text(yaml.safe_dump(layer))
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    snakemake = [str(Path(sys.executable).with_name("snakemake")), "--cores", "1", "--configfile", "layer.yaml"]

    def run(*args: str) -> str:
        proc = subprocess.run([*snakemake, *args], cwd=work, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        return proc.stdout + proc.stderr

    run("--", "data/g/test.parquet")
    assert [p.answer for p in load_problems(work / "data/g/test.parquet")] == ["5", "3", "12"]
    assert "Nothing to be done" in run("-n", "--", "data/g/test.parquet")
    write_jsonl(work / "src" / "folder" / "test.jsonl", rows[:2])
    assert "rule data:" in run("-n", "--", "data/g/test.parquet")
    # a hub source is not an input: the plan does not ask for a file called openai/gsm8k
    hub = {"task": {**layer["task"], "source": {"train": "src/dd", "test": {"path": "openai/gsm8k", "name": "main"}}}}
    (work / "hub.yaml").write_text(yaml.safe_dump(hub))
    planned = run("-n", "--configfile", "hub.yaml", "--", "data/g/test.parquet")
    assert "input: src/dd, src/dd/dataset_dict.json" in planned and "openai" not in planned.split("rule data:")[1].split("output:")[0]
