"""Report blocks of an image run or an image-bundle evaluation, with a model card; rendered
by `report.write_report` from results.json."""

from __future__ import annotations

from typing import Any

from breastcad.evaluation.overlap import leak_warning
from breastcad.evaluation.report import Block, fmt, report_head, run_line
from breastcad.evaluation.training_text import members_blocks, training_line

ROWS = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("sensitivity", "Sensitivity (positive class)"),
    ("specificity", "Specificity (positive class)"),
    ("macro_f1", "Macro F1"),
    ("auc_positive", "ROC AUC, positive vs rest"),
    ("macro_auc", "Macro ROC AUC (one-vs-rest)"),
    ("brier", "Brier score"),
    ("ece", "ECE (top label)"),
)


def _range(ci: list[float] | None) -> str:
    return f" ({fmt(ci[0])}-{fmt(ci[1])})" if ci else ""


def _ci(entry: dict[str, Any]) -> str:
    if entry.get("ci_low") is None:
        return fmt(entry["value"])
    return f"{fmt(entry['value'])} ({fmt(entry['ci_low'])}-{fmt(entry['ci_high'])})"


def _support_text(v: dict[str, Any] | None) -> str:
    """How much the operating point can promise: a sensitivity seen on few positives is weak."""
    if not v or not v.get("positives"):
        return ""
    return (
        f"; on {v.get('scored', 'validation')} it flags {v['detected']} of {v['positives']} "
        f"positives (sensitivity "
        f"{fmt(v['sensitivity'])}, one-sided 95% lower bound {fmt(v['sensitivity_lower_95'])}) "
        f"and clears {fmt(v['specificity'])} of {v['negatives']} negatives"
    )


def _calibrated_on(cal: dict[str, Any]) -> str:
    """What the temperature was fitted on (results made before this was recorded: validation)."""
    return cal.get("fitted_on", "the validation part")


def _as_trained_text(test: dict[str, Any]) -> str:
    """The argmax of the network as trained, where calibration shifted its classes' prior."""
    shift = test["calibration"].get("prior_shift")
    if not shift or not any(shift) or "argmax_as_trained" not in test:
        return ""
    before = test["argmax_as_trained"]
    return (
        f". Argmax decision of the network as trained (towards equal classes, no shift): "
        f"accuracy {fmt(before['accuracy'])}, balanced accuracy "
        f"{fmt(before['balanced_accuracy'])}, sensitivity {fmt(before['sensitivity'])}"
    )


def _calibration_line(cal: dict[str, Any]) -> str:
    """Calibration as applied: the prior shift (results made before it: none), then T."""
    shift = cal.get("prior_shift")
    line = f"Calibration: temperature {fmt(cal['temperature'])} fitted on {_calibrated_on(cal)}"
    if shift and any(shift):
        values = ", ".join(f"{v:+.3f}" for v in shift)
        line += (
            f", after shifting the logits by ({values}): "
            f"{cal.get('prior_shift_from', 'the log class frequencies of the training part')}"
        )
    return line


def _arch_text(arch: dict[str, Any]) -> str:
    """The architecture record; an ensemble of identical members as one member times n."""
    members = arch.get("members") or []
    if arch.get("name") == "ensemble" and members and all(m == members[0] for m in members):
        return f"ensemble of {len(members)} x {members[0]}"
    return str(arch)


def _tta_line(tta: str) -> str:
    if tta == "flip":
        return (
            "Test-time augmentation: flip (each image's probabilities averaged with its mirror "
            "image's; calibration, operating point and every figure below use the average)"
        )
    if tta == "affine":
        return (
            "Test-time augmentation: affine (each image's probabilities averaged over ten "
            "views: the image and its mirror image, as given, rotated by +-10 degrees and "
            "shifted by +-5%; calibration, operating point and every figure below use the "
            "average)"
        )
    return "Test-time augmentation: none (each image seen once, as given)"


def image_blocks(results: dict[str, Any]) -> list[Block]:
    """The report of an image run or a bundle's evaluation: how it was made, the test results,
    where the model looks, the other-breast comparison, patient-level figures, plots and the
    model card."""
    data, test = results["data"], results["test"]
    blocks = [*report_head(results), Block("list", _settings(results))]
    if data.get("problems"):
        blocks.append(
            Block("p", f"{len(data['problems'])} files skipped: " + "; ".join(data["problems"][:5]))
        )
    blocks += _test_blocks(test)
    blocks += members_blocks(results.get("training"))
    blocks += _localisation_blocks(test.get("localisation"))
    blocks += _bilateral_blocks(
        test.get("bilateral"), results.get("operating_point", {}).get("bilateral")
    )
    blocks += _group_blocks(test.get("group_level"))
    for key, alt in results.get("plots", {}).items():
        blocks.append(Block("img", (alt, key)))
    blocks += model_card(results)
    return blocks


