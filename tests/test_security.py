"""Security: API keys only from the environment and never on disk; remote code only when the config turns it
on; weights only as safetensors; nothing unpickles an untrusted file."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fake_llm_server import FakeLLMServer
from teacher_support import oracle_responder

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGE = REPO_ROOT / "rlmec_core"
KEY_ENV = "RLMEC_SECURITY_TEST_KEY"
PLANTED_KEY = "sk-planted-security-scan-7f3a9c2e51-DO-NOT-LEAK"


def python_sources() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *(REPO_ROOT / "workflow" / "scripts").glob("*.py")])


def calls(path: Path):
    """Every call in a source file: (line, dotted callee name, {keyword: ast value})."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node.lineno, ast.unparse(node.func), {k.arg: k.value for k in node.keywords if k.arg}


# -- keys ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_planted_key_reaches_the_server_and_no_file_the_pipeline_writes(tmp_path):
    """The whole smoke pipeline with the OpenAI-compatible teacher (tests/fake_llm_server.py on 127.0.0.1) and
    the key in the environment variable named by teacher.api_key_env, and all three experiment trackers on;
    then every file under the run directory (data, results: Parquet, metrics, logs, caches, benchmarks,
    models, tracker files; .snakemake/: metadata, logs, scripts) and Snakemake's own output is searched
    for the key."""
    for item in ("Snakefile", "workflow", "config", "profiles", "environment.yml"):
        src = REPO_ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    with FakeLLMServer(oracle_responder) as server:
        overrides = {"engine": {"backend": "hf"},
                     "teacher": {"backend": "openai", "base_url": server.base_url, "api_key_env": KEY_ENV,
                                 "model": "oracle-model", "retry": {"base_delay_s": 0.01, "max_delay_s": 0.05}},
                     # every tracker writes its files under results/<run>/tracking: scanned below like the rest
                     "tracking": {"report_to": ["tensorboard", "wandb", "mlflow"]}}
        (tmp_path / "openai_teacher.yaml").write_text(yaml.safe_dump(overrides))
        proc = subprocess.run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "config/smoke.yaml",
                               "openai_teacher.yaml"], cwd=tmp_path, capture_output=True,
                              env={**os.environ, KEY_ENV: PLANTED_KEY, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        assert server.counts["requests"] > 0 and f"Bearer {PLANTED_KEY}" in server.seen_auth
    assert (tmp_path / "results" / "smoke" / "cache" / "teacher_openai.jsonl").stat().st_size > 0
    tracking = tmp_path / "results" / "smoke" / "tracking"
    assert any(tracking.glob("tensorboard/smoke/rl/events.out.tfevents.*"))
    assert any(tracking.glob("wandb/offline-run-*/run-*.wandb")) and any(tracking.glob("mlruns/*/*/metrics/loss"))
    key = PLANTED_KEY.encode()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(written) > 100 and any(".snakemake" in p.parts for p in written)
    leaked = [str(p.relative_to(tmp_path)) for p in written if key in p.read_bytes()]
    assert leaked == [], f"the API key leaked into {leaked}"
    assert key not in proc.stdout + proc.stderr


def test_keys_are_read_only_from_the_environment():
    """No source reads a key from anywhere but os.environ, and the config schema has no key field."""
    schema = (REPO_ROOT / "config" / "schema.yaml").read_text()
    teacher = yaml.safe_load(schema)["properties"]["teacher"]["properties"]
    assert "api_key_env" in teacher
    assert not [k for k in teacher if "key" in k.lower() and k != "api_key_env"]
    for path in python_sources():
        for line, name, kw in calls(path):
            if "api_key" in kw and not isinstance(kw["api_key"], ast.Name | ast.Attribute | ast.Call | ast.Constant):
                pytest.fail(f"{path}:{line}: api_key passed from an unexpected expression")
            if isinstance(kw.get("api_key"), ast.Constant) and kw["api_key"].value not in (None, ""):
                pytest.fail(f"{path}:{line}: a literal API key")
    backends = (PACKAGE / "teacher" / "backends.py").read_text()
    assert "os.environ" in backends


# -- remote code -------------------------------------------------------------------------------------------
# load_tokenizer calls allowed not to pass the config's trust_remote_code, each with the reason (none left).
TOKENIZER_DEFAULT_OFF: set[tuple[str, str]] = set()


def test_every_model_and_tokenizer_load_states_trust_remote_code():
    """Static scan: every from_pretrained / vLLM LLM / load_tokenizer call in rlmec_core passes
    trust_remote_code explicitly (the config's value, or a literal False for files this project wrote)."""
    missing = []
    for path in PACKAGE.rglob("*.py"):
        rel = str(path.relative_to(PACKAGE))
        for line, name, kw in calls(path):
            loader = name.endswith(".from_pretrained") or name in ("LLM", "load_tokenizer")
            if not loader or "trust_remote_code" in kw:
                continue
            if (rel, name) in TOKENIZER_DEFAULT_OFF:
                continue
            missing.append(f"{rel}:{line}: {name}")
    assert missing == []
    for path in python_sources():
        for line, _, kw in calls(path):
            value = kw.get("trust_remote_code")
            if isinstance(value, ast.Constant):
                assert value.value is False, f"{path}:{line}: trust_remote_code={value.value!r} hard-coded"


def test_schema_keeps_remote_code_off_by_default():
    from rlmec_core.config import default_config

    assert default_config()["engine"]["trust_remote_code"] is False


@pytest.mark.parametrize("trust", [False, True])
def test_loads_at_run_time_pass_the_configs_trust_remote_code(demo_policy, demo_task, tmp_path, monkeypatch, trust):
    """Every from_pretrained call made by the sample and RL stages carries engine.trust_remote_code."""
    import transformers

    from rlmec_core.config import validate_config
    from rlmec_core.io import write_parquet
    from rlmec_core.sampling import EngineSettings, SampleSettings
    from rlmec_core.schemas import TOKEN_REWARDS
    from rlmec_core.stages.rl import rl_update
    from rlmec_core.stages.sample import sample_policy

    seen = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer, transformers.AutoConfig):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, _name=cls.__name__, **kwargs):
            seen.append((_name, kwargs.get("trust_remote_code", "<absent>"), kwargs.get("use_safetensors")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    sample_policy(demo_policy, demo_task["test"], tmp_path / "s.parquet", adapter_name="arith", prompt_template=None,
                  settings=SampleSettings(n=1, max_new_tokens=8), engine=EngineSettings(backend="hf",
                                                                                        trust_remote_code=trust),
                  limit=2)
    from test_bad_inputs import token_rewards_table

    write_parquet(token_rewards_table(2), tmp_path / "labels.parquet", TOKEN_REWARDS)
    cfg = validate_config({"rl": {"train": {"epochs": 1, "batch_size": 2}, "validation": {"enabled": False}}})["rl"]
    rl_update(tmp_path / "labels.parquet", demo_policy, tmp_path / "rl", rl_cfg=cfg, seed=0,
              checkpoint_dir=tmp_path / "ckpt", metrics_path=tmp_path / "rl.jsonl", trust_remote_code=trust)
    names = {n for n, _, _ in seen}
    assert {"AutoModelForCausalLM", "AutoTokenizer"} <= names
    assert {t for _, t, _ in seen} == {trust}, seen
    assert all(s is True for n, _, s in seen if n == "AutoModelForCausalLM"), seen  # weights as safetensors


# -- weights and pickles -------------------------------------------------------------------------------------
def test_models_are_loaded_and_saved_as_safetensors_only():
    """Static scan: model loads ask for safetensors, model saves write safetensors."""
    problems = []
    for path in PACKAGE.rglob("*.py"):
        for line, name, kw in calls(path):
            if name.endswith("AutoModelForCausalLM.from_pretrained"):
                v = kw.get("use_safetensors")
                if not (isinstance(v, ast.Constant) and v.value is True):
                    problems.append(f"{path}:{line}: {name} without use_safetensors=True")
            if name.endswith(".save_pretrained") and "tok" not in name.lower():
                v = kw.get("safe_serialization")
                if not (isinstance(v, ast.Constant) and v.value is True):
                    problems.append(f"{path}:{line}: {name} without safe_serialization=True")
    assert problems == []


def test_nothing_unpickles_files():
    """Static scan: no pickle/dill/joblib/shelve import, no np.load(allow_pickle=True), and torch.load only with
    weights_only=True (there is none today; accelerate's checkpoint loading is checked at run time)."""
    problems = []
    for path in python_sources():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(m and m.split(".")[0] in ("pickle", "dill", "joblib", "shelve", "cloudpickle") for m in mods):
                    problems.append(f"{path}:{node.lineno}: imports {mods}")
        for line, name, kw in calls(path):
            if name.endswith("torch.load"):
                v = kw.get("weights_only")
                if not (isinstance(v, ast.Constant) and v.value is True):
                    problems.append(f"{path}:{line}: {name} without weights_only=True")
            if name.endswith("np.load") or name.endswith("numpy.load"):
                v = kw.get("allow_pickle")
                if v is not None and not (isinstance(v, ast.Constant) and v.value is False):
                    problems.append(f"{path}:{line}: {name} with allow_pickle")
    assert problems == []


def test_a_pickle_beside_the_weights_is_never_unpickled(demo_policy, demo_task, tmp_path):
    """A model directory with safetensors weights and a booby-trapped pytorch_model.bin: the stage samples
    from the safetensors weights; unpickling the .bin would create a file, and none appears."""
    import pickle

    model = tmp_path / "model"
    shutil.copytree(demo_policy, model)
    sentinel = tmp_path / "UNPICKLED"

    class Trap:
        def __reduce__(self):
            return (Path.touch, (sentinel,))

    (model / "pytorch_model.bin").write_bytes(pickle.dumps(Trap()))
    from rlmec_core.sampling import EngineSettings, SampleSettings
    from rlmec_core.stages.sample import sample_policy

    sample_policy(model, demo_task["test"], tmp_path / "s.parquet", adapter_name="arith", prompt_template=None,
                  settings=SampleSettings(n=1, max_new_tokens=8), engine=EngineSettings(backend="hf"), limit=2)
    assert (tmp_path / "s.parquet").exists()
    assert not sentinel.exists()


def test_resuming_from_a_checkpoint_loads_with_weights_only(demo_policy, tmp_path, monkeypatch):
    """The training loop resumes through accelerate's load_state, which reads the optimizer, scheduler and RNG
    states with torch.load: every call must have weights_only=True (the model itself is safetensors)."""
    import torch

    import rlmec_core.stages.rl as rl_stage
    from rlmec_core.config import validate_config
    from rlmec_core.io import write_parquet
    from rlmec_core.schemas import TOKEN_REWARDS
    from test_bad_inputs import token_rewards_table

    labels = tmp_path / "labels.parquet"
    write_parquet(token_rewards_table(8), labels, TOKEN_REWARDS)
    cfg = validate_config({"rl": {"train": {"epochs": 1, "batch_size": 2, "checkpoint_every": 1},
                                  "validation": {"enabled": False}}})["rl"]
    kwargs = dict(rl_cfg=cfg, seed=0, checkpoint_dir=tmp_path / "ckpt", metrics_path=tmp_path / "rl.jsonl")

    def crash(*args, **kw):
        raise RuntimeError("crash before saving")

    with monkeypatch.context() as m:
        m.setattr(rl_stage, "write_model_dir", crash)
        with pytest.raises(RuntimeError, match="crash before saving"):
            rl_stage.rl_update(labels, demo_policy, tmp_path / "out", **kwargs)
    assert list((tmp_path / "ckpt").glob("step-*"))
    loads = []
    original = torch.load

    def spy(*args, **kw):
        loads.append(kw.get("weights_only"))
        return original(*args, **kw)

    monkeypatch.setattr(torch, "load", spy)
    card = rl_stage.rl_update(labels, demo_policy, tmp_path / "out", **kwargs)
    assert card["resumed_from_step"] == 3
    assert loads and all(w is True for w in loads), loads
