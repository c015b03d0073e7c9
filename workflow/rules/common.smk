# Paths and helpers shared by every rule file.
import json
import math
import re
from pathlib import Path

RUN = config["run"]
RESULTS = f"results/{RUN}"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
TASK = config["task"]
DATA = f"data/{TASK['name']}"
SPLITS = ("train", "validation", "test")
BOOTSTRAP = config["policy"]["model"] is None


def canonical(value):
    """A config block with keys sorted at every level: rules pass settings through params, and Snakemake
    reruns a job when its params differ, so reordering keys in a YAML file must not count as a change."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


wildcard_constraints:
    split="train|validation|test",
    policy=r"[A-Za-z0-9_][A-Za-z0-9_.+-]*",  # run names carry their lr, e.g. dpo_lr0.0005_s1


def policy_dir(policy):
    """Where a policy's model lives: results/<run>/policy/<name>, or policy.model for a given 'sft'."""
    if policy == "sft" and not BOOTSTRAP:
        return config["policy"]["model"]
    return f"{RESULTS}/policy/{policy}"


def policy_input(wildcards):
    """The policy directory as a rule input when this workflow makes it (nothing for a given model)."""
    return policy_requirement(wildcards.policy)


def policy_requirement(policy):
    if policy == "sft" and not BOOTSTRAP:
        return []
    return policy_dir(policy)


def data_sources(wildcards):
    """Local source files and directories (with the files in them) of a real data set, so that editing one
    reruns the data stage. The demo task has none (it is generated); a hub data set is no file (its path,
    name and revision are params)."""
    from rlmec_core.sources import local_source_inputs

    if TASK["adapter"] == "arith":
        return {}
    paths = {split: local_source_inputs(source) for split, source in TASK["source"].items()}
    return {split: files for split, files in paths.items() if files}


def eval_metrics(policy):
    return expand(f"{RESULTS}/eval/{policy}/{{split}}/metrics.json", split=config["evaluate"]["splits"])


def final_targets():
    return [
        *eval_metrics("sft"),
        *eval_metrics("sft_gold"),
        *eval_metrics("rlmec"),
        f"{RESULTS}/grm/quality.json",
        *([f"{RESULTS}/rounds/table.md"] if ROUNDS > 1 else []),  # every round of rlmec and sft_gold, evaluated
        f"{RESULTS}/report.html",
    ]


# -- the comparison of methods (compare.smk) --------------------------------------------------------------
COMPARE = config["compare"]
TRAINED_METHODS = ["rft", "instance_rl", "instance_rl_no_imitation", "dpo", "rlmec", "rlmec_no_imitation",
                   "rlmec_imitation_only", "rlmec_teacher_rewrites"]  # through method_rl (sft_gold, grpo: own rules)
METHOD_LABELS = {"rlmec_teacher_rewrites": f"{RESULTS}/label/teacher/token_rewards.parquet"}


def method_lr(method):
    """The peak learning rate a compared method trains with: compare.lr, else rl.train.lr (grpo: compare.grpo.lr)."""
    default = COMPARE["grpo"]["lr"] if method == "grpo" else config["rl"]["train"]["lr"]
    return float(COMPARE["lr"].get(method, default))


def sft_gold_run(wildcards):
    """(lr, seed, name) of an sft_gold run: from its wildcards, or the default target's run."""
    if hasattr(wildcards, "lr"):
        return float(wildcards.lr), int(wildcards.seed), f"sft_gold_lr{wildcards.lr}_s{wildcards.seed}"
    return method_lr("sft_gold"), config["seed"], "sft_gold"


def lr_tag(lr):
    return f"{float(lr):g}"


LR_PATTERN = r"[0-9][0-9.e+-]*"


# The in-training validation of every policy update (rl.validation, rl.select): the rules that train a policy pass
# it on, with the validation split as an input.
VALIDATION_SPLIT = f"{DATA}/validation.parquet"
RL_VALIDATION = {"validation": config["rl"]["validation"], "select": config["rl"]["select"]}


