"""Glue between Snakemake stage scripts and the library: logging into the rule's ``log:`` file, thread
settings, and a record of the parameters a stage ran with. Importable without Snakemake."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("rlmec")


def plain(obj: Any) -> Any:
    """Snakemake's Namedlist/params objects as plain JSON-able values (for the log and launched stages)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "items"):
        return {str(k): plain(v) for k, v in obj.items()}
    return str(obj)


def tracker_run_name(rule: str, wildcards: Any) -> str:
    """A stage's tracker run: the rule's name, then its wildcard values (``evaluate/sft/validation``)."""
    values = [str(v) for v in (list(wildcards.values()) if isinstance(wildcards, dict) else list(wildcards or []))]
    return "/".join([rule, *values])


def publish_tracking(smk: Any) -> None:
    """Config ``tracking`` of the job's pipeline run, published for the stage (``rlmec_core.tracking``)."""
    from rlmec_core.tracking import TrackingSettings, to_env

    config = getattr(smk, "config", None) or {}
    run = config.get("run", "run")
    rule = getattr(smk, "rule", None) or "stage"
    settings = TrackingSettings.from_config(config.get("tracking"), run=run, stage=tracker_run_name(rule, getattr(smk, "wildcards", None)),
                                            results_dir=f"results/{run}")
    to_env(settings)


@contextlib.contextmanager
def stage_context(smk: Any, stage: str) -> Iterator[None]:
    """Run a stage with stdout/stderr (file descriptors, so child processes too) sent to ``log[0]``.

    Sets torch's thread count to the rule's ``threads``, logs the parameters, and logs the wall time
    or the exception (which is re-raised, so Snakemake marks the job failed and removes its outputs).
    """
    log_path = smk.log[0] if len(smk.log) else None
    threads = int(getattr(smk, "threads", 1) or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    saved = None
    if log_path:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        saved = (os.dup(1), os.dup(2))
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    import torch

    torch.set_num_threads(threads)
    publish_tracking(smk)
    params = {k: plain(v) for k, v in smk.params.items()} if hasattr(smk.params, "items") else {}
    log.info("stage %s: threads=%d params=%s", stage, threads, json.dumps(params, sort_keys=True))
    t0 = time.monotonic()
    try:
        yield
    except BaseException:
        log.exception("stage %s failed after %.1f s", stage, time.monotonic() - t0)
        raise
    else:
        outputs = [str(o) for o in (getattr(smk, "output", None) or [])]
        log.info("stage %s done in %.1f s; wrote %s", stage, time.monotonic() - t0, ", ".join(outputs) or "nothing")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
