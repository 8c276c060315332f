"""Ablation of the paper-literal choices of ``ours`` (docs/fidelity.md, issue #11 item 4) on a preset.

    .venv/bin/python scripts/fidelity_ablation.py [--seeds 3] [--preset cpu] [--out results/fidelity_ablation]

Training variants, one fit per seed each (``class_balance_*`` fields):

- ``images``: class weights from train image counts, β = (N − 1)/N (the default);
- ``pixels``: class weights from pixel counts, β = 0.999999 (the previous default).

Test-time variants, evaluated on the *same* fitted weights (so their differences are the test-time
choice alone): ``binary_scoring`` ∈ {averaged_prompt, class_mean} × ``msm_map_weight`` ∈ {0, 0.25,
0.5, 1}. Per variant the pixel metrics of every seed, their mean ± std, and per seed a paired
bootstrap (same test images) against the reference variant. Writes ``summary.md`` and
``summary.json`` to ``--out``; evaluator states go to ``--work`` and a re-run reuses finished fits.

The same comparisons through the CLI, one fit per variant (e.g. ``scrapbench run --methods ours
--seeds 3 --set ours.msm_map_weight=0.5 --out runs/w05`` then ``scrapbench report runs/w05``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

# Sleeping OpenMP threads, as `scrapbench` sets (benchmark/cli/main.py): spinning ones make every small torch op wait
# on a loaded machine. Before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from scrapbench.core.method import FitContext
from scrapbench.core.registry import create_method
from scrapbench.datasets import load_dataset
from scrapbench.metrics import PixelMetrics, paired_bootstrap
from scrapbench.run.provenance import seed_everything

TRAIN_VARIANTS = {
    "images": {"class_balance_counts": "images", "class_balance_beta": None},
    "pixels": {"class_balance_counts": "pixels", "class_balance_beta": 0.999999},
}
BINARY = ("averaged_prompt", "class_mean")
WEIGHTS = (0.0, 0.25, 0.5, 1.0)
METRICS = ("auroc", "aupro", "ap", "f1max")
REFERENCE = ("images", "averaged_prompt", 0.0)


def variant_name(train: str, binary: str, weight: float) -> str:
    return f"{train}/{binary}/w{weight:g}"


def evaluate(method, dataset, batch: int = 8) -> PixelMetrics:
    metrics = PixelMetrics(class_names=dataset.class_names)
    for start in range(0, len(dataset.test), batch):
        samples = dataset.test[start:start + batch]
        maps = method.predict([s.image for s in samples])
        metrics.update(np.stack(maps), np.stack([s.mask for s in samples]), ids=[s.id for s in samples])
    return metrics


def run_seed(dataset, preset: str, train: str, seed: int, work: Path, device: str) -> dict[str, PixelMetrics]:
    """All test-time variants of one fit; cached as evaluator states under ``work``."""
    folder = work / preset / train / f"seed{seed}"
    paths = {(b, w): folder / f"{b}_w{w:g}.npz" for b in BINARY for w in WEIGHTS}
    if all(p.is_file() for p in paths.values()):
        return {variant_name(train, b, w): PixelMetrics.load(p) for (b, w), p in paths.items()}
    folder.mkdir(parents=True, exist_ok=True)
    method = create_method("ours", dataset.class_names, preset=preset, overrides=TRAIN_VARIANTS[train])
    seed_everything(seed)
    started = time.perf_counter()
    method.fit(dataset.train, FitContext(seed, device, folder / "work", dataset.class_names, show_progress=False))
    print(f"  fit {train} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    fitted = method.config
    out = {}
    for (binary, weight), path in paths.items():
        method.config = replace(fitted, binary_scoring=binary, msm_map_weight=weight)
        metrics = evaluate(method, dataset)
        metrics.save(path)
        out[variant_name(train, binary, weight)] = metrics
    return out


def summarise(results: dict[int, dict[str, PixelMetrics]], n_boot: int) -> dict:
    seeds = sorted(results)
    names = list(results[seeds[0]])
    values = {name: {m: [results[s][name].compute()[m] for s in seeds] for m in METRICS} for name in names}
    reference = variant_name(*REFERENCE)
    comparisons = {
        "4a: averaged_prompt − class_mean": [(variant_name("images", "averaged_prompt", w),
                                              variant_name("images", "class_mean", w)) for w in WEIGHTS],
        "4b: image counts − pixel counts": [(variant_name("images", b, w), variant_name("pixels", b, w))
                                            for b in BINARY for w in (0.0, 0.5)],
        "4c: msm_map_weight w − 0": [(variant_name("images", b, w), variant_name("images", b, 0.0))
                                     for b in BINARY for w in WEIGHTS[1:]],
    }
    tests = {}
    for title, pairs in comparisons.items():
        tests[title] = []
        for a, b in pairs:
            row = {"a": a, "b": b}
            for metric in ("ap", "auroc"):
                row[metric] = [paired_bootstrap(results[s][a], results[s][b], metric, n_boot=n_boot, seed=s)
                               for s in seeds]
            tests[title].append(row)
    return {"seeds": seeds, "reference": reference, "values": values, "tests": tests}


def to_markdown(summary: dict, preset: str, seconds: float) -> str:
    lines = [f"# ours: paper-literal choices, `{preset}` preset, seeds {summary['seeds']}", "",
             f"Generated by `scripts/fidelity_ablation.py` in {seconds / 60:.0f} min. Variant = class-balance counts "
             "/ binary scoring / MSM map weight. Metrics in %, mean ± std over seeds.", "",
             "| variant | " + " | ".join(METRICS) + " |", "|:---|" + "---:|" * len(METRICS)]
    for name, per_metric in summary["values"].items():
        cells = [f"{100 * np.mean(v):.2f} ± {100 * np.std(v, ddof=1) if len(v) > 1 else 0:.2f}"
                 for v in per_metric.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for title, rows in summary["tests"].items():
        lines += ["", f"## {title}", "",
                  "Per seed: difference a − b in percentage points [95 % paired-bootstrap CI] (p); "
                  "last column: seeds where a > b.", "",
                  "| a | b | ΔAP per seed | ΔAUROC per seed | AP: a > b |", "|:---|:---|:---|:---|---:|"]
        for row in rows:
            cells = []
            for metric in ("ap", "auroc"):
                cells.append("; ".join(f"{100 * t['diff']:+.2f} [{100 * t['low']:+.2f}, {100 * t['high']:+.2f}] "
                                       f"(p {t['p_value']:.2f})" for t in row[metric]))
            wins = sum(t["diff"] > 0 for t in row["ap"])
            lines.append(f"| {row['a']} | {row['b']} | {cells[0]} | {cells[1]} | {wins}/{len(row['ap'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("results/fidelity_ablation"))
    parser.add_argument("--work", type=Path, default=Path("runs/fidelity_ablation"))
    args = parser.parse_args()
    started = time.perf_counter()
    dataset = load_dataset("synthetic", preset=args.preset, seed=0)
    results: dict[int, dict[str, PixelMetrics]] = {}
    for seed in range(args.seeds):
        results[seed] = {}
        for train in TRAIN_VARIANTS:
            results[seed].update(run_seed(dataset, args.preset, train, seed, args.work, args.device))
    summary = summarise(results, args.n_boot)
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "summary.md").write_text(to_markdown(summary, args.preset, seconds))
    print(to_markdown(summary, args.preset, seconds))


if __name__ == "__main__":
    main()