def rl_with_lr(lr):
    """The rl config with the peak learning rate of one run (a compared method's or the sweep's)."""
    return canonical({**config["rl"], "train": {**config["rl"]["train"], "lr": float(lr)}})


def method_policy(method, seed, lr=None):
    """The policy directory name of one (method, seed, lr) run, ``<method>_lr<lr>_s<seed>``; the default
    target's runs (``policy/rlmec``, ``policy/sft_gold``) are reused for their own seed and learning rate."""
    if method == "sft":
        return "sft"
    lr = method_lr(method) if lr is None else float(lr)
    if method == "rlmec" and int(seed) == config["seed"] and lr == float(config["rl"]["train"]["lr"]):
        return "rlmec"
    if method == "sft_gold" and int(seed) == config["seed"] and lr == method_lr("sft_gold"):
        return "sft_gold"
    return f"{method}_lr{lr_tag(lr)}_s{seed}"


def compare_runs():
    return [(m, s, method_policy(m, s)) for m in COMPARE["methods"] for s in COMPARE["seeds"]]


def sweep_lrs(method):
    """The lrs one method is swept at: compare.sweep.lrs plus the lr it is compared at, so the sweep table
    always holds a validation figure for the compared lr."""
    lrs = [float(lr) for lr in COMPARE["sweep"]["lrs"]]
    used = method_lr(method)
    return sorted(lrs if any(math.isclose(used, lr) for lr in lrs) else [*lrs, used])


def sweep_runs():
    """The validation sweep's runs: (method, lr, policy name), one seed."""
    sweep = COMPARE["sweep"]
    return [(m, lr, method_policy(m, sweep["seed"], lr)) for m in sweep["methods"] for lr in sweep_lrs(m)]


def compare_run_files():
    """Every compared run with the files the table reads (all of them are also inputs of the rule)."""
    splits = list(dict.fromkeys([*config["evaluate"]["splits"], "test"]))
    return [
        {
            "method": m,
            "seed": s,
            "policy": p,
            "model": policy_dir(p),
            "metrics": {split: f"{RESULTS}/eval/{p}/{split}/metrics.json" for split in splits},
            "predictions": f"{RESULTS}/eval/{p}/test/predictions.parquet",
            "lr": None if m == "sft" else method_lr(m),
        }
        for m, s, p in compare_runs()
    ]


SUMMARY_FIRST = ("sft", "sft_gold", "rlmec")  # the starting policy, more SFT on gold data, the method


def print_summary():
    """Print the accuracy of every evaluated policy (called on success): the default target's three first,
    then the later rounds' policies (``<policy> r<round>``)."""
    rows = []

    def order(path):
        policy, split = path.parts[-3], path.parts[-2]
        rnd = int(path.parts[-5][len("round"):]) if path.parts[-5].startswith("round") else 1
        first = SUMMARY_FIRST.index(policy) if policy in SUMMARY_FIRST else len(SUMMARY_FIRST)
        return rnd, first, policy, SPLITS.index(split) if split in SPLITS else len(SPLITS), split

    found = [*Path(RESULTS, "eval").glob("*/*/metrics.json"), *Path(RESULTS).glob("round*/eval/*/*/metrics.json")]
    for path in sorted(found, key=order):
        m = json.loads(path.read_text())
        policy, split = path.parts[-3], path.parts[-2]
        if path.parts[-5].startswith("round"):
            policy = f"{policy} r{path.parts[-5][len('round'):]}"
        rows.append(
            f"  {policy:<20} {split:<11} {100 * m['accuracy']:5.1f}%  "
            f"[{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}]  n={m['total']}  ({m['backend']})"
        )
    if rows:
        print(f"\nRLMEC run '{RUN}': greedy accuracy ({100 * config['evaluate']['confidence']:.0f}% Wilson CI)")
        print("\n".join(rows))
        print(f"  outputs: {RESULTS}/\n")


