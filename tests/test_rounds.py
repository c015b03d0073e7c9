"""Accuracy by round of iterative RLMEC (rlmec_core.rounds) and its section of the run report."""

from __future__ import annotations

import base64
import html
import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest

from rlmec_core.report import build_report
from rlmec_core.rounds import build_rounds, round_gain
from test_report import _comparison, make_run, report_args

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N_VAL, N_TEST = 500, 1000
SEEDS = (0, 1, 2)
# Correct counts of (method, seed, round) out of N_VAL validation and N_TEST test problems: rlmec gains 10 points in
# round 1 and 0.2 points in round 2 (within noise); dpo gains 20 points in each round; sft_gold stays flat.


def val_correct(method: str, seed: int, r: int) -> int:
    if method == "rlmec":
        return (250, 300, 350)[seed] + (0, 50, 51)[r]
    if method == "dpo":
        return 250 + 100 * r + 3 * seed
    return (250, 251, 252)[seed]


def correct_on_test(method: str, seed: int, r: int) -> int:
    return 400 + 10 * seed + 20 * r + (5 if method == "rlmec" else 0)




def write_metrics(path: Path, correct: int, total: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    acc = correct / total
    path.write_text(json.dumps({"accuracy": acc, "correct": correct, "total": total, "ci_low": acc - 0.04,
                                "ci_high": acc + 0.04, "backend": "hf"}))
    return path


def make_chains(root: Path, methods: tuple[str, ...] = ("rlmec", "dpo", "sft_gold"), n_rounds: int = 3,
                lrs: dict[str, float | None] | None = None) -> list[dict[str, Any]]:
    lrs = lrs or {"rlmec": 2e-5, "dpo": 1e-6, "sft_gold": None}
    chains = []
    for m in methods:
        for s in SEEDS:
            metrics, policies = [], []
            for r in range(n_rounds):
                policies.append("sft" if r == 0 else f"{m}_r{r}_s{s}")
                d = root / "eval" / f"{m}_s{s}" / f"r{r}"
                metrics.append({"validation": str(write_metrics(d / "validation.json", val_correct(m, s, r), N_VAL)),
                                "test": str(write_metrics(d / "test.json", correct_on_test(m, s, r), N_TEST))})
            chains.append({"method": m, "seed": s, "lr": lrs.get(m), "policies": policies, "metrics": metrics})
    return chains


def write_quality(path: Path, rac: float, esa: float, f1: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rewrite_answer_correct": rac, "error_step_accuracy": esa, "token_flag_f1": f1,
                                "token_flag_precision": 0.42, "token_flag_recall": 0.38, "validation_correct": 307,
                                "validation_wrong": 479}))
    return path


def grm_entries(root: Path) -> list[dict[str, Any]]:
    """GRM quality of rounds 2 and 1 (out of order: the summary sorts them); round 1 has no stale GRM."""
    two, two_stale = write_quality(root / "grm2" / "q.json", 0.02, 0.75, 0.41), write_quality(
        root / "grm2" / "stale.json", 0.0104, 0.739, 0.401)
    one = write_quality(root / "grm1" / "q.json", 0.5, 0.8, 0.5)
    return [{"round": 2, "method": "rlmec", "seed": 0, "refreshed": str(two), "stale": str(two_stale)},
            {"round": 1, "method": "rlmec", "seed": 0, "refreshed": str(one), "stale": None}]


def outs(root: Path) -> dict[str, Path]:
    return {"out_md": root / "out" / "rounds.md", "out_json": root / "out" / "rounds.json",
            "out_png": root / "out" / "rounds.png"}


