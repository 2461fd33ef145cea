"""A tabular bundle evaluated on labelled data (`breastcad evaluate --data`): at its stored
threshold, nothing refitted; bootstrap intervals, ROC / PR / reliability / confusion plots, a
report, and the rows the bundle was refitted on recognised by their hashes
(`data.fingerprints.row_hashes`), marked, and left out of a second set of figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from breastcad.config import TabularDataConfig
from breastcad.data.tabular import CLASS_NAMES, TabularData, load_tabular
from breastcad.evaluation import plots
from breastcad.evaluation.metrics import binary_metrics, bootstrap_metrics
from breastcad.evaluation.protocol import bootstrap_summary
from breastcad.evaluation.report import write_report
from breastcad.experiment import write_metrics
from breastcad.runinfo import refuse_training_run_folder, run_info, to_jsonable


def evaluate_bundle(bundle_dir: Path, data_cfg: TabularDataConfig, out: Path) -> dict[str, Any]:
    """Evaluate a bundle on labelled data (e.g. data never seen in training) at its stored
    threshold; metrics with 95% bootstrap intervals, plots and a report in `out`."""
    from breastcad.predict import Predictor

    out = Path(out)
    refuse_training_run_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.from_bundle(bundle_dir)
    data = load_tabular(data_cfg)
    X = predictor.features_from_frame(pd.DataFrame(data.X, columns=data.feature_names), data.source)
    proba = predictor.predict_proba(X)
    manifest = predictor.bundle.manifest
    overlap, marks, seen = _training_overlap(predictor, data, X, proba)
    results: dict[str, Any] = {
        "title": f"breastcad evaluation of bundle {predictor.bundle.model_id}",
        "run": run_info(int(manifest.get("seed", 0))),
        "data": data.record(),
        "how": _how(predictor, Path(bundle_dir), overlap),
        "protocols": {"external": _external_protocol(predictor, data, proba, out)},
        "training_overlap": overlap,
        **({"seen_in_training": seen} if seen else {}),
        "plots": {
            "class_balance": _rel(
                out,
                plots.class_balance(data.check.class_counts, out / "plots" / "class_balance.png"),
            )
        },
    }
    if "seen_in_training" in results:
        results["how"].insert(
            0, f"**Not an estimate on new data**: evaluated on {results['seen_in_training']}"
        )
    _prediction_table(data, proba, predictor.threshold, marks).to_csv(
        out / "predictions.csv", index=False
    )
    (out / "results.json").write_text(json.dumps(to_jsonable(results), indent=2))
    write_metrics(out, results)
    write_report(out)
    return results


def _how(predictor, bundle_dir: Path, overlap: dict[str, Any]) -> list[str]:
    """How the evaluation was made: the bundle, its training data, threshold and the check for
    its training rows."""
    manifest = predictor.bundle.manifest
    checked = (
        f"{overlap['seen']} of the {overlap['samples']} samples are rows the bundle was "
        "refitted on (the same features; `seen_in_training` in predictions.csv)"
        if overlap["checked"]
        else "not checked row by row (the bundle keeps no hashes of them); only its very "
        "training data would be recognised"
    )
    return [
        f"Bundle: {bundle_dir.resolve()} ({predictor.bundle.model_id}), trained on "
        f"{manifest['training_data']['source']} (sha256 "
        f"{manifest['training_data']['fingerprint'][:16]}...)",
        f"Threshold {predictor.threshold:.3f} from the bundle ({manifest['threshold']['policy']})",
        f"Overlap with the training rows: {checked}",
    ]


def _prediction_table(
    data: TabularData, proba: np.ndarray, threshold: float, marks: np.ndarray | None
) -> pd.DataFrame:
    """predictions.csv: each sample's label, probability and decision at the threshold."""
    table = pd.DataFrame(
        {
            "id": data.ids,
            "label": [CLASS_NAMES[v] for v in data.y],
            "p_malignant": proba,
            "threshold": threshold,
            "prediction": [CLASS_NAMES[int(p >= threshold)] for p in proba],
        }
    )
    if marks is not None:
        table["seen_in_training"] = marks
    return table