# -- rounds (rounds.smk): round r >= 2 trains every chain from its round r-1 policy on a fresh draw -------------
ROUNDS = config["rounds"]
REFRESH = config["grm"]["refresh"]["teacher_budget"]  # None: the round-1 GRM serves every round
ROUND_SEED_STRIDE = 1000  # round r's sampling seeds: the round-1 seed + 1000 (r - 1)
_RUN_NAME = re.compile(r"(?P<method>[a-z_]+?)_lr(?P<lr>[0-9][0-9.e+-]*)_s(?P<seed>[0-9]+)")


def parse_run(name):
    """``(method, lr, seed)`` of a policy name made by method_policy (``rlmec``, ``sft_gold`` or
    ``<method>_lr<lr>_s<seed>``)."""
    if name == "rlmec":
        return "rlmec", float(config["rl"]["train"]["lr"]), config["seed"]
    if name == "sft_gold":
        return "sft_gold", method_lr("sft_gold"), config["seed"]
    m = _RUN_NAME.fullmatch(name)
    if m is None:
        raise ValueError(f"{name!r} is not a run name (<method>_lr<lr>_s<seed>)")
    return m["method"], float(m["lr"]), int(m["seed"])


def round_policy(name, r):
    """The policy of chain ``name`` after round ``r`` (0: the starting policy; 1: the one-round run)."""
    r = int(r)
    if r == 0:
        return policy_dir("sft")
    return policy_dir(name) if r == 1 else f"{RESULTS}/round{r}/policy/{name}"


def prev_policy(wc):
    """A round job's starting policy: its chain's policy after the previous round."""
    return round_policy(wc.name, int(wc.r) - 1)


def prev_policy_input(wc):
    """The same policy as a rule input (nothing for a given starting model, which no rule makes)."""
    return round_policy_input(wc.name, int(wc.r) - 1)


def chain_seed(wc):
    return parse_run(wc.name)[2]


def round_rl_cfg(wc):
    """The rl config of a round job: its chain's learning rate."""
    return rl_with_lr(parse_run(wc.name)[1])


def round_policy_input(name, r):
    return policy_requirement("sft") if int(r) == 0 else round_policy(name, r)


def round_eval(name, r, split):
    r = int(r)
    if r == 0:
        return f"{RESULTS}/eval/sft/{split}/metrics.json"
    return f"{RESULTS}/eval/{name}/{split}/metrics.json" if r == 1 else f"{RESULTS}/round{r}/eval/{name}/{split}/metrics.json"


def round_draw(r):
    """Round r's problems: sample.draws.rl shifted by (r - 1) draws; later rounds need the whole range."""
    rl = SAMPLE["draws"]["rl"]
    if int(r) == 1:
        return canonical(rl)
    return canonical({"first": rl["first"] + (int(r) - 1) * rl["problems"], "problems": rl["problems"], "exact": True})


def round_samples(name, r):
    """Samples labelled in round r: the starting policy's draw in round 1, the chain's own after."""
    if int(r) == 1:
        return f"{RESULTS}/samples/sft/{GRM['rewrite_draw']}.parquet"
    return f"{RESULTS}/round{r}/samples/{name}.parquet"


def round_grm(name, r):
    """The GRM that rewrites and labels round r of chain ``name``."""
    if int(r) == 1 or not REFRESH:
        return f"{RESULTS}/grm/model"
    return f"{RESULTS}/round{r}/grm/{name}/model"


def round_labels(name, r, kind="token_rewards.parquet"):
    return f"{RESULTS}/label/{kind}" if int(r) == 1 else f"{RESULTS}/round{r}/label/{name}/{kind}"


def matched_rlmec(name):
    """The RLMEC chain whose optimizer steps an sft_gold chain matches: the same seed."""
    return method_policy("rlmec", parse_run(name)[2])


def round_chains(methods, seeds):
    """(method, seed, name) of every chain: its round-1 policy name is the one-round run's."""
    return [(m, s, method_policy(m, s)) for m in methods for s in seeds]


