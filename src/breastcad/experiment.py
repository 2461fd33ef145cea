"""A tabular run: data checks, every model under every protocol, plots, bundles and a report.

Everything goes into one output folder:

    config.yaml        the resolved RunConfig (re-run with `breastcad train --config`)
    metrics.json       per protocol and model: every metric's mean, SD and 95% interval
    results.json       run info (versions, seed, commit), data checks and fingerprint, every
                       model's metrics with intervals and per-fold values, bundles
    splits/*.json      the exact train/test indices (and row ids) of every protocol
    predictions.csv    every test prediction: protocol, model, repeat, fold, row, label,
                       P(malignant), threshold
    plots/*.png        class balance, learning curves, ROC, PR, reliability, confusion matrices
    bundles/<model>/   models refitted on all data, ready for `breastcad predict`
    report.md, report.html
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from breastcad.bundle import save_bundle
from breastcad.config import ProtocolConfig, RunConfig
from breastcad.data.tabular import CLASS_NAMES, TabularData, load_tabular
from breastcad.errors import BreastcadError, ConfigError, DataError
from breastcad.evaluation import plots
from breastcad.evaluation.metrics import choose_threshold
from breastcad.evaluation.protocol import (
    ModelEvaluation,
    build_model,
    evaluate_model,
    make_splits,
)
from breastcad.evaluation.report import write_report
from breastcad.models import get_spec
from breastcad.runinfo import run_info, to_jsonable


def protocol_key(protocol: ProtocolConfig) -> str:
    return (
        "published"
        if protocol.kind == "published"
        else (f"cv{protocol.n_repeats}x{protocol.n_splits}")
    )


def run_experiment(cfg: RunConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """Run `cfg` and write its folder (see module docstring); return the results."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (out / "splits").mkdir(exist_ok=True)
    for name in cfg.models:
        get_spec(name)  # unknown names fail before any work
    cfg.to_yaml(out / "config.yaml")
    data = load_tabular(cfg.data)
    results: dict[str, Any] = {
        "run": run_info(cfg.seed),
        "config": cfg.model_dump(mode="json"),
        "data": data.record(),
        "protocols": {},
        "plots": {
            "class_balance": _rel(
                out,
                plots.class_balance(
                    data.check.class_counts,
                    out / "plots" / "class_balance.png",
                    f"Class balance ({data.source})",
                ),
            )
        },
    }
    predictions = []
    for protocol in cfg.protocols:
        key = protocol_key(protocol)
        try:
            _write_splits(out / "splits" / f"{key}.json", data, protocol)
            evaluations = [
                evaluate_model(data.X, data.y, m, cfg, protocol, progress) for m in cfg.models
            ]
        except ValueError as exc:  # scikit-learn's splitters: too few samples of a class
            if isinstance(exc, BreastcadError) or not _too_few(exc):
                raise
            raise DataError(
                f"too few samples for {protocol.describe()} (classes: "
                f"{data.check.class_counts}; the folds inside each training part need some "
                f"of each class too): {exc}",
                data.source,
            ) from None
        results["protocols"][key] = _protocol_results(out, key, protocol, evaluations, data)
        predictions += _prediction_rows(key, evaluations, data)
    pd.DataFrame(predictions).to_csv(out / "predictions.csv", index=False)
    results["bundles"] = _write_bundles(out, cfg, data, results, progress)
    results["bundle_training_hashes"] = cfg.training_hashes
    (out / "results.json").write_text(json.dumps(to_jsonable(results), indent=2))
    write_metrics(out, results)
    write_report(out)
    return results


def write_metrics(out: Path, results: dict[str, Any]) -> None:
    """metrics.json: per protocol and model, each metric's mean, SD and 95% interval."""
    compact = {
        key: {
            "description": proto["description"],
            "positive_class": "malignant",
            "models": {
                name: {
                    "threshold_policy": m["threshold_policy"],
                    "interval_method": m["interval_method"],
                    **m["summary"],
                }
                for name, m in proto["models"].items()
            },
        }
        for key, proto in results["protocols"].items()
    }
    (out / "metrics.json").write_text(json.dumps(to_jsonable(compact), indent=2))


def _write_splits(path: Path, data: TabularData, protocol: ProtocolConfig) -> None:
    splits = make_splits(data.y, protocol)
    path.write_text(
        json.dumps(
            {
                "protocol": protocol.model_dump(),
                "description": protocol.describe(),
                "data_fingerprint": data.fingerprint(),
                "folds": [
                    {
                        "repeat": s.repeat,
                        "fold": s.fold,
                        "test": s.test.tolist(),
                        "test_ids": [data.ids[i] for i in s.test],
                    }
                    for s in splits
                ],
                "note": "indices into the cleaned data; train = all rows not in test",
            }
        )
    )


def _protocol_results(
    out: Path,
    key: str,
    protocol: ProtocolConfig,
    evaluations: list[ModelEvaluation],
    data: TabularData,
) -> dict[str, Any]:
    """One protocol's figures: the models compared (ROC, PR, reliability, per-fold metrics)
    and each model's record and own plots."""
    pooled = {
        e.model: (
            np.concatenate([data.y[f.test] for f in e.folds]),
            np.concatenate([f.proba for f in e.folds]),
        )
        for e in evaluations
    }
    where = out / "plots" / key
    figures = {
        "roc": plots.roc_curves(pooled, where / "roc.png", f"ROC, {key}"),
        "pr": plots.pr_curves(pooled, where / "pr.png", f"Precision-recall, {key}"),
        "reliability": plots.reliability_diagram(
            pooled, where / "reliability.png", f"Reliability, {key}"
        ),
    }
    if len(evaluations[0].folds) > 1:
        shown = ["accuracy", "roc_auc", "sensitivity", "specificity"]
        per_fold = {
            e.model: {m: [f.metrics[m] for f in e.folds] for m in shown} for e in evaluations
        }
        figures["comparison"] = plots.metric_comparison(
            per_fold, where / "comparison.png", shown, f"Per-fold metrics, {key}"
        )
    return {
        "description": protocol.describe(),
        "protocol": protocol.model_dump(),
        "models": {e.model: _model_record(out, where, key, e) for e in evaluations},
        "plots": {k: _rel(out, v) for k, v in figures.items()},
    }


