"""The CLI end to end through Typer's CliRunner, on real WDBC data and small settings."""

import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from breastcad.cli import app
from tests.conftest import small_run_config

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = out / "in.yaml"
    small_run_config().to_yaml(config)
    result = runner.invoke(
        app,
        [
            "train",
            "--config",
            str(config),
            "--out",
            str(out / "r"),
            "--bundle",
            "logreg",
            "--bundle",
            "cnn1d",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    return out / "r"


def strict_json(path):
    """Parse as RFC 8259 JSON: NaN and Infinity are not JSON and fail here."""

    def refuse(constant):
        raise ValueError(f"{path}: {constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "evaluate", "predict", "report", "models"):
        assert command in result.output
    # each summary flows as one text at the terminal's width (the docstrings' own line breaks
    # used to cut it after "pick the" and "stored")
    wide = runner.invoke(app, ["--help"], env={"COLUMNS": "240"})
    rows = [line for line in wide.output.splitlines() if "train-image" in line]
    assert len(rows) == 1 and "pick the operating point on validation" in rows[0]


def test_out_of_range_settings_are_one_line_naming_the_setting(tmp_path):
    result = runner.invoke(app, ["train", "--folds", "1", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "n_splits: Input should be greater than or equal to 2 (got 1)" in result.output
    args = ["train-image", "--dataset", "folder", "--root", str(tmp_path), "--model", "probe"]
    image = runner.invoke(app, [*args, "--val-size", "2", "--out", str(tmp_path / "i")])
    assert image.exit_code == 2 and "data.val_size: Input should be less than 1" in image.output
    for text in (result.output, image.output):
        assert "errors.pydantic.dev" not in text and len(text.strip().splitlines()) == 1


def test_python_dash_m_works():
    result = subprocess.run(
        [sys.executable, "-m", "breastcad", "models"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "cnn1d" in result.stdout


def test_train_writes_a_complete_run_folder(run_dir):
    for name in (
        "config.yaml",
        "results.json",
        "predictions.csv",
        "report.md",
        "report.html",
        "splits/published.json",
        "splits/cv1x3.json",
        "plots/class_balance.png",
        "plots/published/roc.png",
        "plots/cv1x3/reliability.png",
        "plots/cv1x3/learning_cnn1d.png",
        "plots/cv1x3/confusion_logreg.png",
        "bundles/logreg/bundle.json",
        "bundles/cnn1d/weights.pt",
    ):
        assert (run_dir / name).is_file(), name
    results = strict_json(run_dir / "results.json")
    strict_json(run_dir / "metrics.json")
    strict_json(run_dir / "bundles/logreg/bundle.json")
    # a single split has no spread: written as null, not as NaN (which is not JSON)
    assert (
        results["protocols"]["published"]["models"]["logreg"]["summary"]["accuracy"]["sd"] is None
    )
    assert results["run"]["seed"] == 0 and results["run"]["versions"]["torch"]
    assert results["data"]["n_samples"] == 569
    published = results["protocols"]["published"]["models"]["logreg"]
    assert published["summary"]["accuracy"]["mean"] > 0.9
    assert published["thresholds"] == [0.5]  # the published protocol keeps the 0.5 threshold
    split = json.loads((run_dir / "splits/published.json").read_text())
    assert len(split["folds"][0]["test"]) == 114
    predictions = pd.read_csv(run_dir / "predictions.csv")
    assert set(predictions["protocol"]) == {"published", "cv1x3"}
    assert len(predictions.query("protocol == 'cv1x3' and model == 'logreg'")) == 569
    report = (run_dir / "report.md").read_text()
    assert "Research use only" in report and "malignant" in report
    for image in ("plots/cv1x3/roc.png", "plots/published/confusion_cnn1d.png"):
        assert image in report


def test_config_round_trip_reproduces_the_run(run_dir, tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            "--config",
            str(run_dir / "config.yaml"),
            "--out",
            str(tmp_path / "again"),
            "-m",
            "logreg",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    first = json.loads((run_dir / "results.json").read_text())
    again = json.loads((tmp_path / "again/results.json").read_text())
    for key in ("published", "cv1x3"):
        assert (
            again["protocols"][key]["models"]["logreg"]["per_fold"]
            == first["protocols"][key]["models"]["logreg"]["per_fold"]
        )


def test_metrics_json_states_protocol_and_threshold(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cv = metrics["cv1x3"]["models"]["cnn1d"]
    assert metrics["cv1x3"]["positive_class"] == "malignant"
    assert "Youden" in cv["threshold_policy"] and "Nadeau" in cv["interval_method"]
    assert cv["roc_auc"]["ci_low"] <= cv["roc_auc"]["mean"] <= cv["roc_auc"]["ci_high"]


def test_early_stopping_option_reaches_training(tmp_path):
    out = tmp_path / "es"
    result = runner.invoke(
        app,
        [
            "train",
            "-m",
            "mlp",
            "--protocol",
            "cv",
            "--folds",
            "2",
            "--repeats",
            "1",
            "--epochs",
            "200",
            "--early-stopping",
            "2",
            "--bundle",
            "mlp",
            "--quiet",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["train"]["early_stopping_patience"] == 2
    epochs = results["protocols"]["cv1x2"]["models"]["mlp"]["epochs_run"]
    assert len(epochs) == 2 and max(epochs) < 200
    assert "mlp" in results["bundles"]


def test_predict_prints_and_writes_per_row_probabilities(run_dir, kaggle_csv, tmp_path):
    out = tmp_path / "pred.csv"
    result = runner.invoke(
        app,
        ["predict", str(kaggle_csv), "--model", str(run_dir / "bundles/logreg"), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    columns = ["id", "p_malignant", "prediction", "threshold", "imputed", "error"]
    assert list(table.columns) == [*columns, "seen_in_training"]
    assert len(table) == 569 and table["p_malignant"].between(0, 1).all()
    assert table["imputed"].isna().all()  # nothing was missing
    truth = pd.read_csv(kaggle_csv)["diagnosis"].map({"M": "malignant", "B": "benign"})
    assert (table["prediction"] == truth).mean() > 0.95  # training data: sanity only
    # ... and said so: every row is one the bundle was refitted on
    assert (table["seen_in_training"] == "same").all()
    assert "569 of these 569 are rows the bundle learnt from" in result.output
    # written to the file, not echoed: the terminal gets the summary only
    assert "p_malignant" not in result.output
    assert f"569 predictions written to {out}" in result.output
    printed = runner.invoke(
        app, ["predict", str(kaggle_csv), "--model", str(run_dir / "bundles/logreg")]
    )
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.startswith("id,p_malignant,prediction,threshold")
    assert len(printed.stdout.splitlines()) == 570 and "569 predictions" in printed.stderr
    # --out a folder: refused before any work (it was an IsADirectoryError once all was done)
    folder = runner.invoke(
        app,
        [
            "predict",
            str(kaggle_csv),
            "--model",
            str(run_dir / "bundles/logreg"),
            "--out",
            str(tmp_path),
        ],
    )
    assert folder.exit_code == 2 and f"--out {tmp_path} is a folder" in folder.output


def _predict_edited(run_dir, kaggle_csv, tmp_path, cells: dict[tuple[int, str], object]):
    """`predict --out` with the logreg bundle on the Kaggle file with `cells` ((row, column):
    value) replaced: the file, the CLI result and the table written."""
    frame = pd.read_csv(kaggle_csv)
    for (row, column), value in cells.items():
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
    edited, out = tmp_path / "edited.csv", tmp_path / "pred.csv"
    frame.to_csv(edited, index=False)
    model = str(run_dir / "bundles/logreg")
    result = runner.invoke(app, ["predict", str(edited), "--model", model, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return edited, result, pd.read_csv(out, keep_default_na=False)


def test_predict_names_the_missing_values_it_filled_in(run_dir, kaggle_csv, tmp_path):
    gaps = {(3, "radius_mean"): None, (3, "texture_worst"): None}
    _, result, table = _predict_edited(run_dir, kaggle_csv, tmp_path, gaps)
    assert "1 row had missing values, filled with the training medians" in result.output
    assert table["imputed"][3] == "mean radius;worst texture"
    assert (table["imputed"].drop(3) == "").all() and 0 <= table["p_malignant"][3] <= 1


def test_predict_leaves_out_only_the_rows_with_a_value_that_is_not_a_number(
    run_dir, kaggle_csv, tmp_path
):
    """An infinite value or a word in a feature costs its row, named with its cells, not the
    table (which used to be refused whole); the other rows get the answers they get alone."""
    bad = {(2, "radius_mean"): "twelve", (5, "area_worst"): "inf", (5, "texture_mean"): "-inf"}
    edited, result, table = _predict_edited(run_dir, kaggle_csv, tmp_path, bad)
    assert f"not predicted: {edited} row 4: 'mean radius' is 'twelve', not a finite number" in (
        result.output
    )
    assert "row 7: 'mean texture' is -inf, not a finite number; 'worst area' is inf" in (
        result.output
    )
    assert "567 predictions written" in result.output and "(2 not predicted" in result.output
    assert table.loc[[2, 5], "prediction"].tolist() == ["", ""]
    assert table.loc[[2, 5], "p_malignant"].tolist() == ["", ""]
    model = str(run_dir / "bundles/logreg")
    alone = runner.invoke(app, ["predict", str(kaggle_csv), "--model", model])
    clean = pd.read_csv(io.StringIO(alone.stdout)).drop(index=[2, 5])
    good = table.drop(index=[2, 5])
    assert np.allclose(good["p_malignant"].astype(float), clean["p_malignant"])
    assert (good["error"] == "").all()


def test_predict_refuses_a_modified_bundle(run_dir, kaggle_csv, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(run_dir / "bundles/cnn1d", copy)
    with open(copy / "weights.pt", "ab") as f:
        f.write(b"x")
    result = runner.invoke(app, ["predict", str(kaggle_csv), "--model", str(copy)])
    assert result.exit_code == 2
    assert "weights.pt: checksum mismatch" in result.output
    assert "Traceback" not in result.output


def test_predict_names_missing_features(run_dir, tmp_path):
    bad = tmp_path / "few.csv"
    pd.DataFrame({"id": [1], "radius_mean": [10.0]}).to_csv(bad, index=False)
    result = runner.invoke(app, ["predict", str(bad), "--model", str(run_dir / "bundles/logreg")])
    assert result.exit_code == 2
    assert str(bad) in result.output and "29 features the model needs are missing" in result.output


def test_share_copies_a_bundle_without_its_training_hashes(run_dir, kaggle_csv, tmp_path):
    """`share`: the copy has the same model and id and predicts the same, keeps nothing of the
    rows it learnt from (so evaluate says it did not check), and the bundle itself keeps its
    hashes; an existing folder is refused, not overwritten."""
    from breastcad.bundle import load_bundle

    bundle = run_dir / "bundles" / "logreg"
    copy = tmp_path / "shared"
    result = runner.invoke(app, ["share", "--model", str(bundle), "--out", str(copy)])
    assert result.exit_code == 0, result.output
    original, shared = load_bundle(bundle), load_bundle(copy)
    assert shared.model_id == original.model_id and f"({original.model_id})" in result.output
    assert "without the hashes of its 569 rows" in result.output
    assert "each bundle keeps a 64-bit hash of every row" in (run_dir / "report.md").read_text()
    assert "training_hashes" in original.manifest and "training_hashes" not in shared.manifest
    assert sorted(p.name for p in copy.iterdir()) == sorted(
        [*original.manifest["files"], "bundle.json", "bundle.json.sha256"]
    )
    kept, bare = (
        pd.read_csv(
            io.StringIO(runner.invoke(app, ["predict", str(kaggle_csv), "--model", str(b)]).stdout)
        )
        for b in (bundle, copy)
    )
    assert (kept.pop("seen_in_training") == "same").all()  # the copy cannot tell
    pd.testing.assert_frame_equal(kept, bare)
    half = tmp_path / "half.csv"
    pd.read_csv(kaggle_csv).iloc[::2].to_csv(half, index=False)
    evaluate = ["evaluate", "--model", str(copy), "--data", str(half), "--out", str(tmp_path / "e")]
    checked = runner.invoke(app, evaluate)
    assert checked.exit_code == 0 and "warning" not in checked.output
    assert "not checked row by row" in (tmp_path / "e" / "report.md").read_text()
    again = runner.invoke(app, ["share", "--model", str(bundle), "--out", str(copy)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_bundles_without_training_hashes_keep_no_rows_and_say_what_was_not_checked(
    kaggle_csv, tmp_path
):
    """`train --no-training-hashes`: the bundle keeps nothing of its rows, the run's report
    says so; evaluate then recognises only the very training data (its fingerprint) and says
    that other tables were not checked row by row."""
    config = tmp_path / "in.yaml"
    small_run_config().model_copy(update={"models": ["logreg"]}).to_yaml(config)
    run = tmp_path / "r"
    train = ["train", "--config", str(config), "--out", str(run), "--quiet"]
    result = runner.invoke(app, [*train, "--no-training-hashes"])
    assert result.exit_code == 0, result.output
    bundle = run / "bundles" / "logreg"
    assert "training_hashes" not in json.loads((bundle / "bundle.json").read_text())
    assert not list(bundle.glob("*.npz"))
    assert "the bundles keep nothing of the rows" in (run / "report.md").read_text()
    evaluate = ["evaluate", "--model", str(bundle), "--data"]
    whole = runner.invoke(app, [*evaluate, str(kaggle_csv), "--out", str(tmp_path / "w")])
    assert "warning: evaluated on the data the bundle was trained on: all 569" in whole.output
    half = tmp_path / "half.csv"
    pd.read_csv(kaggle_csv).iloc[::2].to_csv(half, index=False)
    part = runner.invoke(app, [*evaluate, str(half), "--out", str(tmp_path / "h")])
    assert part.exit_code == 0 and "warning" not in part.output
    assert "not checked row by row" in (tmp_path / "h" / "report.md").read_text()
    assert "seen_in_training" not in pd.read_csv(tmp_path / "h" / "predictions.csv").columns


def test_evaluate_bundle_on_external_csv(run_dir, kaggle_csv, tmp_path):
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(run_dir / "bundles/logreg"),
            "--data",
            str(kaggle_csv),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    summary = results["protocols"]["external"]["models"]["logreg"]["summary"]
    assert summary["roc_auc"]["ci_low"] <= summary["roc_auc"]["mean"] <= 1.0
    assert (out / "report.html").is_file() and (out / "plots/external/roc.png").is_file()
    # the Kaggle file holds the very samples the bundle was refitted on (canonical names,
    # same values): said on the terminal and first in the report
    assert "warning: evaluated on samples the bundle learnt from: 569 of these 569" in (
        result.output
    )
    assert "**Not an estimate on new data**" in (out / "report.md").read_text()
    # row by row: half of them, next to rows it never saw (measured 2% larger), are found
    # and marked, and the figures are given without them
    other = tmp_path / "other.csv"
    table = pd.read_csv(kaggle_csv)
    moved = table.iloc[1::2].copy()
    features = [c for c in table.columns if c not in ("id", "diagnosis", "Unnamed: 32")]
    moved[features] *= 1.02
    pd.concat([table.iloc[::2], moved]).to_csv(other, index=False)
    evaluate = ["evaluate", "--model", str(run_dir / "bundles/logreg"), "--data", str(other)]
    half = runner.invoke(app, [*evaluate, "--out", str(tmp_path / "half")])
    assert half.exit_code == 0, half.output
    assert "samples the bundle learnt from: 285 of these 569 (the same features)" in half.output
    assert "the other 284 alone: accuracy" in half.output
    marks = pd.read_csv(tmp_path / "half" / "predictions.csv", keep_default_na=False)
    assert marks["seen_in_training"].tolist() == ["same"] * 285 + [""] * 284
    only_new = tmp_path / "new.csv"
    moved.to_csv(only_new, index=False)
    new = runner.invoke(app, [*evaluate[:-1], str(only_new), "--out", str(tmp_path / "new")])
    assert new.exit_code == 0 and "warning" not in new.output  # other data: no claim
    assert "0 of the 284 samples are rows the bundle was refitted on" in (
        (tmp_path / "new" / "report.md").read_text()
    )
    before = (run_dir / "results.json").read_bytes()
    into_run = runner.invoke(
        app,
        ["evaluate", "--model", str(run_dir / "bundles/logreg"), "--out", str(run_dir)],
    )
    assert into_run.exit_code == 2 and "holds a training run" in into_run.output
    assert (run_dir / "results.json").read_bytes() == before
    rerun = runner.invoke(app, ["train", "--out", str(run_dir), "--repeats", "1", "--quiet"])
    assert rerun.exit_code == 2 and "holds an earlier run (results.json, bundles)" in (rerun.output)
    assert "--overwrite replaces it" in rerun.output and "--resume" not in rerun.output
    assert (run_dir / "results.json").read_bytes() == before
    as_images = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(run_dir / "bundles/logreg"),
            "--dataset",
            "folder",
            "--root",
            str(tmp_path),
            "--out",
            str(tmp_path / "img"),
        ],
    )
    assert as_images.exit_code == 2 and "tabular bundle" in as_images.output


def test_bad_csv_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,diagnosis,f1\n1,M,abc\n2,B,1.0\n")
    result = runner.invoke(
        app, ["train", "--data", str(bad), "--out", str(tmp_path / "r"), "--quiet"]
    )
    assert result.exit_code == 2
    assert f"error: {bad}: non-numeric feature values in 'f1'" in result.output
    assert "Traceback" not in result.output
    # an infinite value, and too few rows for the protocol's splits: named, not tracebacks
    rows = "".join(f"{i},{'MB'[i % 2]},{i * 0.5},{i % 3}\n" for i in range(40))
    cases = {
        "inf.csv": ("id,diagnosis,f1,f2\n" + rows + "40,M,inf,1\n", "infinite feature values"),
        "tiny.csv": ("id,diagnosis,f1,f2\n" + rows[:40], "too few samples for published"),
    }
    for name, (text, problem) in cases.items():
        (tmp_path / name).write_text(text)
        out = tmp_path / f"r-{name}"
        result = runner.invoke(
            app, ["train", "--data", str(tmp_path / name), "-m", "logreg", "--out", str(out)]
        )
        assert result.exit_code == 2 and problem in result.output, result.output
        assert "Traceback" not in result.output


def test_a_config_file_that_is_missing_or_not_yaml_is_named_not_a_traceback(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    photo = tmp_path / "photo.yaml"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n binary")
    cases = {
        broken: "not a YAML config file (line 2:",
        photo: "not a YAML config file ('utf-8' codec",
        tmp_path / "gone.yaml": "config file not found",
    }
    for path, problem in cases.items():
        image = ["train-image", "--dataset", "busi", "--root", "x", "--model", "probe"]
        for command in (["train"], image):
            result = runner.invoke(app, [*command, "--config", str(path), "--out", "r"])
            assert result.exit_code == 2 and f"error: {path}: {problem}" in result.output
            assert "Traceback" not in result.output


def test_unknown_model_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["train", "-m", "nope", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "error: unknown model 'nope'; known models:" in result.output


def test_report_rerenders_from_results(run_dir, tmp_path):
    (run_dir / "report.html").unlink()
    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0 and (run_dir / "report.html").is_file()
    assert "<table>" in (run_dir / "report.html").read_text()
    # a results.json that is not a run's: named with what it lacks, not a traceback
    for content, why in (
        ("nonsense", "not JSON"),
        ("[1, 2]", "a JSON list, not an object"),
        ('{"kind": "image", "run": {}}', "no data, model, operating_point, test"),
    ):
        (tmp_path / "results.json").write_text(content)
        bad = runner.invoke(app, ["report", str(tmp_path)])
        assert bad.exit_code == 2 and f"run or evaluation ({why}" in bad.output, bad.output
        assert "Traceback" not in bad.output