def _settings(results: dict[str, Any]) -> list[str]:
    """How the result was obtained: run, data, split, input, model, training, test-time views,
    operating point, calibration and intervals."""
    run, data, test = results["run"], results["data"], results["test"]
    model, op = results["model"], results["operating_point"]
    return [
        run_line(run),
        f"Data: `{data['dataset']}` at `{data['root']}` ({data['modality']})"
        f"{_options_text(data.get('options'))}, manifest "
        f"fingerprint `{data['manifest_fingerprint'][:16]}`; classes {data['classes']}, "
        f"positive class **{data['positive']}**{_class_map_text(data.get('class_map'))}",
        *_seen_line(data.get("seen_in_training")),
        *_modality_line(data.get("modality_warning")),
        *_overlap_line(data.get("training_overlap")),
        *_test_overlap_line(results),
        f"Split: {_split_text(data.get('split', {}))}; images per partition and class: "
        f"{data['counts']}",
        f"Input: {data['preprocessing']}",
        f"Model: `{model['name']}` {_arch_text(model['arch'])}; initialisation: {model['init']}"
        + (f"; run on {model['inference_device']}" if "inference_device" in model else ""),
        *training_line(results.get("training")),
        _tta_line(model.get("test_time_augmentation", "none")),
        f"Operating point: {op['policy']}, chosen on {op['chosen_on']}: "
        f"threshold {fmt(op['threshold'])}{_support_text(op.get('validation'))}",
        _calibration_line(test["calibration"]),
        f"Intervals: 95% percentile bootstrap resampling whole groups "
        f"({fmt(test['ci'].get('n_groups', {}).get('value'))} groups in the test set)",
    ]


def _seen_line(seen: str | None) -> list[str]:
    """A bundle evaluated on data it was trained on (`seen_in_training`), said first."""
    return [f"**Not an estimate on new data**: evaluated on {seen}"] if seen else []


def _modality_line(warning: str | None) -> list[str]:
    """A bundle evaluated on another modality than its training images', said early."""
    return [f"**Another modality**: {warning}"] if warning else []


def _overlap_line(overlap: dict[str, Any] | None) -> list[str]:
    """How an evaluated bundle was checked for the images it learnt from (`evaluation.overlap`);
    nothing for a training run, whose test part is kept apart by its split."""
    if overlap is None:
        return []
    if not overlap["checked"]:
        return [
            "Overlap with the training images: not checked image by image (the bundle keeps no "
            "hashes of them); only the very data its run read would be recognised"
        ]
    how = _matched_by(overlap["near_duplicate_distance"])
    seen = overlap["same_pixels"] + overlap["near_duplicates"]
    found = f"{seen} of the {overlap['images']} evaluated images are" if seen else "none is"
    return [
        f"Overlap with the training images: {found} among the {overlap['training_hashes']} the "
        f"bundle learnt from ({how}; `seen_in_training` in predictions.csv)"
    ]


def _test_overlap_line(results: dict[str, Any]) -> list[str]:
    """A training run's test part checked against its own training hashes."""
    record = results.get("test_overlap")
    if record is None:
        return []
    warning = leak_warning(results)
    if warning:
        return [f"**Test part not independent of training**: {warning}"]
    how = _matched_by(record["near_duplicate_distance"])
    return [
        f"Test part against the training and validation images ({how}): none of its "
        f"{record['images']} images is one of them"
    ]


def _matched_by(near: int | None) -> str:
    """What counts as a training image in the overlap checks."""
    return "the same pixels" + (
        "" if near is None else f", or a pHash within {near} bits (whole image or centred square)"
    )


def _class_map_text(class_map: dict[str, str] | None) -> str:
    """How the model's classes were read as the data's (`evaluate --class-map`)."""
    if not class_map:
        return ""
    pairs = ", ".join(f"{model} as {data}" for model, data in class_map.items())
    return f" (the model's classes read as the data's: {pairs})"