def naive_gain(prev: list[float], cur: list[float], n_val: int) -> dict[str, Any]:
    """round_gain written out plainly."""
    k = len(prev)
    gains = []
    for i in range(k):
        gains.append(cur[i] - prev[i])
    mean = sum(gains) / k
    seed_term = 0.0
    if k > 1:
        ss = 0.0
        for g in gains:
            ss += (g - mean) ** 2
        seed_term = ss / (k - 1) / k
    p = (sum(prev) + sum(cur)) / (2 * k)
    se = math.sqrt(seed_term + 2 * p * (1 - p) / (n_val * k))
    return {"mean": mean, "se": se, "pays": mean > 1.96 * se}


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_round_gain_equals_the_naive_twin(k: int) -> None:
    rng = random.Random(100 + k)
    for _ in range(200):
        prev = [rng.random() for _ in range(k)]
        cur = [min(1.0, max(0.0, p + rng.gauss(0.03, 0.05))) for p in prev]
        n_val = rng.choice([1, 50, 500, 5000])
        got, want = round_gain(prev, cur, n_val), naive_gain(prev, cur, n_val)
        assert got["mean"] == pytest.approx(want["mean"], abs=1e-12)
        assert got["se"] == pytest.approx(want["se"], rel=1e-9, abs=1e-15)
        assert got["pays"] == want["pays"] or math.isclose(want["mean"], 1.96 * want["se"], rel_tol=1e-9)
    assert round_gain([0.5], [0.6], 100) == naive_gain([0.5], [0.6], 100)
    with pytest.raises(ValueError):
        round_gain([0.5, 0.6], [0.6], 100)
    with pytest.raises(ValueError):
        round_gain([], [], 100)
    with pytest.raises(ValueError):
        round_gain([0.5], [0.6], 0)


