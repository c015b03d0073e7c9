"""Real-scale configs (config/gsm8k.yaml, config/ecqa.yaml), the `resources` config section and the Snakemake
profiles (profiles/gpu_node, profiles/slurm): the configs validate, the accelerate configs load, and
`snakemake -n` plans the whole DAG of the default target and of `compare` with every GPU job asking for the
GPUs its config gives it. Dry runs only (marked slow: real Snakemake runs, about 4 s each): no GPU, no model,
no sbatch (a fake sbatch first on PATH proves none is called).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlmec_core.config import load_config, validate_config
from rlmec_core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

REAL_CONFIGS = ("gsm8k", "ecqa")
GENERATE_RULES = {"sample", "evaluate", "grm_eval", "grm_rewrite", "label", "label_teacher", "suite_evaluate",
                  "round_sample", "round_grm_eval", "round_grm_eval_stale", "round_grm_rewrite", "round_label",
                  "round_evaluate"}
TRAIN_RULES = {"policy_bootstrap", "grm_train", "rl", "method_rl", "method_grpo", "sft_gold", "method_sft_gold",
               "round_grm_train", "round_rl", "round_rft", "round_grpo", "round_sft_gold"}
CPU_RULES = {"data", "grm_data", "preflight", "round_preflight", "report", "compare_table", "compare_sweep", "report_compare", "round_grm_data",
             "rounds_table", "compare_rounds"}
ROUND_RULES = {"round_sample", "round_teacher", "round_grm_data", "round_grm_train", "round_grm_eval",
               "round_grm_eval_stale", "round_grm_rewrite", "round_label", "round_preflight", "round_rl", "round_rft", "round_grpo",
               "round_sft_gold", "round_evaluate", "compare_rounds"}
TARGET_RULES = {"all", "compare"}  # rules without a job of their own
DEFAULT_DAG = {"data", "sample", "teacher", "grm_data", "grm_train", "grm_eval", "grm_rewrite", "label", "preflight", "rl",
               "sft_gold", "evaluate", "report"}
COMPARE_DAG = DEFAULT_DAG - {"report"} | {"label_teacher", "method_rl", "method_grpo", "method_sft_gold",
                                          "compare_table", "compare_sweep", "report_compare"}

# A few rows in the formats of ../shared/data/ (the dry run only needs the files to exist).
SOURCES = {
    "gsm8k": [{"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
               "answer": "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"}],
    "ecqa": [{"problem": "Where do you keep milk cold?\nOptions:\nfridge\noven\nshelf\ncar\nbag",
              "solution": "A fridge keeps food cold.\nThe answer is fridge", "answer": "fridge"}],
}


def merged(*configs: dict) -> dict:
    """Configs layered the way Snakemake layers --configfile over the Snakefile's configfile."""
    out: dict = {}

    def update(base, new):
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                update(base[key], value)
            else:
                base[key] = copy.deepcopy(value)

    for cfg in configs:
        update(out, cfg)
    return out


def read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


@pytest.mark.parametrize("name", REAL_CONFIGS)
def test_real_config_validates_and_sets_the_real_scale_keys(name):
    cfg = load_config(REPO_ROOT / "config" / f"{name}.yaml")
    assert cfg["policy"]["model"]  # an existing model: no policy_bootstrap
    assert cfg["task"]["adapter"] in {"gsm8k", "mcqa"} and cfg["task"]["source"]["train"]
    assert cfg["teacher"]["backend"] in {"openai", "anthropic"} and cfg["teacher"]["model"]
    assert re.fullmatch(r"[A-Z_]+_API_KEY", cfg["teacher"]["api_key_env"])
    engine = cfg["engine"]
    assert engine["backend"] == "vllm" and engine["dtype"] == "bfloat16"
    assert 0.8 <= engine["gpu_memory_utilization"] <= 0.9
    assert cfg["launch"]["num_processes"] == 8
    assert (REPO_ROOT / cfg["launch"]["accelerate_config"]).is_file()
    for stage in ("grm", "rl"):
        train = cfg[stage]["train"]
        assert train["mixed_precision"] == "bf16" and train["gradient_checkpointing"]
        assert train["lr"] <= 2.0e-5  # 7B learning rates, not the tiny demo model's
    assert all(lr <= 1.0e-5 for lr in [*cfg["compare"]["lr"].values(), *cfg["compare"]["sweep"]["lrs"]])
    assert cfg["resources"]["accelerator"] == "gpu"
    # Layered over the demo config (what `--configfile` does): still valid, and no demo-only setting leaks
    # into the real run (the demo's compact GRM prompt frames would replace the published format).
    layered = validate_config(merged(read_yaml(REPO_ROOT / "config" / "config.yaml"),
                                     read_yaml(REPO_ROOT / "config" / f"{name}.yaml")))
    assert layered["grm"]["prompts"] == {"error_step": None, "error_target": None, "rewrite": None}
    assert layered["engine"] == cfg["engine"] and layered["rl"] == cfg["rl"] and layered["grm"]["train"] == cfg["grm"]["train"]