def _test_blocks(test: dict[str, Any]) -> list[Block]:
    """The test figures at the operating point and at argmax, per class, and calibration."""
    scalars = [
        [
            label,
            _ci(test["ci"][k]) if k in test["ci"] else fmt(test["metrics"]["scalars"][k]),
            fmt(test["argmax"][k]),
        ]
        for k, label in ROWS
    ]
    per_class = [
        [c, *(fmt(v[m]) for m in ("precision", "recall", "f1", "auc")), str(v["support"])]
        for c, v in test["metrics"]["per_class"].items()
    ]
    calibration = "ECE {} -> {}, Brier {} -> {} (network as trained -> calibrated)".format(
        *(
            fmt(test["calibration"][k])
            for k in ("ece_before", "ece_after", "brier_before", "brier_after")
        )
    )
    return [
        Block("h2", f"Test results ({test['n']} images)"),
        Block("table", (["metric", "at the operating point (95% CI)", "argmax decision"], scalars)),
        Block("h3", "Per class"),
        Block("table", (["class", "precision", "recall", "F1", "ROC AUC", "support"], per_class)),
        Block("h3", "Calibration"),
        Block("p", calibration + _as_trained_text(test)),
    ]


def _localisation_blocks(where: dict[str, Any] | None) -> list[Block]:
    """Where a lesion model looks on the annotated test images (none without them)."""
    if not where:
        return []
    text = (
        f"Cell scores ({where['cells_per_image']} cells per image) rank lesion cells "
        f"above the others with ROC AUC {fmt(where['cell_auc'])}"
        f"{_range(where.get('cell_auc_ci'))} over "
        f"{where['images']} annotated images; the most lesion-like cell lies on the "
        f"lesion in {where['top_cell_on_lesion']} "
        f"of {where['images_with_lesion']} images with one (rate "
        f"{fmt(where['top_cell_on_lesion_rate'])}"
        f"{_range(where.get('top_cell_on_lesion_rate_ci'))}; a random cell would: "
        f"{fmt(where['random_cell_rate'])}). Intervals: {where.get('interval', 'none')}. "
        "The annotations are used for this check and the training loss only, never "
        "for prediction."
    )
    return [Block("h3", "Lesion localisation (annotated test images)"), Block("p", text)]


def _bilateral_blocks(pair: dict[str, Any] | None, fit: dict[str, Any] | None) -> list[Block]:
    """Each breast against the woman's other breast (none where the data has no sides), with
    how much the validation part backed its threshold (`fit`, the run's bilateral fit)."""
    if not pair:
        return []
    difference = pair.get("auc_difference_ci")
    text = (
        f"On the {pair['images']} test images whose other breast is also in the test "
        f"part ({pair['positives']} positive), ROC AUC of the image alone "
        f"{fmt(pair['auc_single'])}{_range(pair.get('auc_single_ci'))}; of its "
        f"{pair['score']}: {fmt(pair['auc_bilateral'])}"
        f"{_range(pair.get('auc_bilateral_ci'))}; difference "
        f"{fmt(pair['auc_bilateral'] - pair['auc_single'])}"
        f"{f' ({fmt(difference[0])} to {fmt(difference[1])})' if difference else ''}. "
        f"Intervals: {pair['interval']}."
    )
    decided = pair.get("at_operating_point")
    if decided is None:
        text += (
            " A reading aid computed at evaluation: the run fitted no probability for it (too "
            "few validation images with their other breast, or no rise with the label there), "
            "so the bundle predicts from one image only."
        )
    else:
        text += (
            f" Its probability (logistic regression on the validation images with their other "
            f"breast) at the threshold chosen there, {fmt(decided['threshold'])}: test "
            f"sensitivity {fmt(decided['sensitivity'])} ({decided['detected']} of "
            f"{decided['positives']}), specificity {fmt(decided['specificity'])}, accuracy "
            f"{fmt(decided['accuracy'])}. The bundle carries the fit: `breastcad predict "
            "--pair` (or `--pairs`) scores a woman's two images this way."
        )
        support = (fit or {}).get("validation")
        if support:
            text += (
                f" On the validation images it was chosen on it flagged {support['detected']} "
                f"of {support['positives']} positives, which bounds the sensitivity it can "
                f"promise at {fmt(support['sensitivity_lower_95'])} (one-sided 95%), with "
                f"specificity {fmt(support['specificity'])} over {support['negatives']} "
                "negatives."
            )
    return [Block("h3", "Each breast against the woman's other breast"), Block("p", text)]