def _training_overlap(
    predictor, data: TabularData, X: np.ndarray, proba: np.ndarray
) -> tuple[dict[str, Any], np.ndarray | None, str | None]:
    """What the bundle's row hashes say of `data`'s rows (or that it keeps none), each row's
    mark ("same" or "", None unchecked) and, where `data` holds rows the bundle was refitted
    on, why its figures overstate how it does on new data (with the figures without them).
    A bundle without row hashes is recognised only on its very training data (fingerprint)."""
    from breastcad.data.fingerprints import row_hashes

    manifest, n = predictor.bundle.manifest, len(data.y)
    why = "trained it, so these figures overstate how it does on new data"
    stored = predictor.bundle.training_hashes()
    if stored is None:
        if data.fingerprint() != manifest["training_data"]["fingerprint"]:
            return {"checked": False}, None, None
        return (
            {"checked": False},
            None,
            f"the data the bundle was trained on: all {n} samples {why} (a bundle is refitted "
            "on all of its run's data); its run's report holds the estimate",
        )
    seen = np.isin(row_hashes(X), stored[0]["rows"])
    overlap: dict[str, Any] = {"checked": True, "samples": n, "seen": int(seen.sum())}
    marks = np.where(seen, "same", "")
    if not seen.any():
        return overlap, marks, None
    text = f"samples the bundle learnt from: {int(seen.sum())} of these {n} (the same features) "
    text += why
    if not seen.all():
        other = bootstrap_metrics(data.y[~seen], proba[~seen], predictor.threshold)
        shown = {"accuracy": "accuracy", "roc_auc": "ROC AUC"}
        overlap["without_them"] = {"samples": int((~seen).sum()), **{k: other[k] for k in shown}}
        figures = ", ".join(f"{name} {_with_ci(other[k])}" for k, name in shown.items())
        text += f"; the other {int((~seen).sum())} alone: {figures}"
    return overlap, marks, text + "; predictions.csv marks them (seen_in_training)"


def _with_ci(figure: dict[str, float]) -> str:
    """A bootstrap figure as `value (low-high)`; n/a where it is undefined (one class)."""
    if figure["value"] != figure["value"]:
        return "n/a"
    return f"{figure['value']:.3f} ({figure['ci_low']:.3f}-{figure['ci_high']:.3f})"


def _external_protocol(predictor, data: TabularData, proba: np.ndarray, out: Path) -> dict:
    """A bundle's figures on all of `data` at its stored threshold, as one protocol of the
    report (bootstrap intervals over samples, ROC, PR, reliability and confusion plots)."""
    name = predictor.bundle.manifest["model"]["name"]
    where = out / "plots" / "external"
    summary = bootstrap_summary(bootstrap_metrics(data.y, proba, predictor.threshold))
    point = binary_metrics(data.y, proba, predictor.threshold)
    counts = {k: point[k] for k in ("tp", "fp", "tn", "fn")}
    curves = {name: (data.y, proba)}
    confusion = plots.confusion_matrix(counts, where / f"confusion_{name}.png", f"{name}, external")
    return {
        "description": f"external evaluation on all {len(data.y)} samples of {data.source}",
        "protocol": {"kind": "external"},
        "plots": {
            "roc": _rel(out, plots.roc_curves(curves, where / "roc.png")),
            "pr": _rel(out, plots.pr_curves(curves, where / "pr.png")),
            "reliability": _rel(out, plots.reliability_diagram(curves, where / "reliability.png")),
        },
        "models": {
            name: {
                "description": predictor.bundle.manifest["model"]["description"],
                "summary": summary,
                "interval_method": "95% percentile bootstrap over samples (2000 resamples)",
                "threshold_policy": f"fixed at the bundle's {predictor.threshold:.3f}",
                "thresholds": [predictor.threshold],
                "confusion": counts,
                "chosen_params": [],
                "fit_seconds_mean": 0.0,
                "per_fold": [],
                "plots": {"confusion": _rel(out, confusion)},
            }
        },
    }


def _rel(out: Path, path: Path | None) -> str | None:
    return None if path is None else str(Path(path).relative_to(out))