def test_build_rounds_numbers(tmp_path: Path) -> None:
    chains = make_chains(tmp_path)
    o = outs(tmp_path)
    summary = build_rounds(chains, **o, grm_quality=grm_entries(tmp_path))
    on_disk = json.loads(o["out_json"].read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert list(on_disk["methods"]) == ["rlmec", "dpo", "sft_gold"]  # first-seen order survives the file
    assert summary["rounds"] == 2 and summary["splits"] == ["validation", "test"]
    assert summary["gain_split"] == "validation" and "1.96" in summary["noise_rule"]
    assert list(summary["methods"]) == ["rlmec", "dpo", "sft_gold"]
    r = summary["methods"]["rlmec"]
    assert r["lr"] == 2e-5 and r["seeds"] == [0, 1, 2] and summary["methods"]["sft_gold"]["lr"] is None
    assert r["policies"][1] == ["sft", "rlmec_r1_s1", "rlmec_r2_s1"]
    assert [e["round"] for e in r["rounds"]] == [0, 1, 2]
    # exact means and stds (fractions)
    v0 = r["rounds"][0]["validation"]
    assert v0["values"] == [0.5, 0.6, 0.7]
    assert v0["mean"] == pytest.approx(0.6) and v0["std"] == pytest.approx(0.1)
    v1 = r["rounds"][1]["validation"]
    assert v1["mean"] == pytest.approx(0.7) and v1["std"] == pytest.approx(0.1)
    t2 = r["rounds"][2]["test"]
    assert t2["values"] == pytest.approx([0.445, 0.455, 0.465])
    assert t2["mean"] == pytest.approx(0.455) and t2["std"] == pytest.approx(0.01)
    d1 = summary["methods"]["dpo"]["rounds"][1]["validation"]
    assert d1["mean"] == pytest.approx(0.706) and d1["std"] == pytest.approx(0.006)
    # gains: none in round 0; round 1 gains 10 points (pays), round 2 0.2 points (within noise)
    assert r["rounds"][0]["val_gain"] is None
    g1, g2 = r["rounds"][1]["val_gain"], r["rounds"][2]["val_gain"]
    assert g1["mean"] == pytest.approx(0.1) and g1["pays"] is True
    assert g2["mean"] == pytest.approx(0.002) and g2["pays"] is False
    assert g2 == pytest.approx(naive_gain([0.6, 0.7, 0.8], [0.602, 0.702, 0.802], N_VAL))
    assert r["stops_paying_at"] == 2
    assert summary["methods"]["dpo"]["stops_paying_at"] is None
    assert summary["methods"]["sft_gold"]["stops_paying_at"] == 1
    # GRM quality, by round, the three headline keys only
    assert [g["round"] for g in summary["grm"]] == [1, 2]
    assert summary["grm"][0]["stale"] is None
    assert summary["grm"][1]["refreshed"] == {"rewrite_answer_correct": 0.02, "error_step_accuracy": 0.75,
                                              "token_flag_f1": 0.41}
    assert summary["grm"][1]["stale"]["error_step_accuracy"] == 0.739

    md = o["out_md"].read_text()
    assert "| `rlmec` | 0 | 60.0 ± 10.0 | 41.5 ± 1.0 |  |  |" in md
    se1 = 100 * 1.96 * g1["se"]
    assert f"| `rlmec` | 1 | 70.0 ± 10.0 | 43.5 ± 1.0 | +10.0 ± {se1:.1f} | pays |" in md
    assert "| `rlmec` | 2 | 70.2 ± 10.0 | 45.5 ± 1.0 | +0.2 ± " in md and "| within noise |" in md
    assert "| `dpo` | 2 | 90.6 ± 0.6 |" in md
    assert "- rlmec: rounds stop paying at round 2" in md
    assert "- dpo: every round paid" in md and "- sft_gold: rounds stop paying at round 1: no round pays" in md
    assert "| 2 | rlmec | 0 | round-1 (stale) | 1.0 | 73.9 | 0.401 |" in md
    assert "| 1 | rlmec | 0 | refreshed | 50.0 | 80.0 | 0.500 |" in md
    assert len(re.findall(r"^\| `", md, re.M)) == 9  # 3 methods x 3 rounds

    data = o["out_png"].read_bytes()
    assert data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) > 5000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1100, 440)
    assert not list(o["out_png"].parent.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_without_validation_the_first_split_carries_the_gain(tmp_path: Path) -> None:
    summary = build_rounds(make_chains(tmp_path, methods=("rlmec",)), **outs(tmp_path), splits=("test",))
    assert summary["gain_split"] == "test" and "validation split is not among the splits" in summary["noise_rule"]
    g = summary["methods"]["rlmec"]["rounds"][1]["val_gain"]
    assert g == pytest.approx(naive_gain([0.405, 0.415, 0.425], [0.425, 0.435, 0.445], N_TEST))
    assert "validation" not in summary["methods"]["rlmec"]["rounds"][1]
    assert "test gain (pp ± 1.96 se)" in outs(tmp_path)["out_md"].read_text()


def test_missing_file_names_it_and_the_chain(tmp_path: Path) -> None:
    chains = make_chains(tmp_path)
    gone = Path(chains[4]["metrics"][2]["test"])  # dpo, seed 1, round 2
    gone.unlink()
    o = outs(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(gone)) + r".*\(dpo, seed 1, round 2\)"):
        build_rounds(chains, **o)
    assert not o["out_md"].parent.exists()  # nothing written
    chains = make_chains(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nope\.json.*\(rlmec, seed 0, round 2\)"):
        build_rounds(chains, **o, grm_quality=[{"round": 2, "method": "rlmec", "seed": 0,
                                                 "refreshed": str(tmp_path / "nope.json"), "stale": None}])


def test_bad_chains_are_refused(tmp_path: Path) -> None:
    chains = make_chains(tmp_path)
    chains[5]["metrics"] = chains[5]["metrics"][:2]
    with pytest.raises(ValueError, match=r"chain \('dpo', seed 2\) has 2 rounds"):
        build_rounds(chains, **outs(tmp_path))
    chains = make_chains(tmp_path)
    with pytest.raises(ValueError, match=r"given twice"):
        build_rounds(chains + chains[:1], **outs(tmp_path))
    chains = make_chains(tmp_path)
    del chains[0]["metrics"][1]["test"]
    with pytest.raises(ValueError, match=r"\(rlmec, seed 0, round 1\): no metrics for split\(s\) \['test'\]"):
        build_rounds(chains, **outs(tmp_path))
    chains = make_chains(tmp_path)
    Path(chains[1]["metrics"][0]["validation"]).write_text("{")
    with pytest.raises(ValueError, match=r"validation\.json \(rlmec, seed 1, round 0\): not JSON"):
        build_rounds(chains, **outs(tmp_path))
    chains = make_chains(tmp_path)
    Path(chains[1]["metrics"][0]["validation"]).write_text('{"accuracy": 1.5, "total": 10}')
    with pytest.raises(ValueError, match=r"accuracy must be a number in \[0, 1\]"):
        build_rounds(chains, **outs(tmp_path))
    with pytest.raises(ValueError, match="no chains"):
        build_rounds([], **outs(tmp_path))


def test_report_section(tmp_path: Path) -> None:
    chains = make_chains(tmp_path / "rounds")
    o = outs(tmp_path / "rounds")
    build_rounds(chains, **o, grm_quality=grm_entries(tmp_path / "rounds"))
    run = make_run(tmp_path)
    out = tmp_path / "report"
    build_report(**report_args(run, out, rounds=o["out_json"], rounds_chart=o["out_png"]))
    page = html.unescape((out / "report.html").read_text())
    md = (out / "summary.md").read_text()
    assert '<a href="#accuracy-by-round">Accuracy by round</a>' in page
    assert page.index('id="accuracy"') < page.index('id="accuracy-by-round"') < page.index('id="grm-quality"')
    assert md.index("## Accuracy\n") < md.index("## Accuracy by round") < md.index("## GRM quality")
    for text in (page, md):
        assert "rlmec: rounds stop paying at round 2" in text and "dpo: every round paid" in text
        assert "GRM quality by round" in text and "round-1 (stale)" in text
    assert "| rlmec | 1 | 70.0 ± 10.0 | 43.5 ± 1.0 | +10.0 ± " in md
    assert md.index("| rlmec | 0 |") < md.index("| dpo | 0 |") < md.index("| sft_gold | 0 |")
    assert "<td>rlmec</td><td class=num>2</td><td class=num>70.2 ± 10.0</td>" in page
    # the chart: embedded in the HTML, linked relative to the Markdown, and the link resolves
    b64 = base64.b64encode(o["out_png"].read_bytes()).decode("ascii")
    assert f'<img alt="accuracy by round" src="data:image/png;base64,{b64}">' in page
    links = re.findall(r"!\[accuracy by round\]\(([^)]+)\)", md)
    assert links == ["../rounds/out/rounds.png"] and (out / links[0]).resolve() == o["out_png"].resolve()
    assert (out / links[0]).read_bytes().startswith(PNG_SIGNATURE)

    # with a comparison the section follows the methods table
    png = tmp_path / "chart.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    build_report(**report_args(run, tmp_path / "both", comparison=_comparison(tmp_path / "table.json"),
                               comparison_chart=png, rounds=o["out_json"], rounds_chart=o["out_png"]))
    page = (tmp_path / "both" / "report.html").read_text()
    assert page.index('id="methods-compared"') < page.index('id="accuracy-by-round"') < page.index('id="accuracy"')
    toc = re.search(r"<p>(<a href=.*?)</p>", page).group(1)
    assert re.findall(r'href="#([^"]+)"', toc)[:3] == ["methods-compared", "accuracy-by-round", "accuracy"]


def test_report_without_rounds_is_unchanged(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    build_report(**report_args(run, tmp_path / "a"))
    build_report(**report_args(run, tmp_path / "b", rounds=None, rounds_chart=None))
    for name in ("report.html", "summary.md"):
        a = (tmp_path / "a" / name).read_text()
        assert a == (tmp_path / "b" / name).read_text() and "Accuracy by round" not in a


def test_report_refuses_a_bad_rounds_table(tmp_path: Path) -> None:
    from rlmec_core.errors import DataError

    run = make_run(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(DataError, match=r"bad\.json"):
        build_report(**report_args(run, tmp_path / "out", rounds=tmp_path / "bad.json"))
    with pytest.raises(DataError, match=r"absent\.png"):
        build_report(**report_args(run, tmp_path / "out", rounds_chart=tmp_path / "absent.png"))
    assert not (tmp_path / "out").exists()