def _model_record(out: Path, where: Path, key: str, e: ModelEvaluation) -> dict[str, Any]:
    """One model's results under one protocol, with its confusion matrix (summed over folds)
    and learning curves in `where`."""
    counts = {k: sum(f.metrics[k] for f in e.folds) for k in ("tp", "fp", "tn", "fn")}
    summed = " (summed over folds)" if len(e.folds) > 1 else ""
    figures = {
        "confusion": plots.confusion_matrix(
            counts, where / f"confusion_{e.model}.png", f"{e.model}, {key}{summed}"
        )
    }
    curves = plots.learning_curves(
        [f.history for f in e.folds if f.history],
        where / f"learning_{e.model}.png",
        f"{e.model} learning curves, {key}",
    )
    if curves:
        figures["learning_curves"] = curves
    return {
        "description": get_spec(e.model).description,
        "summary": e.summary,
        "interval_method": e.interval_method,
        "threshold_policy": e.threshold.describe(),
        "thresholds": [f.threshold for f in e.folds],
        "confusion": counts,
        "chosen_params": [f.chosen_params for f in e.folds if f.chosen_params],
        "fit_seconds_mean": float(np.mean([f.fit_seconds for f in e.folds])),
        "epochs_run": [len(f.history) for f in e.folds if f.history],
        "per_fold": [{"repeat": f.repeat, "fold": f.fold, **f.metrics} for f in e.folds],
        "plots": {k: _rel(out, v) for k, v in figures.items()},
    }


def _prediction_rows(
    key: str, evaluations: list[ModelEvaluation], data: TabularData
) -> list[dict[str, Any]]:
    rows = []
    for e in evaluations:
        for f in e.folds:
            for i, p in zip(f.test, f.proba, strict=True):
                rows.append(
                    {
                        "protocol": key,
                        "model": e.model,
                        "repeat": f.repeat,
                        "fold": f.fold,
                        "row": int(i),
                        "id": data.ids[i],
                        "label": CLASS_NAMES[data.y[i]],
                        "p_malignant": float(p),
                        "threshold": f.threshold,
                        "prediction": CLASS_NAMES[int(p >= f.threshold)],
                    }
                )
    return rows


def best_model(results: dict[str, Any]) -> str:
    """The model with the highest mean ROC AUC (then accuracy) under the last protocol run."""
    models = list(results["protocols"].values())[-1]["models"]
    return max(
        models,
        key=lambda m: (
            models[m]["summary"]["roc_auc"]["mean"],
            models[m]["summary"]["accuracy"]["mean"],
        ),
    )


def _write_bundles(
    out: Path, cfg: RunConfig, data: TabularData, results: dict[str, Any], progress: bool
) -> dict[str, str]:
    """Refit the chosen models on all data; the threshold comes from inside that fit."""
    names = cfg.bundle_models if cfg.bundle_models is not None else [best_model(results)]
    _key, protocol_results = list(results["protocols"].items())[-1]
    written = {}
    for name in names:
        model = build_model(name, cfg, progress)
        model.fit(data.X, data.y, seed=cfg.seed)
        threshold = cfg.threshold.value
        if cfg.threshold.policy != "fixed":
            inner = model.inner_predictions()
            if inner is None:
                raise ConfigError(f"model '{name}' has no inner predictions to choose a threshold")
            threshold = choose_threshold(*inner, cfg.threshold)
        folder = save_bundle(
            out / "bundles" / name,
            model,
            {
                "modality": "tabular",
                "model": {
                    "name": name,
                    "family": get_spec(name).family,
                    "description": get_spec(name).description,
                    "params": cfg.model_params.get(name, {}),
                    "chosen_params": model.chosen_params_,
                },
                "class_names": list(CLASS_NAMES),
                "positive_class": "malignant",
                "feature_names": data.feature_names,
                "threshold": {"value": threshold, "policy": cfg.threshold.describe()},
                "metrics": {
                    "protocol": protocol_results["description"],
                    "note": "estimated by this protocol for the same training procedure; "
                    "the bundle itself was refitted on all the data",
                    "summary": protocol_results["models"].get(name, {}).get("summary"),
                },
                "training_data": {
                    k: results["data"][k]
                    for k in ("source", "n_samples", "fingerprint", "class_counts")
                },
                "seed": cfg.seed,
                "run": results["run"],
                "intended_use": "Research and education only. Not a medical device; not for "
                "diagnosis or treatment decisions.",
            },
            _row_hashes(data) if cfg.training_hashes else None,
        )
        written[name] = _rel(out, folder)
    return written


def _row_hashes(data: TabularData) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The hashes of the rows a bundle is refitted on (`data.fingerprints.row_hashes`)."""
    from breastcad.data.fingerprints import FILE, row_hashes

    record = {"file": FILE, "samples": len(data.y), "of": "every row the bundle was refitted on"}
    return {"rows": row_hashes(data.X)}, record


def _too_few(exc: ValueError) -> bool:
    """Whether scikit-learn refused a split for want of samples."""
    text = str(exc)
    return any(
        words in text
        for words in ("n_splits", "members in each class", "least populated", "test_size")
    )


def _rel(out: Path, path: Path | None) -> str | None:
    return None if path is None else str(Path(path).relative_to(out))
