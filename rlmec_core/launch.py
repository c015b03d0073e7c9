"""Run a training stage in this process or under ``accelerate launch`` (config ``launch``).

The training stages (policy bootstrap, GRM SFT, RL and its baselines, GRPO) are plain functions over the
shared accelerate loop. :func:`run_training` calls one of them directly when ``launch.num_processes`` is 1
and no ``launch.accelerate_config`` is set (the demo, one GPU), and otherwise writes the call to a JSON
file and starts::

    accelerate launch [--config_file F] --num_processes N [--main_process_port P] [extra args] \\
        -m rlmec_core.launch <call.json>

Every launched process runs ``python -m rlmec_core.launch <call.json>`` (this module's :func:`main`), which
calls the same stage function with the same arguments; the training loop shards the batches over the
processes and the main process writes the outputs. ``torchrun --nproc_per_node N -m rlmec_core.launch
<call.json>`` works the same way (tests/test_distributed.py). Only the stage functions named in
:data:`ENTRYPOINTS` can be called (the JSON never names code to import).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("rlmec")

#: stage name -> "module:function" of the training functions that may be launched
ENTRYPOINTS: dict[str, str] = {
    "policy_bootstrap": "rlmec_core.stages.policy:bootstrap_policy",
    "grm_train": "rlmec_core.stages.grm:train_grm",
    "rl": "rlmec_core.stages.rl:rl_update",
    "sft_gold": "rlmec_core.stages.rl:sft_gold_update",
    "rft": "rlmec_core.stages.rl:rft_update",
    "grpo": "rlmec_core.stages.grpo:grpo_update",
}

DEFAULT_LAUNCH: dict[str, Any] = {"num_processes": 1, "accelerate_config": None, "main_process_port": None,
                                  "extra_args": []}


def _function(stage: str) -> Any:
    if stage not in ENTRYPOINTS:
        raise ValueError(f"unknown training stage {stage!r}; expected one of {sorted(ENTRYPOINTS)}")
    module, name = ENTRYPOINTS[stage].split(":")
    return getattr(importlib.import_module(module), name)


def _plain(value: Any) -> Any:
    """Arguments as JSON values (paths as strings, tuples as lists, mappings as dicts)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot pass {type(value).__name__} to a launched process: {value!r}")


def is_launched(launch: Mapping[str, Any] | None) -> bool:
    """Whether ``launch`` asks for ``accelerate launch`` (more than one process or an accelerate config)."""
    cfg = {**DEFAULT_LAUNCH, **(launch or {})}
    return int(cfg["num_processes"]) > 1 or bool(cfg["accelerate_config"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(call_path: str | Path, launch: Mapping[str, Any], *, python: str | None = None) -> list[str]:
    """The ``accelerate launch`` command line that runs ``call_path`` (see the module docstring)."""
    cfg = {**DEFAULT_LAUNCH, **launch}
    n = int(cfg["num_processes"])
    if n < 1:
        raise ValueError(f"launch.num_processes must be >= 1, got {n}")
    cmd = [python or sys.executable, "-m", "accelerate.commands.launch"]
    if cfg["accelerate_config"]:
        config_file = Path(cfg["accelerate_config"])
        if not config_file.is_file():
            raise FileNotFoundError(f"launch.accelerate_config: {config_file} does not exist")
        cmd += ["--config_file", str(config_file)]
    cmd += ["--num_processes", str(n), "--main_process_port", str(cfg["main_process_port"] or free_port())]
    if n > 1 and not cfg["accelerate_config"]:
        cmd += ["--multi_gpu"] if _cuda_available() else ["--cpu"]
    cmd += [str(a) for a in cfg["extra_args"]]
    return [*cmd, "-m", "rlmec_core.launch", str(call_path)]


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_training(stage: str, kwargs: Mapping[str, Any], launch: Mapping[str, Any] | None = None) -> Any:
    """Run training stage ``stage`` (a key of :data:`ENTRYPOINTS`) with ``kwargs``.

    In this process when :func:`is_launched` is false; otherwise under ``accelerate launch`` (the call is
    written to a temporary JSON file; the main process's return value comes back through another). The
    launched processes inherit this process's environment, stdout and stderr (the rule's log).

    Raises:
        ValueError: unknown stage; TypeError: an argument that is not a JSON value or a path;
        RuntimeError: the launched processes failed (the message gives the exit status and the command).
    """
    func = _function(stage)
    if not is_launched(launch):
        return func(**kwargs)
    call = {"stage": stage, "kwargs": _plain(kwargs)}
    tmp = Path(tempfile.mkdtemp(prefix=f"rlmec-launch-{stage}-"))
    try:
        call_path = tmp / "call.json"
        call["result"] = str(tmp / "result.json")
        call_path.write_text(json.dumps(call))
        cmd = launch_command(call_path, launch or {})
        log.info("launching %s: %s", stage, " ".join(cmd))
        sys.stdout.flush()
        sys.stderr.flush()
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"training stage {stage} failed under accelerate launch (exit {proc.returncode}): "
                               f"{' '.join(cmd)}")
        result_path = Path(call["result"])
        return json.loads(result_path.read_text()) if result_path.exists() else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of each launched process: ``python -m rlmec_core.launch <call.json>``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m rlmec_core.launch <call.json>", file=sys.stderr)
        return 2
    call = json.loads(Path(args[0]).read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    result = _function(call["stage"])(**call["kwargs"])
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0 and call.get("result"):
        Path(call["result"]).write_text(json.dumps(result, default=str))
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