def rounds_params(chains):
    """The rounds table's input description (rlmec_core.rounds.build_rounds)."""
    splits = config["evaluate"]["splits"]
    return [{"method": m, "seed": s, "lr": parse_run(name)[1],
             "policies": [round_policy(name, r) for r in range(ROUNDS + 1)],
             "metrics": [{sp: round_eval(name, r, sp) for sp in splits} for r in range(ROUNDS + 1)]}
            for m, s, name in chains]


def rounds_grm_quality(chains):
    if not REFRESH:
        return []
    return [{"round": r, "method": m, "seed": s, "refreshed": f"{RESULTS}/round{r}/grm/{name}/quality.json",
             "stale": f"{RESULTS}/round{r}/grm/{name}/quality_stale.json"}
            for m, s, name in chains if m == "rlmec" for r in range(2, ROUNDS + 1)]


def rounds_inputs(chains):
    """Every file the rounds table reads."""
    return [*(p for c in rounds_params(chains) for by_split in c["metrics"] for p in by_split.values()),
            *(q[k] for q in rounds_grm_quality(chains) for k in ("refreshed", "stale"))]


DEFAULT_CHAINS = [("rlmec", config["seed"], "rlmec"), ("sft_gold", config["seed"], "sft_gold")]


def check_rounds():
    """Planning-time check: later rounds need a fixed-size rl draw, and the demo's split must hold them."""
    if ROUNDS == 1:
        return
    rl = SAMPLE["draws"]["rl"]
    if rl["problems"] is None:
        raise ValueError("rounds > 1 needs sample.draws.rl.problems (each round draws that many fresh problems)")
    need = rl["first"] + ROUNDS * rl["problems"]
    if TASK["adapter"] == "arith" and need > TASK["synth"]["n_train"]:
        raise ValueError(f"rounds={ROUNDS}: the rounds' fresh draws need {need} problems of the train split "
                         f"(sample.draws.rl first={rl['first']}, problems={rl['problems']}) but task.synth.n_train "
                         f"is {TASK['synth']['n_train']}; lower rounds or sample.draws.rl.problems")


# -- the evaluation suite (eval_suite.smk) ------------------------------------------------------------------
SUITE = config["eval_suite"]
SUITE_TASKS = {t["name"]: t for t in SUITE["tasks"]}


def suite_tables(kind):
    """Every suite set's table of one kind (test, shots); a clear error, before any job runs, when
    eval_suite.tasks lists none (or a name twice): the stage's own check, run at planning time."""
    from rlmec_core.stages.eval_suite import suite_tasks

    return [f"data/suite/{t.name}/{kind}.parquet" for t in suite_tasks(SUITE["tasks"])]


def suite_task_inputs(wildcards):
    """Local files of a suite set's sources (editing one rebuilds its tables); hub sets are params."""
    from rlmec_core.sources import local_source_inputs

    t = SUITE_TASKS[wildcards.suite_task]
    return [*local_source_inputs(t["source"]), *local_source_inputs(t.get("few_shot_source"))]


# -- Snakemake resources per group of stages (config `resources`; docs/scaling.md) -------------------------
RESOURCE_GPU_FOLLOWS = {
    "generate": config["engine"]["tensor_parallel_size"],  # GPUs of one vLLM engine
    "train": config["launch"]["num_processes"],  # one training process per GPU
}


def group_resources(group):
    """A rule's resources from `resources.<group>`: mem_mb, runtime (minutes), gpu, and gpu_jobs=1 for a job
    that can use a GPU (profiles/gpu_node allows one such job at a time: Snakemake assigns no CUDA devices).
    Generation and training jobs use a visible GPU whatever they requested, so they always declare gpu_jobs."""
    settings = config["resources"][group]
    gpu = settings["gpu"]
    if gpu is None:
        gpu = RESOURCE_GPU_FOLLOWS[group] if config["resources"]["accelerator"] == "gpu" else 0
    resources = {"mem_mb": settings["mem_mb"], "runtime": settings["runtime"], "gpu": gpu}
    if gpu or group in RESOURCE_GPU_FOLLOWS:
        resources["gpu_jobs"] = 1
    return resources