@pytest.mark.parametrize("config, key", [
    ({"resources": {"train": {"gpu": -1}}}, "resources.train.gpu"),
    ({"resources": {"generate": {"mem_mb": 0}}}, "resources.generate.mem_mb"),
    ({"resources": {"cpu": {"runtime": "1h"}}}, "resources.cpu.runtime"),
    ({"resources": {"accelerator": "tpu"}}, "resources.accelerator"),
    ({"resources": {"teacher": {"gpus": 1}}}, "resources.teacher"),
])
def test_bad_resources_value_is_a_schema_error_naming_the_key(config, key):
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert f"{key}: " in str(info.value)


def test_resources_defaults_keep_the_demo_on_the_cpu():
    cfg = validate_config({})
    assert cfg["resources"]["accelerator"] == "cpu"
    assert cfg["resources"]["cpu"]["gpu"] == cfg["resources"]["teacher"]["gpu"] == 0
    assert cfg["resources"]["generate"]["gpu"] is None and cfg["resources"]["train"]["gpu"] is None  # follow


@pytest.mark.parametrize("name, backend", [("zero3", "deepspeed"), ("fsdp", "fsdp")])
def test_accelerate_configs_are_valid_launch_configs(name, backend):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = str(REPO_ROOT / "config" / "accelerate" / f"{name}.yaml")
    cfg = load_config_from_file(path)
    assert cfg.mixed_precision == "bf16" and cfg.num_machines == 1
    # What `accelerate launch --config_file <path> --num_processes 2 ...` makes of it (num_processes overridden).
    args = launch_command_parser().parse_args(["--config_file", path, "--num_processes", "2", "train.py"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    assert args.num_processes == 2 and args.mixed_precision == "bf16"
    if backend == "deepspeed":
        assert args.use_deepspeed
        args.deepspeed_fields_from_accelerate_config = ",".join(
            [*defaults.deepspeed_config, *(["mixed_precision"] if mp_from_config else [])])
        _, env = prepare_deepspeed_cmd_env(args)
        assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
        assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"  # get_state_dict can gather
        assert "gradient_accumulation_steps" not in defaults.deepspeed_config  # "auto": the loop's grad_accum
    else:
        assert args.use_fsdp
        env = prepare_multi_gpu_env(args)
        assert env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"
        assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
        assert env["FSDP_STATE_DICT_TYPE"] in {"SHARDED_STATE_DICT", "FULL_STATE_DICT"}
        assert env["FSDP_SYNC_MODULE_STATES"] == "true"


def test_gpu_node_profile_runs_one_gpu_job_at_a_time():
    profile = read_yaml(REPO_ROOT / "profiles" / "gpu_node" / "config.yaml")
    assert "gpu_jobs=1" in profile["resources"]
    assert set(profile["set-threads"]) == GENERATE_RULES | TRAIN_RULES
    slurm = read_yaml(REPO_ROOT / "profiles" / "slurm" / "config.yaml")
    assert slurm["executor"] == "slurm"
    assert {"slurm_partition", "slurm_account"} <= set(slurm["default-resources"])
    assert GENERATE_RULES | TRAIN_RULES <= set(slurm["set-resources"])


# -- dry runs --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A copy of the workflow, small source files in the shared data formats, a config layer pointing at them,
    and a fake sbatch that records any call (a dry run must submit nothing)."""
    work = tmp_path_factory.mktemp("scaling")
    for item in ("Snakefile", "workflow", "config", "profiles", "environment.yml"):
        src = REPO_ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    for name, rows in SOURCES.items():
        path = work / "src" / f"{name}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        splits = {split: str(path) for split in ("train", "validation", "test")
                  if read_yaml(REPO_ROOT / "config" / f"{name}.yaml")["task"]["source"].get(split)}
        (work / f"{name}_sources.yaml").write_text(yaml.safe_dump({"task": {"source": splits}}))
    fake = work / "fakebin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho called >> {work / 'sbatch_called'}\nexit 1\n")
    fake.chmod(0o755)
    return work


def dry_run(work: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{work / 'fakebin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([SNAKEMAKE, "-n", *args], cwd=work, capture_output=True, text=True, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert not (work / "sbatch_called").exists(), "the dry run called sbatch"
    return out


def planned(out: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run lists (as many as its 'Job stats' total)."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m:
            continue
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        pairs = (item.split("=", 1) for item in res.group(1).split(", ")) if res else []
        jobs.append((m.group(1), {k: v for k, v in pairs}))
    total = re.search(r"^total\s+(\d+)$", out, re.M)
    assert total and int(total.group(1)) == len(jobs), "could not parse every planned job"
    return jobs


def expected_gpus(cfg: dict) -> dict[str, int]:
    return {"generate": cfg["engine"]["tensor_parallel_size"], "train": cfg["launch"]["num_processes"]}


@pytest.mark.slow
@pytest.mark.parametrize("target", ["all", "compare", "compare with rounds: 3"])
@pytest.mark.parametrize("profile", [None, "slurm"])
@pytest.mark.parametrize("name", REAL_CONFIGS)
def test_dry_run_plans_the_full_dag_with_gpu_resources(work, name, profile, target):
    cfg = load_config(REPO_ROOT / "config" / f"{name}.yaml")
    layers = [f"config/{name}.yaml", f"{name}_sources.yaml"]
    if target.endswith("rounds: 3"):  # three rounds with the GRM refreshed: every round rule, on the GPU it needs
        first = cfg["sample"]["draws"]["rl"]["first"]
        (work / "rounds3.yaml").write_text(yaml.safe_dump({"rounds": 3, "grm": {"refresh": {"teacher_budget": 100}},
                                                           "sample": {"draws": {"rl": {"first": first, "problems": 1000}}}}))
        layers.append("rounds3.yaml")
    args = [target.split()[0], "--configfile", *layers]
    args += ["--profile", f"profiles/{profile}"] if profile else ["--cores", "2"]
    jobs = planned(dry_run(work, *args))
    rules = {rule for rule, _ in jobs} - TARGET_RULES
    assert rules == {"all": DEFAULT_DAG, "compare": COMPARE_DAG}.get(target, COMPARE_DAG | ROUND_RULES)
    if target == "compare":
        n_methods = len(cfg["compare"]["methods"]) - 1  # sft is the starting policy
        assert sum(rule.startswith("method_") for rule, _ in jobs) >= n_methods * len(cfg["compare"]["seeds"])
    gpus = expected_gpus(cfg)
    assert gpus == {"generate": 1 if name == "gsm8k" else 2, "train": 8}
    for rule, res in jobs:
        if rule in TARGET_RULES:
            continue
        group = ("generate" if rule in GENERATE_RULES else "train" if rule in TRAIN_RULES
                 else "teacher" if rule in ("teacher", "round_teacher") else "cpu")
        assert res["mem_mb"] == str(cfg["resources"][group]["mem_mb"]), (rule, res)
        assert res["runtime"] == str(cfg["resources"][group]["runtime"]), (rule, res)
        gpu = gpus.get(group, 0)
        assert res["gpu"] == str(gpu), (rule, res)
        assert res.get("gpu_jobs") == ("1" if gpu else None), (rule, res)  # one GPU job at a time (gpu_node)
        if profile == "slurm":
            assert res["slurm_account"] == "<account>"
            assert res["slurm_partition"] == ("<gpu-partition>" if gpu else "<cpu-partition>"), (rule, res)
            assert res["cpus_per_task"] == {"generate": "8", "train": "32", "teacher": "4", "cpu": "2"}[group]


@pytest.mark.slow
def test_demo_dry_run_declares_no_gpu(work):
    """The CPU demo asks for no GPU; its generation and training jobs still take the gpu_jobs token, since
    they would use a visible GPU (so profiles/gpu_node serialises them whatever the config says)."""
    jobs = planned(dry_run(work, "--cores", "2", "--configfile", "config/config.yaml"))
    assert "policy_bootstrap" in {rule for rule, _ in jobs}
    for rule, res in jobs:
        if rule not in TARGET_RULES:
            assert res["gpu"] == "0" and int(res["mem_mb"]) > 0 and int(res["runtime"]) > 0, (rule, res)
            assert res.get("gpu_jobs") == ("1" if rule in GENERATE_RULES | TRAIN_RULES else None), (rule, res)


@pytest.mark.slow
def test_gpu_node_profile_dry_run(work):
    jobs = planned(dry_run(work, "--profile", "profiles/gpu_node", "--configfile", "config/gsm8k.yaml",
                           "gsm8k_sources.yaml"))
    assert {rule for rule, _ in jobs} - TARGET_RULES == DEFAULT_DAG
    assert all(res.get("gpu_jobs") == "1" for rule, res in jobs if rule in GENERATE_RULES | TRAIN_RULES)


@pytest.mark.slow
def test_snakemake_rejects_a_bad_resources_value_naming_it(work):
    (work / "bad_resources.yaml").write_text(yaml.safe_dump({"resources": {"train": {"gpu": -2}}}))
    proc = subprocess.run([SNAKEMAKE, "-n", "--cores", "1", "--configfile", "config/gsm8k.yaml", "gsm8k_sources.yaml",
                           "bad_resources.yaml"], cwd=work, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "-2 is less than the minimum of 0" in out and "'gpu'" in out, out[-3000:]
