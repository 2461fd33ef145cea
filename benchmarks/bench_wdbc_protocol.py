"""WDBC honest protocol: every tabular model under 10 x repeated stratified 10-fold CV.

Prints mean (95% corrected resampled t interval) of accuracy, ROC AUC, sensitivity,
specificity and ECE per model, and the mean fit time per fold. Thresholds (Youden's J),
scaling and hyper-parameters are chosen inside each training fold.

    .venv/bin/python benchmarks/bench_wdbc_protocol.py [--repeats 10] [--jobs 2]
    .venv/bin/python benchmarks/bench_wdbc_protocol.py --run runs/wdbc-demo   # print a run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from breastcad.config import ProtocolConfig, RunConfig
from breastcad.experiment import run_experiment

COLUMNS = ("accuracy", "roc_auc", "sensitivity", "specificity", "ece")


def print_table(results: dict, seconds: float | None) -> None:
    for proto in results["protocols"].values():
        print(proto["description"] + "; malignant = positive")
        print(f"{'model':<9}" + "".join(f"{c:>22}" for c in COLUMNS) + f"{'fit s/fold':>11}")
        for name, m in proto["models"].items():
            cells = [
                f"{m['summary'][c]['mean']:.4f} ({m['summary'][c]['ci_low']:.3f}-"
                f"{m['summary'][c]['ci_high']:.3f})"
                for c in COLUMNS
            ]
            print(
                f"{name:<9}"
                + "".join(f"{c:>22}" for c in cells)
                + f"{m['fit_seconds_mean']:>11.2f}"
            )
    if seconds is not None:
        print(f"wall time {seconds:.0f} s")
    print("goal: best model mean accuracy >= 0.980 and mean ROC AUC >= 0.996")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--run", type=Path, help="print the CV results of an existing run")
    args = parser.parse_args()
    if args.run:
        results = json.loads((args.run / "results.json").read_text())
        results["protocols"] = {k: v for k, v in results["protocols"].items() if k != "published"}
        print_table(results, None)
        return
    cfg = RunConfig(
        protocols=[ProtocolConfig(kind="cv", n_repeats=args.repeats)],
        n_jobs=args.jobs,
        bundle_models=[],
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        results = run_experiment(cfg, Path(out), progress=True)
    print_table(results, time.perf_counter() - start)


if __name__ == "__main__":
    main()