def _group_blocks(group: dict[str, Any] | None) -> list[Block]:
    """Patient-level figures (none where every image is its own group)."""
    if not group:
        return []
    text = ", ".join(
        f"{k} {fmt(v)}" for k, v in group.items() if k not in ("kind", "per_group_accuracy")
    )
    return [Block("h3", f"Patient level ({group['kind']})"), Block("p", text)]


def _options_text(options: dict[str, Any] | None) -> str:
    """The adapter options a run read its data with (e.g. a task), as ' with task=...'."""
    if not options:
        return ""
    return " with " + ", ".join(f"{k}={v}" for k, v in options.items())


def _split_text(split: dict[str, Any]) -> str:
    if not split:
        return "all readable images of the dataset (external evaluation)"
    if split.get("split_file"):
        part = f", its {split['partition']} part" if split.get("partition") else ""
        saved = split.get("saved_settings")
        made = f" (made with: {_split_text(saved)})" if saved else ""
        return f"the saved split `{split['split_file']}`{part}{made}"
    distance = split.get("duplicate_distance")
    grouped = (
        "grouped by patient where the data has them, else image by image: near duplicates "
        "not looked for (duplicate distance none)"
        if distance is None
        else "grouped by patient or near-duplicate cluster ("
        + (split.get("duplicate_rule") or "pHash of the whole image within the distance")
        + f"; distance {distance})"
    )
    text = (
        f"seed {split.get('seed')}, test {split.get('test_size')}, val {split.get('val_size')}, "
        f"{grouped}, official splits {split.get('official')}"
    )
    text += f"; {split['note']}" if split.get("note") else ""
    if split.get("test_images_sharing_a_group"):
        text += (
            f"; {split['test_images_sharing_a_group']} test images have a near duplicate (or "
            "their patient) in training or validation, because the official split kept here "
            "was made image by image: their figures may be optimistic"
        )
    return text


def model_card(results: dict[str, Any]) -> list[Block]:
    data, test = results["data"], results["test"]
    ci = test["ci"]
    headline = ", ".join(
        f"{k} {_ci(ci[k])}"
        for k in ("accuracy", "macro_auc", "sensitivity", "specificity")
        if k in ci
    )
    return [
        Block("h2", "Model card"),
        Block(
            "list",
            [
                "Intended use: research on computer-aided diagnosis of breast cancer. "
                "**Research use only; not a medical device**; not for diagnosis or treatment.",
                f"Data: {data['dataset']} ({data['modality']})"
                f"{_options_text(data.get('options'))}, classes {data['classes']}.",
                f"Split: {_split_text(data.get('split', {}))}.",
                f"Metrics on {_held_out(results)} (95% group-bootstrap CI): {headline}.",
                "Limits: one dataset, one site; small test sets give wide intervals; "
                "performance on other scanners, populations or magnifications is unknown until "
                "measured with `breastcad evaluate`; probabilities are calibrated on "
                f"{_calibrated_on(test['calibration'])} only.",
                *_hashes_text(results),
            ],
        ),
    ]


def _held_out(results: dict[str, Any]) -> str:
    """What the model card's metrics were measured on: held-out test data, unless the run
    found images it learnt from in its test part (`evaluation.overlap`)."""
    record = results.get("test_overlap") or {}
    leaked = record.get("same_pixels", 0) + record.get("near_duplicates", 0)
    if not leaked:
        return "held-out test data"
    return (
        f"test data of which {leaked} of {record['images']} images are training or validation "
        "images or their near duplicates (a split made image by image; see above)"
    )


def _hashes_text(results: dict[str, Any]) -> list[str]:
    """What a training run's bundle keeps of its images (`data.fingerprints`)."""
    if "bundle_training_hashes" not in results:
        return []
    kept = results["bundle_training_hashes"]
    if not kept:
        return [
            "Privacy: the bundle keeps nothing of its training images (--no-training-hashes), "
            "so `breastcad evaluate` cannot recognise them in other data."
        ]
    return [
        f"Privacy: the bundle keeps 64-bit hashes (pixels, pHash, centred square's pHash) of its "
        f"{kept['images']} training and validation images, so that `breastcad evaluate` "
        "recognises them in any data; no image can be rebuilt from them, but whoever holds an "
        "image can tell whether the bundle learnt from it. Train with --no-training-hashes, or "
        "copy the bundle with `breastcad share`, for a bundle that leaves the institution."
    ]
