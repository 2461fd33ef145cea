"""An image run end to end on a synthetic folder dataset: train-image (with resume), the
bundle, predict on a folder with a corrupt file, evaluate on data never seen in training."""

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from breastcad.cli import app
from breastcad.predict import Predictor
from tests.data.conftest import blob_image, save

runner = CliRunner()
pytestmark = pytest.mark.slow


@pytest.fixture
def two_class_tree(tmp_path):
    root = tmp_path / "images"
    for i in range(36):
        img = blob_image(i, (40, 44), rgb=True)
        save(root / "benign" / f"b{i:02d}.png", img // 3)
        save(root / "malignant" / f"m{i:02d}.png", 255 - img // 3)
    (root / "benign" / "broken.png").write_bytes(b"not an image")
    return root


def _train_args(root, out, epochs, *extra, size=24):
    """`train-image` arguments of the small idc_cnn runs of these tests."""
    return [
        "train-image",
        "--dataset",
        "folder",
        "--root",
        str(root),
        "--model",
        "idc_cnn",
        "--size",
        str(size),
        "--epochs",
        str(epochs),
        "--batch-size",
        "16",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def _train(root, out, epochs, *extra, size=24):
    env = {"BREASTCAD_CACHE": str(out.parent / "cache")}
    return runner.invoke(app, _train_args(root, out, epochs, *extra, size=size), env=env)


def _train_folder(root, out, *options, dataset="folder"):
    """`train-image` on a folder dataset (or another layout) with the given model options,
    quiet, into `out`."""
    return runner.invoke(
        app,
        [
            "train-image",
            *("--dataset", dataset, "--root", str(root)),
            *options,
            *("--out", str(out), "--quiet"),
        ],
        env={"BREASTCAD_CACHE": str(out.parent / "cache")},
    )


def test_train_resume_predict_and_evaluate(two_class_tree, tmp_path):
    out = tmp_path / "run"
    first = _train(two_class_tree, out, 1)
    assert first.exit_code == 0, first.output
    resumed = _train(two_class_tree, out, 2, "--resume")
    assert resumed.exit_code == 0, resumed.output
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["resumed_from"].endswith("last.ckpt")
    assert [row["epoch"] for row in results["training"]["history"]] == [1, 2]
    assert {"val_auc", "train_precision", "val_recall"} <= set(results["training"]["history"][1])
    assert any("broken.png" in p for p in results["data"]["problems"])
    test = results["test"]
    assert test["ci"]["macro_auc"]["value"] > 0.9  # the classes differ in brightness
    assert test["calibration"]["temperature"] > 0
    assert results["model"]["init"] == "random"
    assert results["model"]["test_time_augmentation"] == "none"
    for plot in ("learning_curves", "confusion", "roc", "reliability", "filters", "predictions"):
        assert (out / results["plots"][plot]).is_file()
    report = (out / "report.md").read_text()
    assert "Model card" in report and "Research use only" in report
    assert "Test-time augmentation: none" in report
    # accelerator "auto": the GPU where there is one, and the run says which device it used
    device = results["training"]["device"]
    assert device.startswith("cuda:0 (") if torch.cuda.is_available() else device == "cpu"
    assert f"Training: 2 epochs on {device}" in report
    support = results["operating_point"]["validation"]  # what the threshold rests on
    val_counts = results["data"]["counts"]["val"]
    assert support["positives"] == val_counts["malignant"]
    assert support["negatives"] == sum(val_counts.values()) - support["positives"]
    assert support["sensitivity_lower_95"] < support["sensitivity"]
    assert f"flags {support['detected']} of {support['positives']} positives" in report

    # predict: a folder of images plus a corrupt file, through the CLI and the Predictor
    preds = tmp_path / "preds.csv"
    result = runner.invoke(
        app,
        [
            "predict",
            str(two_class_tree / "malignant"),
            str(two_class_tree / "benign" / "broken.png"),
            "--model",
            str(out / "bundle"),
            "--out",
            str(preds),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "broken.png" in result.output
    table = pd.read_csv(preds)
    errors = table["error"].fillna("")
    assert len(table) == 37 and (errors != "").sum() == 1
    good = table[errors == ""]
    assert np.allclose(good[["p_benign", "p_malignant"]].sum(axis=1), 1.0)
    predictor = Predictor.from_bundle(out / "bundle")
    # trained in training mode: batch norm learnt the data's statistics (a network left in
    # eval mode before the fit would keep its initial running means of 0)
    norms = [m for m in predictor.network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.running_mean.abs().max() > 0 for m in norms)
    direct = predictor.predict_paths([two_class_tree / "malignant"], progress=False)
    assert np.allclose(direct["p_malignant"], good["p_malignant"])

    # evaluate the bundle on new data: the same classes drawn with other seeds
    new = tmp_path / "new"
    for i in range(100, 112):
        img = blob_image(i, (40, 44), rgb=True)
        save(new / "benign" / f"b{i}.png", img // 3)
        save(new / "malignant" / f"m{i}.png", 255 - img // 3)
    evaluated = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(out / "bundle"),
            "--dataset",
            "folder",
            "--root",
            str(new),
            "--out",
            str(tmp_path / "eval"),
            "--quiet",
        ],
        env={"BREASTCAD_CACHE": str(tmp_path / "cache")},
    )
    assert evaluated.exit_code == 0, evaluated.output
    ev = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert ev["test"]["n"] == 24 and (tmp_path / "eval" / "report.html").is_file()
    assert all((tmp_path / "eval" / path).is_file() for path in ev["plots"].values())
    assert {"roc", "confusion", "reliability"} <= set(ev["plots"])
    assert ev["operating_point"]["validation"] == support  # carried by the bundle
    assert ev["model"]["test_time_augmentation"] == "none"
    assert (out / "history.csv").read_text().startswith("epoch,")
    wrong = runner.invoke(app, ["evaluate", "--model", str(out / "bundle")])  # no image data
    assert wrong.exit_code == 2 and "--dataset" in wrong.output


def test_a_bundle_retrains_on_new_data_from_its_own_network(two_class_tree, tmp_path):
    """`--init-from BUNDLE`: a second site's images train on from the first run's network
    (its weights and input size), and the run says which bundle it started from. Tested
    at a learning rate too small to move the weights, against a fresh run of the same seed."""
    from breastcad.bundle import load_bundle

    first = _train(two_class_tree, tmp_path / "site1", 1)
    assert first.exit_code == 0, first.output
    site1 = load_bundle(tmp_path / "site1" / "bundle")
    new = tmp_path / "site2"
    for i in range(100, 136):
        img = blob_image(i, (52, 48), rgb=True)
        save(new / "benign" / f"b{i}.png", img // 3)
        save(new / "malignant" / f"m{i}.png", 255 - img // 3)
    still = ("--epochs", "1", "--lr", "1e-12", "--batch-size", "16", "--quiet")
    args = ["--model", "idc_cnn", *still, "--init-from", str(tmp_path / "site1" / "bundle")]
    again = _train_folder(new, tmp_path / "retrained", *args)  # no --size: the bundle's 24 px
    assert again.exit_code == 0, again.output
    fresh = _train_folder(new, tmp_path / "fresh", "--model", "idc_cnn", "--size", "24", *still)
    assert fresh.exit_code == 0, fresh.output

    def weights(run: str) -> dict[str, torch.Tensor]:
        net = load_bundle(tmp_path / run / "bundle").estimator.net
        return {k: v for k, v in net.named_parameters()}

    before = dict(site1.estimator.net.named_parameters())
    retrained, scratch = weights("retrained"), weights("fresh")
    assert all(torch.allclose(retrained[k], before[k], atol=1e-7) for k in before)
    assert max((scratch[k] - before[k]).abs().max().item() for k in before) > 1e-5
    results = json.loads((tmp_path / "retrained" / "results.json").read_text())
    assert results["data"]["preprocessing"]["size"] == 24
    assert results["model"]["init"].startswith(f"bundle {site1.model_id} (")
    assert "trained on folder" in results["model"]["init"]
    assert f"bundle {site1.model_id}" in (tmp_path / "retrained" / "report.md").read_text()
    # the retrained network learnt from both sites' images: its bundle knows them all
    kept = load_bundle(tmp_path / "retrained" / "bundle").manifest["training_hashes"]
    site2 = json.loads((tmp_path / "fresh" / "results.json").read_text())["data"]["counts"]
    assert kept["images"] == site1.manifest["training_hashes"]["images"] + sum(
        sum(site2[p].values()) for p in ("train", "val")
    )
    assert "the bundle the run started from" in kept["of"]

    # what cannot start from that bundle is refused, naming why
    def refused(root, *options) -> str:
        result = _train_folder(root, tmp_path / "x", *options)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        return result.output

    bundle = str(tmp_path / "site1" / "bundle")
    assert "give --model idc_cnn" in refused(new, "--model", "mammo_cnn", "--init-from", bundle)
    resized = refused(new, "--model", "idc_cnn", "--size", "32", "--init-from", bundle)
    assert "differ from it or are not part of it: size" in resized
    three = tmp_path / "three"
    shutil.copytree(new, three)
    shutil.copytree(new / "benign", three / "normal")
    assert "the data has benign, malignant, normal" in refused(
        three, "--model", "idc_cnn", "--init-from", bundle
    )
    assert "bundle" in refused(new, "--model", "idc_cnn", "--init-from", str(tmp_path / "none"))


def test_a_busi_benign_vs_malignant_run_leaves_normals_out_and_says_so(tmp_path):
    """`--option task=benign_vs_malignant` on a BUSI layout: two classes, no normal image in
    any partition, and the results and report name the option the data was read with."""
    base = tmp_path / "busi" / "Dataset_BUSI_with_GT"
    for label, n, shift in (("benign", 24, 0), ("malignant", 24, 100), ("normal", 10, 50)):
        for i in range(1, n + 1):
            save(base / label / f"{label} ({i}).png", blob_image(shift + i, (40, 44)) // 2)
    out = tmp_path / "bm"
    args = _train_args(tmp_path / "busi", out, 1, "--option", "task=benign_vs_malignant")
    args[args.index("folder")] = "busi"
    result = runner.invoke(app, args, env={"BREASTCAD_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["classes"] == ["benign", "malignant"]
    assert results["data"]["options"] == {"task": "benign_vs_malignant"}
    counts = results["data"]["counts"]
    assert sum(sum(c.values()) for c in counts.values()) == 48
    assert not any("normal" in c for c in counts.values())
    assert "with task=benign_vs_malignant" in (out / "report.md").read_text()
    # evaluating the bundle on BUSI read as 3-class is refused, naming the option
    evaluate = ["evaluate", "--model", str(out / "bundle"), "--dataset", "busi"]
    evaluate += ["--root", str(tmp_path / "busi"), "--quiet"]
    wrong = runner.invoke(app, [*evaluate, "--out", str(tmp_path / "e3")])
    assert wrong.exit_code != 0 and "--option task=benign_vs_malignant" in wrong.output
    assert "trained on busi read with" in wrong.output  # from the bundle, not a fixed hint
    assert "Traceback" not in wrong.output
    right = runner.invoke(
        app, [*evaluate, "--out", str(tmp_path / "e2"), "--option", "task=benign_vs_malignant"]
    )
    assert right.exit_code == 0, right.output
    assert len(pd.read_csv(tmp_path / "e2" / "predictions.csv")) == 48
    evaluated = json.loads((tmp_path / "e2" / "results.json").read_text())
    assert evaluated["data"]["options"] == {"task": "benign_vs_malignant"}


def test_a_breakhis_run_splits_by_slide_and_reads_one_magnification(tmp_path):
    """A BreakHis tree (official folders and names; 20 slides, each at 200X and 40X): the run
    keeps every slide (patient) within one partition, reads 200X only, and its intervals
    resample slides, not images."""
    root = tmp_path / "breakhis"
    for s in range(20):
        cls, tumour = ("B", "F") if s % 2 else ("M", "DC")
        slide = f"14-{1000 + s}"
        for mag in (40, 200):
            folder = root / "BreaKHis_v1/histology_slides/breast"
            folder = folder / ("benign" if cls == "B" else "malignant") / "SOB" / tumour
            folder = folder / f"SOB_{cls}_{tumour}_{slide}" / f"{mag}X"
            for i in range(1, 5):
                img = blob_image(100 * s + 10 * i + mag % 7, (46, 70), rgb=True)
                img = img // 3 if cls == "B" else 255 - img // 3
                save(folder / f"SOB_{cls}_{tumour}-{slide}-{mag}-{i:03d}.png", img)
    out = tmp_path / "bh"
    args = _train_args(root, out, 1, "--option", "magnifications=[200]")
    args[args.index("folder")] = "breakhis"
    result = runner.invoke(app, args, env={"BREASTCAD_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    split = json.loads((out / "splits" / "split.json").read_text())["rows"]
    rows = pd.DataFrame(split)
    assert len(rows) == 80 and rows["path"].str.contains("-200-").all()
    assert (rows.groupby("group_id")["partition"].nunique() == 1).all()  # a slide stays whole
    results = json.loads((out / "results.json").read_text())
    test_slides = rows.loc[rows["partition"] == "test", "group_id"].nunique()
    assert results["test"]["ci"]["n_groups"]["value"] == test_slides < results["test"]["n"]
    assert results["data"]["options"] == {"magnifications": [200]}


def test_image_commands_give_clear_errors(two_class_tree, tmp_path):
    first = _train(two_class_tree, tmp_path / "r", 1)
    again = _train(two_class_tree, tmp_path / "r", 1)  # would overwrite the checkpoints
    assert first.exit_code == 0 and again.exit_code == 2 and "--resume" in again.output
    bad_model = _train(two_class_tree, tmp_path / "r", 1, "--sampling", "sideways")
    assert bad_model.exit_code == 2 and "sampling" in bad_model.output
    copies = _train_folder(two_class_tree, tmp_path / "p", "--model", "probe", "--members", "3")
    assert copies.exit_code == 2 and "--cross-fit" in copies.output  # three identical probes
    odd = _train(two_class_tree, tmp_path / "c", 1, "--calibration", "platt")
    assert odd.exit_code == 2 and "calibration" in odd.output
    half = _train(two_class_tree, tmp_path / "h", 1, "--precision", "16-mixed")
    assert half.exit_code == 2 and "precision" in half.output
    mixed_probe = _train_folder(
        two_class_tree, tmp_path / "mp", "--model", "probe", "--precision", "bf16-mixed"
    )
    assert mixed_probe.exit_code == 2 and "no training steps" in mixed_probe.output
    no_bundle = runner.invoke(app, ["predict", str(two_class_tree), "--model", str(tmp_path)])
    assert no_bundle.exit_code == 2 and "bundle" in no_bundle.output
    # the published mammogram CNN pools four times: 8 px leaves nothing to flatten
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny = _train_folder(
            two_class_tree, tmp_path / "t", "--model", "mammo_cnn", "--size", "8", "--epochs", "1"
        )
    assert tiny.exit_code == 2 and "cannot take 8 x 8 px input" in tiny.output
    assert not [w for w in caught if "zero-element" in str(w.message)]  # no torch noise first
    single = _train_folder(
        two_class_tree, tmp_path / "b", "--model", "idc_cnn", "--size", "24", "--batch-size", "1"
    )
    assert single.exit_code == 2 and "need at least 2 images per batch" in single.output
    assert "Traceback" not in tiny.output
    one_class = tmp_path / "one"
    shutil.copytree(two_class_tree / "benign", one_class / "benign")
    alone = _train(one_class, tmp_path / "o", 1)
    assert alone.exit_code == 2 and "at least two classes" in alone.output
    (one_class / "malignant").mkdir()  # a class folder without images
    empty = _train(one_class, tmp_path / "e", 1)
    assert empty.exit_code == 2 and "at least two classes" in empty.output


@pytest.mark.parametrize("tta", ["flip", "affine"])
def test_a_tta_run_fits_and_deploys_the_averaged_answer(two_class_tree, tmp_path, tta):
    """`--tta flip` / `affine`: the run's figures, the bundle, predict and evaluate all
    average each image's views; with flip a mirror image gets the same probabilities."""
    out = tmp_path / "tta"
    result = _train(two_class_tree, out, 2, "--tta", tta)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["test_time_augmentation"] == tta
    assert f"Test-time augmentation: {tta}" in (out / "report.md").read_text()
    predictor = Predictor.from_bundle(out / "bundle")
    assert predictor.tta == tta
    measured = pd.read_csv(out / "predictions.csv")
    again = predictor.predict_paths(measured["path"].tolist(), progress=False)
    assert np.allclose(again["p_malignant"], measured["p_malignant"], atol=1e-5)
    from breastcad.data.imaging import read_image

    image = predictor.prepare(read_image(measured["path"].iloc[0]))
    pair = predictor.predict_pixels(np.stack([image, image[:, ::-1]]))
    one_view = predictor.predict_logits(image[None], views=False)
    assert not np.allclose(predictor.predict_logits(image[None]), one_view, atol=1e-4)
    if tta == "flip":
        assert np.allclose(pair[0], pair[1], atol=1e-5)
    evaluated = runner.invoke(
        app,
        [
            "evaluate",
            *("--model", str(out / "bundle"), "--dataset", "folder"),
            *("--root", str(two_class_tree), "--split", str(out / "splits" / "split.json")),
            *("--out", str(tmp_path / "eval"), "--quiet"),
        ],
        env={"BREASTCAD_CACHE": str(tmp_path / "cache")},
    )
    assert evaluated.exit_code == 0, evaluated.output
    ev = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert ev["model"]["test_time_augmentation"] == tta
    assert ev["test"]["ci"]["macro_auc"]["value"] == pytest.approx(
        results["test"]["ci"]["macro_auc"]["value"], abs=1e-6
    )
    bad = _train(two_class_tree, tmp_path / "bad", 1, "--tta", "rotate")
    assert bad.exit_code == 2 and "tta" in bad.output


def test_full_finetune_bundle_predicts_what_the_run_measured(two_class_tree, tmp_path):
    """The whole network trains (batch norm statistics included); the bundle must carry those
    statistics, so the Predictor reproduces the run's own test probabilities."""
    out = tmp_path / "ff"
    result = _train_folder(
        two_class_tree,
        out,
        *("--model", "full_finetune", "--param", "weights=random", "--size", "32"),
        *("--epochs", "2", "--batch-size", "16"),
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["recipe"]["optimizer"] == "adamw"
    assert results["training"]["settings"]["optim"]["schedule"] == "cosine"
    measured = pd.read_csv(out / "predictions.csv")
    again = Predictor.from_bundle(out / "bundle").predict_paths(
        measured["path"].tolist(), progress=False
    )
    assert np.allclose(again["p_malignant"], measured["p_malignant"], atol=1e-5)


def test_a_bf16_mixed_run_says_so_and_its_bundle_predicts_what_it_measured(
    two_class_tree, tmp_path
):
    """bfloat16 autocast is for the training steps only: the run's test answers and the
    bundle's predictions are float32, the same to float32 precision, and the run records how
    it trained."""
    out = tmp_path / "bf16"
    result = _train(two_class_tree, out, 2, "--precision", "bf16-mixed")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["train"]["precision"] == "bf16-mixed"
    assert results["training"]["precision"].startswith("bfloat16 mixed precision")
    assert results["test"]["ci"]["macro_auc"]["value"] > 0.9  # brightness still tells them
    report = (out / "report.md").read_text()
    assert f"epochs on {results['training']['device']}, bfloat16 mixed precision" in report
    measured = pd.read_csv(out / "predictions.csv")
    again = Predictor.from_bundle(out / "bundle").predict_paths(
        measured["path"].tolist(), progress=False
    )
    assert np.allclose(again["p_malignant"], measured["p_malignant"], atol=1e-5)
    switched = _train(two_class_tree, out, 3, "--resume")  # float32, the default
    assert switched.exit_code == 2
    assert "train.precision: 'bf16-mixed' -> '32'" in " ".join(switched.output.split())


def test_deterministic_runs_repeat_exactly_and_say_so(two_class_tree, tmp_path):
    """`--deterministic`: two seeded runs with augmentation give the same epochs and the same
    test answers (on the GPU too where one is present, where runs without it do not repeat),
    and the config, the results and the report record the switch."""
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = _train(two_class_tree, out, 2, "--deterministic", "--seed", "3")
        assert result.exit_code == 0, result.output
        runs.append((json.loads((out / "results.json").read_text()), out))
    first, out = runs[0]
    assert first["config"]["train"]["deterministic"] is True
    assert first["training"]["deterministic"] is True
    assert first["training"]["device"].startswith("cuda") == torch.cuda.is_available()
    assert "deterministic algorithms" in (out / "report.md").read_text()
    keys = ["train_loss", "val_loss", "train_acc", "val_auc"]
    steps = [[[row[k] for k in keys] for row in r["training"]["history"]] for r, _ in runs]
    assert steps[0] == steps[1] and len(steps[0]) == 2
    answers = [pd.read_csv(o / "predictions.csv") for _, o in runs]
    assert answers[0]["p_malignant"].tolist() == answers[1]["p_malignant"].tolist()
    assert first["config"]["seed"] == 3


def test_a_probe_run_fits_without_epochs_and_its_bundle_predicts_what_it_measured(
    two_class_tree, tmp_path
):
    """The linear probe through the CLI: ImageNet features, C chosen by cross-validation,
    the report says so, and the bundle (a plain network) gives the run's own probabilities."""
    out = tmp_path / "probe"
    result = _train_folder(two_class_tree, out, "--model", "probe", "--size", "32")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    probe = results["training"]["probe"]
    assert results["training"]["epochs_run"] == 0 and probe["features"] == 1792
    assert probe["cross_validation"]["cut_by"] == "group" and probe["C"] > 0
    assert "ImageNet (efficientnet-lite0" in results["model"]["init"]
    assert results["test"]["ci"]["macro_auc"]["value"] > 0.9  # dark against bright blobs
    report = (out / "report.md").read_text()
    assert "linear probe, no epochs" in report and f"C = {probe['C']} chosen by" in report
    measured = pd.read_csv(out / "predictions.csv")
    again = Predictor.from_bundle(out / "bundle").predict_paths(
        measured["path"].tolist(), progress=False
    )
    assert np.allclose(again["p_malignant"], measured["p_malignant"], atol=1e-5)
    # rows keep the order given, an unreadable file in place; the columns do not depend on
    # which files could be read
    broken = str(two_class_tree / "benign" / "broken.png")
    mixed = Predictor.from_bundle(out / "bundle").predict_paths(
        [measured["path"][0], broken, measured["path"][1]], batch_size=2, progress=False
    )
    assert mixed["path"].tolist() == [measured["path"][0], broken, measured["path"][1]]
    assert mixed["error"].tolist()[1] != "" and np.isnan(mixed["p_malignant"][1])
    assert np.allclose(mixed["p_malignant"][[0, 2]], measured["p_malignant"][:2], atol=1e-5)
    only_broken = runner.invoke(app, ["predict", broken, "--model", str(out / "bundle")])
    assert only_broken.exit_code == 0 and "p_benign,p_malignant" in only_broken.output
    from breastcad.export import export_onnx

    record = export_onnx(out / "bundle", check=measured["path"].tolist())
    assert record["parity_max_abs_diff"] <= 1e-4 * record["parity_logit_scale"]
    onnx = Predictor.from_bundle(out / "bundle", runtime="onnx").predict_paths(
        measured["path"].tolist(), progress=False
    )
    assert np.allclose(onnx["p_malignant"], measured["p_malignant"], atol=1e-4)


def test_evaluating_a_bundle_on_its_own_training_data_says_so_and_spares_its_run(
    two_class_tree, tmp_path
):
    """`evaluate` on the data the bundle's run trained on warns (CLI and report) with how many
    of the images it learnt from, unless it is that run's test part; it never writes into a
    training run's folder; a partition the split lacks is named."""
    out = tmp_path / "probe"
    assert _train_folder(two_class_tree, out, "--model", "probe", "--size", "32").exit_code == 0
    counts = json.loads((out / "results.json").read_text())["data"]["counts"]
    learnt = sum(sum(counts[p].values()) for p in ("train", "val"))
    evaluate = ["evaluate", "--model", str(out / "bundle"), "--dataset", "folder"]
    evaluate += ["--root", str(two_class_tree), "--quiet"]
    whole = runner.invoke(app, [*evaluate, "--out", str(tmp_path / "all")])
    assert whole.exit_code == 0, whole.output
    total = sum(sum(c.values()) for c in counts.values())
    assert (
        f"warning: evaluated on images the bundle learnt from: {learnt} of these {total} images "
        f"({learnt} the same pixels, 0 near duplicates (pHash within 4 bits))" in whole.output
    )
    seen = json.loads((tmp_path / "all" / "results.json").read_text())["data"]
    assert f"{learnt} of these {total} images" in seen["seen_in_training"]
    assert "--partition test" in seen["seen_in_training"]  # how to get the honest figures
    other = seen["training_overlap"]["without_them"]
    assert other["images"] == total - learnt and 0 <= other["accuracy"] <= 1
    assert "**Not an estimate on new data**" in (tmp_path / "all" / "report.md").read_text()
    # image by image: the rows marked are the run's training and validation images
    marked = pd.read_csv(tmp_path / "all" / "predictions.csv", keep_default_na=False)
    split_rows = json.loads((out / "splits" / "split.json").read_text())["rows"]
    parts = zip(split_rows["path"], split_rows["partition"], strict=True)
    learnt_paths = {p for p, part in parts if part != "test"}
    assert set(marked.loc[marked["seen_in_training"] == "same", "path"]) == learnt_paths
    assert set(marked["seen_in_training"]) == {"same", ""}
    split = ["--split", str(out / "splits" / "split.json")]
    own_test = runner.invoke(app, [*evaluate, *split, "--out", str(tmp_path / "test")])
    assert own_test.exit_code == 0 and "warning" not in own_test.output
    assert (
        "seen_in_training"
        not in json.loads((tmp_path / "test" / "results.json").read_text())["data"]
    )
    assert "Overlap with the training images: none is among the" in (
        (tmp_path / "test" / "report.md").read_text()
    )
    train = runner.invoke(
        app, [*evaluate, *split, "--partition", "train", "--out", str(tmp_path / "t")]
    )
    assert (
        f"{sum(counts['train'].values())} of these {sum(counts['train'].values())}" in train.output
    )
    assert "test part alone" not in train.output  # a part was chosen: no hint to choose one
    before = (out / "results.json").read_bytes()
    into_run = runner.invoke(app, [*evaluate, "--out", str(out)])
    assert into_run.exit_code != 0 and "holds a training run" in into_run.output
    assert (out / "results.json").read_bytes() == before
    # a new run in it is refused too (a probe has no checkpoints: it was replaced silently),
    # unless --overwrite
    bundle = (out / "bundle" / "bundle.json").read_bytes()
    again = _train_folder(two_class_tree, out, "--model", "probe", "--size", "40")
    assert again.exit_code == 2 and "holds an earlier run (results.json, bundle)" in again.output
    assert (out / "bundle" / "bundle.json").read_bytes() == bundle
    replaced = _train_folder(two_class_tree, out, "--model", "probe", "--size", "40", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "bundle" / "bundle.json").read_text())["preprocessing"]["size"] == 40
    run_not_bundle = runner.invoke(app, ["predict", str(two_class_tree), "--model", str(out)])
    assert run_not_bundle.exit_code == 2, run_not_bundle.output
    assert f"(a run folder? its bundles: {out / 'bundle'})" in run_not_bundle.output
    nowhere = runner.invoke(
        app, [*evaluate, *split, "--partition", "tset", "--out", str(tmp_path / "n")]
    )
    assert nowhere.exit_code != 0 and "no image in its 'tset' part" in nowhere.output
    assert "Traceback" not in nowhere.output


def test_evaluate_recognises_training_images_in_other_data_unless_the_bundle_keeps_no_hashes(
    two_class_tree, tmp_path
):
    """Some training images copied under other names into another layout, one of them saved
    again as JPEG, next to new images: `evaluate` finds them image by image (the same pixels,
    a near duplicate), warns and gives the figures without them. The hashes are checked like
    the model files but are not part of its id. A bundle trained with --no-training-hashes
    keeps none, says so in its model card, and such an evaluation says it was not checked."""
    out = tmp_path / "probe"
    assert _train_folder(two_class_tree, out, "--model", "probe", "--size", "32").exit_code == 0
    manifest = json.loads((out / "bundle" / "bundle.json").read_text())
    kept = manifest["training_hashes"]
    assert kept["images"] == sum(
        sum(json.loads((out / "results.json").read_text())["data"]["counts"][p].values())
        for p in ("train", "val")
    )
    assert kept["file"] not in manifest["files"]  # not part of the model's id
    assert "whoever holds an image can tell" in (out / "report.md").read_text()
    split_rows = json.loads((out / "splits" / "split.json").read_text())["rows"]
    parts = zip(split_rows["path"], split_rows["partition"], strict=True)
    learnt = [Path(p) for p, part in parts if part == "train"]
    elsewhere = tmp_path / "elsewhere"
    for k, path in enumerate(learnt[:4]):  # renamed, and one re-encoded
        (elsewhere / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, elsewhere / path.parent.name / f"copy{k}.png")
    image = Image.open(learnt[4]).convert("RGB")
    image.save(elsewhere / learnt[4].parent.name / "again.jpg", quality=95)
    for i in range(36, 44):  # new images
        img = blob_image(i, (40, 44), rgb=True)
        save(elsewhere / "benign" / f"new{i}.png", img // 3)
        save(elsewhere / "malignant" / f"new{i}.png", 255 - img // 3)
    evaluate = ["evaluate", "--dataset", "folder", "--root", str(elsewhere), "--quiet"]
    env = {"BREASTCAD_CACHE": str(tmp_path / "cache")}
    found = runner.invoke(
        app, [*evaluate, "--model", str(out / "bundle"), "--out", str(tmp_path / "e")], env=env
    )
    assert found.exit_code == 0, found.output
    assert "5 of these 21 images (4 the same pixels, 1 near duplicates" in found.output
    overlap = json.loads((tmp_path / "e" / "results.json").read_text())["data"]
    assert overlap["training_overlap"]["without_them"]["images"] == 16
    marks = pd.read_csv(tmp_path / "e" / "predictions.csv", keep_default_na=False)
    assert marks.set_index("path")["seen_in_training"].to_dict() == {
        str(p): ("near" if p.name == "again.jpg" else "same" if p.stem.startswith("copy") else "")
        for p in elsewhere.rglob("*.*")
    }
    # predict marks them the same way, and says so
    predicted = runner.invoke(
        app,
        [
            "predict",
            str(elsewhere),
            "--model",
            str(out / "bundle"),
            "--out",
            str(tmp_path / "p.csv"),
        ],
    )
    assert "5 of these 21 are images the bundle learnt from" in predicted.output
    table = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert (
        table.set_index("path")["seen_in_training"].to_dict()
        == marks.set_index("path")["seen_in_training"].to_dict()
    )
    # the hashes file is checked like the model files
    hashes = out / "bundle" / kept["file"]
    saved = hashes.read_bytes()
    hashes.write_bytes(saved[:-8] + bytes(8))
    changed = runner.invoke(app, [*evaluate, "--model", str(out / "bundle"), "--out", "x"])
    assert changed.exit_code != 0 and f"{hashes}: checksum mismatch" in changed.output
    hashes.write_bytes(saved)
    # a copy to share keeps nothing of them: it cannot tell
    shared = runner.invoke(app, ["share", "--model", str(out / "bundle"), "--out", str(out / "s")])
    assert f"without the hashes of its {kept['images']} images" in shared.output
    blind = runner.invoke(app, [*evaluate, "--model", str(out / "s"), "--out", str(tmp_path / "b")])
    assert blind.exit_code == 0 and "warning" not in blind.output
    # without hashes: nothing kept, said so, and other data is not checked
    bare = tmp_path / "bare"
    result = _train_folder(
        two_class_tree, bare, "--model", "probe", "--size", "32", "--no-training-hashes"
    )
    assert result.exit_code == 0, result.output
    assert "training_hashes" not in json.loads((bare / "bundle" / "bundle.json").read_text())
    assert not list((bare / "bundle").glob("*.npz"))
    assert "keeps nothing of its training images" in (bare / "report.md").read_text()
    unchecked = runner.invoke(
        app, [*evaluate, "--model", str(bare / "bundle"), "--out", str(tmp_path / "u")], env=env
    )
    assert unchecked.exit_code == 0 and "warning" not in unchecked.output
    assert "not checked image by image" in (tmp_path / "u" / "report.md").read_text()
    assert "seen_in_training" not in pd.read_csv(tmp_path / "u" / "predictions.csv").columns
    # the very data it read is still recognised, by its fingerprint and split file
    again = [*evaluate[:3], "--root", str(two_class_tree), "--quiet"]
    same = runner.invoke(
        app, [*again, "--model", str(bare / "bundle"), "--out", str(tmp_path / "s")], env=env
    )
    assert "warning: evaluated on the data the bundle was trained on" in same.output


def test_a_run_says_when_its_test_part_holds_copies_of_training_images(two_class_tree, tmp_path):
    """Every benign image twice under another name: split image by image (no duplicate
    audit), copies straddle the partitions and the run says so (terminal, report, results:
    as many as the split put there); split by duplicate cluster (the default), none do and
    the report says the test part was checked."""
    for path in sorted((two_class_tree / "benign").glob("b*.png")):
        shutil.copy(path, path.with_name(f"copy-{path.name}"))
    counts = {}
    for name, split in (("random", "--no-duplicates"), ("aware", "--duplicates")):
        out = tmp_path / name
        result = _train_folder(two_class_tree, out, "--model", "probe", "--size", "32", split)
        assert result.exit_code == 0, result.output
        rows = json.loads((out / "splits" / "split.json").read_text())["rows"]
        part = dict(zip(rows["path"], rows["partition"], strict=True))

        def twin(path: str) -> str:
            name = Path(path).name
            return str(
                Path(path).with_name(name[5:] if name.startswith("copy-") else f"copy-{name}")
            )

        straddling = sum(part[p] == "test" and part.get(twin(p), "test") != "test" for p in part)
        report = (out / "report.md").read_text()
        found = json.loads((out / "results.json").read_text())["test_overlap"]
        counts[name] = (straddling, found, result.output, report)
    straddling, found, output, report = counts["random"]
    assert straddling > 0 and found["same_pixels"] == straddling
    assert f"warning: the test part is not independent of training: {straddling} of its" in output
    assert "**Test part not independent of training**" in report
    assert "near duplicates not looked for (duplicate distance none)" in report
    assert f"Metrics on test data of which {straddling} of" in report  # the model card too
    evaluate = f"breastcad evaluate --model {tmp_path / 'random'}/bundle --dataset folder"
    assert evaluate in output  # the figures without them, one command away
    straddling, found, output, report = counts["aware"]
    assert straddling == 0 and found["same_pixels"] + found["near_duplicates"] == 0
    assert "not independent" not in output
    assert "Test part against the training and validation images" in report
    assert "Metrics on held-out test data" in report


def test_a_run_without_an_audit_hashes_its_images_from_the_decode_that_caches_them(
    two_class_tree, tmp_path, monkeypatch
):
    """No audit before the split (`duplicate_distance` None): the bundle's hashes and the
    check of the test part come from the cache's own decode; no image is decoded for them."""
    from breastcad.config import ImageRunConfig
    from breastcad.data import inspection
    from breastcad.image_experiment import run_image_experiment

    decoded: list[str] = []
    read = inspection.read_image
    monkeypatch.setattr(inspection, "read_image", lambda path: decoded.append(path) or read(path))
    cfg = ImageRunConfig.model_validate(
        {
            "data": {"dataset": "folder", "root": two_class_tree, "duplicate_distance": None},
            "model": "probe",
            "model_params": {"size": 32},
            "train": {"progress": False, "jobs": 1, "cache_dir": tmp_path / "cache"},
            "bootstrap": 20,
        }
    )
    results = run_image_experiment(cfg, tmp_path / "run")
    assert decoded == []
    kept = json.loads((tmp_path / "run" / "bundle" / "bundle.json").read_text())
    counts = results["data"]["counts"]
    assert kept["training_hashes"]["images"] == sum(
        sum(counts[p].values()) for p in ("train", "val")
    )
    assert results["test_overlap"]["images"] == sum(counts["test"].values())


def test_a_prior_shift_run_undoes_reweighting_and_its_bundle_applies_the_shift(tmp_path):
    """Three benign images to each malignant one: balanced class weights (the default) train
    towards equal classes; `--calibration prior-shift` adds log pi_k of the training part
    before the temperature, the run reports both argmax decisions and the bundle deploys the
    shift. The default calibration (temperature only) and a run without re-weighting have no
    shift."""
    root = tmp_path / "images"
    for i in range(48):
        save(root / "benign" / f"b{i:02d}.png", blob_image(i, (40, 44), rgb=True) // 3)
    for i in range(16):
        save(root / "malignant" / f"m{i:02d}.png", 255 - blob_image(i, (40, 44), rgb=True) // 3)
    out = tmp_path / "weighted"
    probe = ("--model", "probe", "--size", "32")
    result = _train_folder(root, out, *probe, "--calibration", "prior-shift")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    cal, train = results["test"]["calibration"], results["data"]["counts"]["train"]
    shift = np.asarray(cal["prior_shift"])
    assert np.isclose(shift[1] - shift[0], np.log(train["malignant"] / train["benign"]))
    assert "undoing balanced class weights" in cal["prior_shift_from"]
    assert {"accuracy", "sensitivity"} <= set(results["test"]["argmax_as_trained"])
    report = (out / "report.md").read_text()
    assert "after shifting the logits by" in report and "Argmax decision of the network" in report
    predictor = Predictor.from_bundle(out / "bundle")
    assert np.allclose(predictor.prior_shift, shift)
    measured = pd.read_csv(out / "predictions.csv")
    again = predictor.predict_paths(measured["path"].tolist(), progress=False)
    assert np.allclose(again["p_malignant"], measured["p_malignant"], atol=1e-5)
    # the shift is what separates the deployed probabilities from the unshifted ones
    from breastcad.data.imaging import read_image
    from breastcad.evaluation.classification import softmax

    pixels = np.stack([predictor.prepare(read_image(p)) for p in measured["path"]])
    logits = predictor.predict_logits(pixels)
    deployed, unshifted = predictor.predict_pixels(pixels), softmax(logits, predictor.temperature)
    assert np.allclose(deployed, softmax(logits, predictor.temperature, shift))
    with np.errstate(divide="ignore"):  # separable blobs: some probabilities are 0 or 1
        gap = np.log(deployed[:, 1] / deployed[:, 0]) - np.log(unshifted[:, 1] / unshifted[:, 0])
    gap = gap[np.isfinite(gap)]
    assert len(gap) and np.allclose(gap, (shift[1] - shift[0]) / predictor.temperature)
    # `evaluate` on the bundle applies the stored shift too: the same probabilities again
    evaluated = runner.invoke(
        app,
        [
            *("evaluate", "--model", str(out / "bundle"), "--dataset", "folder"),
            *("--root", str(root), "--out", str(tmp_path / "eval"), "--quiet"),
        ],
        env={"BREASTCAD_CACHE": str(tmp_path / "cache")},
    )
    assert evaluated.exit_code == 0, evaluated.output
    ev = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert np.allclose(ev["test"]["calibration"]["prior_shift"], shift)
    again = pd.read_csv(tmp_path / "eval" / "predictions.csv").set_index("path")
    direct = predictor.predict_paths([root], progress=False).set_index("path")
    assert np.allclose(again.loc[direct.index, "p_malignant"], direct["p_malignant"], atol=1e-5)

    for name, options, why in (
        ("default", (), "none (temperature only)"),
        ("plain", ("--calibration", "prior-shift", "--class-weight", "none"), "none (trained"),
    ):
        result = _train_folder(root, tmp_path / name, *probe, *options)
        assert result.exit_code == 0, result.output
        cal = json.loads((tmp_path / name / "results.json").read_text())["test"]["calibration"]
        assert cal["prior_shift"] == [0.0, 0.0] and cal["prior_shift_from"].startswith(why)
        assert "after shifting the logits" not in (tmp_path / name / "report.md").read_text()


def test_cross_fitted_probes_each_learn_from_the_other_folds_only(two_class_tree, tmp_path):
    """`--model probe --members 3 --cross-fit`: each probe's logistic regression is fitted on
    the development images outside its fold (its C chosen within them), every development
    image is scored once by the probe that never saw it, and the bundle of three probes gives
    the run's own test probabilities."""
    out = tmp_path / "probes"
    options = ("--model", "probe", "--size", "32", "--members", "3", "--cross-fit")
    result = _train_folder(two_class_tree, out, *options)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    members = results["training"]["members"]
    developed = sum(results["data"]["counts"]["train"].values())
    assert len(members) == 3
    for m in members:
        learnt = sum(m["fold"]["counts"]["train"].values())
        assert m["probe"]["training_images"] == learnt < developed and m["probe"]["C"] > 0
    scored = pd.read_csv(out / "out_of_fold_predictions.csv")
    folds = pd.read_csv(out / "splits" / "folds.csv")
    assert sorted(scored["path"]) == sorted(folds["path"]) and len(scored) == developed
    assert results["test"]["ci"]["macro_auc"]["value"] > 0.9  # dark against bright blobs
    measured = pd.read_csv(out / "predictions.csv")
    again = Predictor.from_bundle(out / "bundle").predict_paths(
        measured["path"].tolist(), progress=False
    )
    assert np.allclose(again["p_malignant"], measured["p_malignant"], atol=1e-5)


def _mias_with_discs(root, size=256, images=48):
    """A mini-MIAS layout whose abnormal mammograms (every third) hold a bright disc where
    Info.txt says; consecutive references are one woman's two breasts."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    lines = []
    for i in range(1, images + 1):
        img = rng.normal(70, 12, (size, size))
        if i % 3 == 0:
            row, col = rng.integers(32, size - 32, 2)
            img += 140 * ((yy - row) ** 2 + (xx - col) ** 2 <= 14**2)
            lines.append(f"mdb{i:03d} G CIRC B {col} {size - row} 14")
        else:
            lines.append(f"mdb{i:03d} G NORM")
        save(root / f"mdb{i:03d}.png", np.clip(img, 0, 255).astype(np.uint8))
    (root / "Info.txt").write_text("\n".join(lines) + "\n")
    return root


def test_a_cell_probe_learns_lesion_cells_in_closed_form_and_finds_them(tmp_path):
    """`cell_probe` on a mini-MIAS layout whose abnormal mammograms hold a bright disc where
    Info.txt says: the frozen ImageNet cells under the annotated discs against the cells of
    normal images, no epochs; the image score (its most lesion-like cell) separates the test
    images, the cell scores single out the annotated cells, and the bundle needs no annotation
    to give the run's probabilities."""
    root = _mias_with_discs(tmp_path / "mias")
    out = tmp_path / "cells"
    result = _train_folder(root, out, "--model", "cell_probe", "--size", "256", dataset="mini-mias")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    fit = results["training"]["cell_probe"]
    assert results["training"]["epochs_run"] == 0 and fit["grid"] == [8, 8]
    normal_train = results["data"]["counts"]["train"]["normal"]
    assert fit["images"]["background"] == normal_train and fit["images"]["lesion"] > 0
    # with the default `affine` lesion views: each lesion image's nine moved views add their
    # cells under the moved disc, about as many again as the image as given has, nine times
    assert fit["lesion_views"] == "affine"
    assert 6 * fit["cells"]["lesion"] < fit["cells"]["lesion_moved"] < 12 * fit["cells"]["lesion"]
    assert 0 < fit["cells"]["background"] < 64 * normal_train  # a seeded quarter of them
    assert results["test"]["ci"]["macro_auc"]["value"] > 0.9
    # the highest of 64 cells is scaled to an image logit on the training images: the
    # decisions are not all 'abnormal', and the temperature is not at its bound
    assert fit["image_scale"]["abnormal"]["scale"] > 0
    assert results["test"]["argmax"]["accuracy"] > 0.8
    assert results["test"]["calibration"]["temperature"] < 10
    where = results["test"]["localisation"]
    assert where["cell_auc"] > 0.9  # lesion cells above the rest, held-out annotations
    report = (out / "report.md").read_text()
    assert "lesion-cell probe, no epochs" in report and "of their moved views (mirrored" in report
    measured = pd.read_csv(out / "predictions.csv")
    again = Predictor.from_bundle(out / "bundle").predict_paths(
        measured["path"].tolist(), progress=False
    )
    assert np.allclose(again["p_abnormal"], measured["p_abnormal"], atol=1e-5)


def test_a_mammography_run_fits_each_breast_against_the_other_and_predicts_pairs(tmp_path):
    """Where the data knows a woman's two breasts, the run fits a probability and a threshold
    for the bilateral score on validation, reports its test decisions, writes each test
    image's partner and bilateral probability, and the bundle gives the same answers to
    `predict --pairs` and to `predict --pair` (pairs found by the file names); a pair of two
    women is refused by its rows, a pairs file without its columns by name."""
    root = _mias_with_discs(tmp_path / "mias")
    out = tmp_path / "pairs"
    result = _train_folder(
        root,
        out,
        *("--model", "cell_probe", "--size", "256", "--param", "lesion_views=none"),
        *("--val-size", "0.3", "--test-size", "0.3"),
        dataset="mini-mias",
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    fit = results["operating_point"]["bilateral"]
    assert fit["slope"] > 0 and fit["chosen_on"] == "the validation part"
    assert fit["validation"]["positives"] > 0 and fit["validation"]["negatives"] > 0
    assert fit["validation"]["sensitivity"] >= 0.95  # the run's policy, on its own score
    decided = results["test"]["bilateral"]["at_operating_point"]
    assert decided["threshold"] == fit["threshold"]
    said = f"AUC {results['test']['bilateral']['auc_bilateral']:.3f}"
    assert "against the other breast" in result.output and said in result.output
    assert decided["positives"] == results["test"]["bilateral"]["positives"]
    report = (out / "report.md").read_text()
    assert "predict --pair" in report
    support = fit["validation"]
    assert f"flagged {support['detected']} of {support['positives']} positives" in report
    measured = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    paired = measured[measured["partner"] != ""]
    assert len(paired) == results["test"]["bilateral"]["images"] > 0
    bundle = out / "bundle"
    assert json.loads((bundle / "bundle.json").read_text())["bilateral"]["slope"] == fit["slope"]

    pairs_file = tmp_path / "women.csv"
    halves = paired[paired["path"] < paired["partner"]]  # each woman once
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")  # reported with its pair, never a crash
    strangers = (halves["path"].iloc[0], halves["partner"].iloc[1])  # two women's images
    pd.DataFrame(
        {
            "image": [*halves["path"], str(broken), strangers[0]],
            "other": [*halves["partner"], halves["path"].iloc[0], strangers[1]],
        }
    ).to_csv(pairs_file, index=False)
    table = tmp_path / "bilateral.csv"
    cli = ["predict", "--model", str(bundle), "--pairs", str(pairs_file), "--quiet"]
    result = runner.invoke(app, [*cli, "--out", str(table)])
    assert result.exit_code == 0, result.output
    every = pd.read_csv(table, keep_default_na=False)
    refused = every[every["error"].str.contains("not one woman's two breasts", regex=False)]
    assert len(refused) == 2 and set(refused["path"]) == set(strangers)
    assert (
        refused["error"]
        .str.contains("different women (by their mini-MIAS name)", regex=False)
        .all()
    )
    assert (refused["p_bilateral"] == "").all() and (refused["p_abnormal"] != "").all()
    failed = every[(every["error"] != "") & ~every.index.isin(refused.index)]
    assert len(failed) == 2 and "broken.png" in result.output  # the pair, both ways
    by_broken = failed.set_index("path")["error"]
    assert by_broken[str(broken)].startswith("image: ")  # its own problem, then its partner's
    assert by_broken[halves["path"].iloc[0]].startswith("partner: ")
    assert (failed["p_bilateral"] == "").all() and (failed["prediction_bilateral"] == "").all()
    again = every[every["error"] == ""].set_index("path")
    assert len(again) == len(paired)  # both ways: each image against its partner
    expected = paired.set_index("path")
    assert (again.loc[expected.index, "partner"] == expected["partner"]).all()
    assert (again.loc[expected.index, "seen_in_training"] == "").all()  # the run's test women
    assert np.allclose(
        again.loc[expected.index, "p_bilateral"].astype(float), expected["p_bilateral"], atol=1e-5
    )
    assert np.allclose(
        again.loc[expected.index, "p_abnormal"].astype(float), expected["p_abnormal"], atol=1e-5
    )
    flagged = again["p_bilateral"].astype(float) >= fit["threshold"]
    assert (again.loc[flagged, "prediction_bilateral"] == "abnormal").all()
    assert (again.loc[~flagged, "prediction_bilateral"] == "normal").all()

    # or paired by the files themselves (mini-MIAS names): every woman of the folder, the
    # test women as the run paired them; a file that does not say its side is predicted alone
    auto = tmp_path / "auto.csv"
    cli = ["predict", "--model", str(bundle), "--pair", str(root), str(broken), "--quiet"]
    result = runner.invoke(app, [*cli, "--out", str(auto)])
    assert result.exit_code == 0, result.output
    found = pd.read_csv(auto, keep_default_na=False).set_index("path")
    assert f"not paired {broken}: which breast it shows is unknown" in result.output
    assert found.loc[str(broken), "error"] != "" and found.loc[str(broken), "partner"] == ""
    found = found.drop(str(broken))
    assert len(found) == 48 and (found["unpaired"] == "").all() and (found["error"] == "").all()
    assert (found.loc[expected.index, "partner"] == expected["partner"]).all()
    assert np.allclose(
        found.loc[expected.index, "p_bilateral"].astype(float), expected["p_bilateral"], atol=1e-5
    )

    # evaluate on the run's own test women: the bundle's fit gives the run's decisions
    again_out = tmp_path / "again"
    evaluate = ["evaluate", "--model", str(bundle), "--dataset", "mini-mias", "--root", str(root)]
    split = ["--split", str(out / "splits" / "split.json"), "--partition", "test"]
    result = runner.invoke(
        app,
        [*evaluate, *split, "--out", str(again_out), "--quiet"],
        env={"BREASTCAD_CACHE": str(tmp_path / "cache")},
    )
    assert result.exit_code == 0, result.output
    evaluated = json.loads((again_out / "results.json").read_text())
    assert evaluated["test"]["bilateral"]["at_operating_point"] == decided
    assert evaluated["operating_point"]["bilateral"] == fit  # the bundle's, as the run's
    assert "bounds the sensitivity it can promise" in (again_out / "report.md").read_text()
    assert said in result.output and f"threshold {fit['threshold']:.3f}" in result.output

    (tmp_path / "bad.csv").write_text("left,right\na.png,b.png\n")
    bad = runner.invoke(
        app, ["predict", "--model", str(bundle), "--pairs", str(tmp_path / "bad.csv")]
    )
    assert bad.exit_code != 0 and "bad.csv" in bad.output and "'image' and 'other'" in bad.output
    assert "Traceback" not in bad.output


def test_lesion_map_run_trains_on_annotations_and_predicts_without(tmp_path):
    """mini-MIAS layout: the run records which lesions it trained on; its bundle needs no
    annotation to reproduce the run's test probabilities. Data without annotations, or
    without a class free of lesions, is refused with a clear message."""
    root = tmp_path / "mias"
    lines = []
    for i in range(1, 25):
        img = blob_image(i, (64, 64))
        lines.append(f"mdb{i:03d} G CIRC B 30 30 8" if i % 3 == 0 else f"mdb{i:03d} G NORM")
        save(root / f"mdb{i:03d}.png", img)
    lines.append("mdb024 G ARCH M")  # a second abnormality of mdb024 without coordinates
    (root / "Info.txt").write_text("\n".join(lines) + "\n")

    def train(dataset, data_root, out):
        return runner.invoke(
            app,
            [
                "train-image",
                *("--dataset", dataset, "--root", str(data_root), "--model", "lesion_map"),
                *("--param", "weights=random", "--size", "64", "--epochs", "1"),
                *("--batch-size", "8", "--out", str(out), "--quiet"),
            ],
            env={"BREASTCAD_CACHE": str(tmp_path / "cache")},
        )

    result = train("mini-mias", root, tmp_path / "lm")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "lm" / "results.json").read_text())
    lesions = results["data"]["lesion_masks"]
    assert lesions["annotated"] == 8 and lesions["not_annotated"] == 0
    assert lesions["background_class"] == "normal" and results["model"]["arch"]["background"] == 0
    assert "train_lesion_loss" in results["training"]["history"][0]
    where = results["test"]["localisation"]
    assert where["images"] == results["test"]["n"] and where["cells_per_image"] == "2 x 2"
    assert "Lesion localisation" in (tmp_path / "lm" / "report.md").read_text()
    measured = pd.read_csv(tmp_path / "lm" / "predictions.csv")
    again = Predictor.from_bundle(tmp_path / "lm" / "bundle").predict_paths(
        measured["path"].tolist(), progress=False
    )
    assert np.allclose(again["p_abnormal"], measured["p_abnormal"], atol=1e-5)
    evaluated = runner.invoke(
        app,
        [
            "evaluate",
            *("--model", str(tmp_path / "lm" / "bundle"), "--dataset", "mini-mias"),
            *("--root", str(root), "--out", str(tmp_path / "ev"), "--quiet"),
        ],
        env={"BREASTCAD_CACHE": str(tmp_path / "cache")},
    )
    assert evaluated.exit_code == 0, evaluated.output
    evaluation = json.loads((tmp_path / "ev" / "results.json").read_text())["test"]
    where = evaluation["localisation"]
    assert where["images"] == 24 and where["images_with_lesion"] == 8  # annotations present
    pair = evaluation["bilateral"]  # mdb001+mdb002 ... are one woman's two breasts
    assert pair["images"] == 24 and pair["positives"] == 8 and pair["without_partner"] == 0
    assert "12 women" in pair["interval"]
    assert "other breast" in (tmp_path / "ev" / "report.md").read_text()

    folder = tmp_path / "plain"
    for k, label in enumerate(("benign", "malignant", "other")):
        for i in range(12):
            save(folder / label / f"{i}.png", blob_image(100 * k + i, (32, 32)))
    three = train("folder", folder, tmp_path / "three")
    assert three.exit_code == 2 and "without lesions" in three.output
    shutil.rmtree(folder / "other")
    plain = train("folder", folder, tmp_path / "plain_run")
    assert plain.exit_code == 2 and "no lesion annotations" in plain.output


def test_a_killed_run_resumes_from_its_last_epoch(two_class_tree, tmp_path):
    """SIGKILL in the middle of training (no clean shutdown), then --resume: the run goes on
    from the last finished epoch and its history has every epoch once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    env = {**os.environ, "BREASTCAD_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "breastcad", *_train_args(two_class_tree, out, 200, size=48)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if last.is_file():
                try:
                    if torch.load(last, weights_only=False)["epoch"] >= 1:
                        break
                except Exception:  # being replaced right now
                    pass
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    assert not (out / "results.json").exists()
    done = torch.load(last, weights_only=False)["epoch"] + 1  # epochs finished before the kill
    other = _train(two_class_tree, out, done + 1, "--resume")  # --size 24, not 48
    assert other.exit_code == 2 and "model_params.size: 48 -> 24" in other.output, other.output
    resumed = _train(two_class_tree, out, done + 1, "--resume", size=48)
    assert resumed.exit_code == 0, resumed.output
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["resumed_from"].endswith("last.ckpt")
    assert [row["epoch"] for row in results["training"]["history"]] == list(range(1, done + 2))


def test_ctrl_c_stops_training_with_what_was_kept_and_how_to_go_on(two_class_tree, tmp_path):
    """SIGINT (Ctrl-C) once an epoch is done: Lightning stops gracefully and exited 1 with no
    word; now exit 130 and a line naming the checkpoint and --resume, no traceback."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    env = {**os.environ, "BREASTCAD_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "breastcad", *_train_args(two_class_tree, out, 200, size=48)]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    try:
        while process.poll() is None and time.monotonic() < deadline and not last.is_file():
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
    finally:
        process.wait(timeout=120)
    said = process.stderr.read().decode()
    assert process.returncode == 130, said[-2000:]
    assert "interrupted: training stopped by the user after" in said
    assert f"its last checkpoint, {last}, is kept: the same command with --resume" in said
    assert "Traceback" not in said and last.is_file()


def test_a_cross_fitted_ensemble_calibrates_on_out_of_fold_predictions(two_class_tree, tmp_path):
    """`--members 3 --cross-fit`: training and validation images pooled into 3 folds that
    keep each duplicate cluster whole; member k stops early on fold k and learns from the
    others; temperature and operating point are fitted on all development images, each scored
    by the member that never learnt from it, and the report says so."""
    root = two_class_tree  # this test's own copy
    for name in ("benign/b01", "benign/b02", "malignant/m03", "malignant/m04"):
        shutil.copy(root / f"{name}.png", root / f"{name}_copy.png")  # a duplicate cluster each
    out = tmp_path / "cross"
    result = _train(root, out, 1, "--members", "3", "--cross-fit")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    rows = pd.DataFrame(json.loads((out / "splits" / "split.json").read_text())["rows"])
    folds = pd.read_csv(out / "splits" / "folds.csv")
    dev = rows[rows["partition"].isin(["train", "val"])]
    assert sorted(folds["path"]) == sorted(dev["path"])  # every development image, once
    assert set(folds["fold"]) == {1, 2, 3}
    merged = dev.merge(folds, on="path")
    assert (merged.groupby("split_group")["fold"].nunique() == 1).all()
    assert merged.groupby("split_group").size().max() >= 2  # the copies did form clusters

    counts = results["data"]["counts"]
    assert set(counts) == {"train", "test"}  # validation is pooled into the folds
    developed = sum(counts["train"].values())
    members = results["training"]["members"]
    for k, m in enumerate(members, start=1):
        fold = m["fold"]
        assert fold["validation_fold"] == k
        seen = {part: sum(c.values()) for part, c in fold["counts"].items()}
        assert seen["train"] + seen["val"] == developed  # its fold held out, the rest learnt
        assert seen["val"] == (folds["fold"] == k).sum()
    support = results["operating_point"]["validation"]
    assert support["positives"] + support["negatives"] == developed
    scored = pd.read_csv(out / "out_of_fold_predictions.csv")  # what the fit saw, per image
    assert sorted(scored["path"]) == sorted(folds["path"])
    flagged = (scored["label"] == "malignant") & (scored["prediction"] == "malignant")
    assert flagged.sum() == support["detected"]
    assert support["positives"] == counts["train"]["malignant"]
    assert "out-of-fold predictions of the" in results["operating_point"]["chosen_on"]
    assert "cross-fitted" in results["training"]["ensemble"]
    report = (out / "report.md").read_text()
    assert "temperature" in report and f"out-of-fold predictions of the {developed}" in report
    assert "ensemble of 3 x {'name': 'idc_cnn'" in report  # one member's record, not three
    measured = pd.read_csv(out / "predictions.csv")
    again = Predictor.from_bundle(out / "bundle").predict_paths(
        measured["path"].tolist(), progress=False
    )
    assert np.allclose(again["p_malignant"], measured["p_malignant"], atol=1e-5)
    # evaluating the bundle elsewhere says what its calibration was fitted on
    evaluated = runner.invoke(
        app,
        [
            *("evaluate", "--model", str(out / "bundle"), "--dataset", "folder"),
            *("--root", str(root), "--out", str(tmp_path / "eval"), "--quiet"),
        ],
        env={"BREASTCAD_CACHE": str(tmp_path / "cache")},
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert (
        f"fitted on out-of-fold predictions of the {developed} development images (3 folds) of "
        "the bundle's training run" in (tmp_path / "eval" / "report.md").read_text()
    )

    # stopped during member 3: --resume keeps members 1-2 on the very same folds (a member
    # kept on other folds would score images it learnt from as out-of-fold)
    shutil.rmtree(out / "members" / "3")
    resumed = _train(root, out, 1, "--members", "3", "--cross-fit", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert pd.read_csv(out / "splits" / "folds.csv").equals(folds)
    again = json.loads((out / "results.json").read_text())["training"]["members"]
    kept = [m.get("resumed", "").startswith("finished before") for m in again]
    assert kept == [True, True, False]
    assert [m["fold"] for m in again] == [m["fold"] for m in members]

    refused = _train(root, tmp_path / "one", 1, "--cross-fit")
    assert refused.exit_code == 2 and "members >= 2" in refused.output, refused.output


def test_too_little_data_for_the_split_or_the_folds_is_a_clear_error(tmp_path):
    """Six images a class: too few for a 10% validation part stratified by class, and, with
    larger parts, 8 development images are too few for 12 cross-fitting folds."""
    root = tmp_path / "few"
    for i in range(6):
        img = blob_image(i, (40, 44), rgb=True)
        save(root / "benign" / f"b{i}.png", img // 3)
        save(root / "malignant" / f"m{i}.png", 255 - img // 3)
    small = _train(root, tmp_path / "run", 1)
    assert small.exit_code == 2, small.output
    assert re.search(
        r"few: every class has fewer than 8 images \(at most \d\), too few for a 12%", small.output
    )
    sizes = ("--test-size", "0.3", "--val-size", "0.3")
    folds = _train(root, tmp_path / "run", 1, *sizes, "--members", "12", "--cross-fit")
    assert folds.exit_code == 2, folds.output
    assert str(root) in folds.output and "too few for 12 cross-fitting folds" in folds.output


def test_an_ensemble_trains_on_a_saved_split_and_resumes_member_by_member(two_class_tree, tmp_path):
    """`--members 2 --split-file`: two networks of one recipe on an earlier run's split
    (exactly), seeds 5 and 6, averaged into one bundle that reproduces the run's test
    probabilities; each member's own test figures are in the report. `--resume` keeps a
    finished member and trains only the unfinished one."""
    single = tmp_path / "single"
    assert _train(two_class_tree, single, 1).exit_code == 0
    split_file = single / "splits" / "split.json"
    out = tmp_path / "ens"
    args = ("--members", "2", "--split-file", str(split_file), "--seed", "5")
    result = _train(two_class_tree, out, 1, *args)
    assert result.exit_code == 0, result.output

    def partitions(run):
        rows = json.loads((run / "splits" / "split.json").read_text())["rows"]
        return dict(zip(rows["path"], rows["partition"], strict=True))

    assert partitions(out) == partitions(single)
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["split"]["split_file"] == str(split_file)
    assert results["data"]["split"]["saved_settings"]["seed"] == 0  # the split of the first run
    members = results["training"]["members"]
    assert [(m["member"], m["seed"]) for m in members] == [(1, 5), (2, 6)]
    for m in members:
        assert 0.0 <= m["test_alone"]["accuracy"] <= 1.0 and "history" not in m
    assert results["model"]["arch"]["name"] == "ensemble"
    assert "2 members, seeds 5-6" in results["training"]["ensemble"]
    assert sorted({row["member"] for row in results["training"]["history"]}) == [1, 2]
    assert "member" in pd.read_csv(out / "history.csv").columns
    report = (out / "report.md").read_text()
    assert "Ensemble members alone" in report and "saved split" in report
    measured = pd.read_csv(out / "predictions.csv")
    predictor = Predictor.from_bundle(out / "bundle")
    again = predictor.predict_paths(measured["path"].tolist(), progress=False)
    assert np.allclose(again["p_malignant"], measured["p_malignant"], atol=1e-5)
    # the bundle's members are the members the run trained
    first = torch.load(out / "members" / "1" / "member.pt", weights_only=True)
    member_1 = predictor.network.members[0].state_dict()
    assert all(torch.equal(first[k], member_1[k]) for k in first)

    # a run stopped after member 1 finished: --resume keeps member 1, trains member 2
    shutil.rmtree(out / "members" / "2")
    resumed = _train(two_class_tree, out, 1, *args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    records = json.loads((out / "results.json").read_text())["training"]["members"]
    assert records[0]["resumed"].startswith("finished before") and "resumed" not in records[1]
    kept = Predictor.from_bundle(out / "bundle").network.members[0].state_dict()
    assert all(torch.equal(first[k], kept[k]) for k in first)

    # a split saved from other data is refused, naming the file
    other = tmp_path / "other"
    shutil.copytree(two_class_tree, other)
    (other / "benign" / "b00.png").unlink()
    refused = _train(other, tmp_path / "refused", 1, "--split-file", str(split_file))
    assert refused.exit_code == 2 and "made from other data" in refused.output


def test_a_bundle_is_evaluated_on_data_that_names_its_classes_otherwise(tmp_path):
    """`evaluate --class-map`: the model's 'benign' / 'idc' read as a site's 'normal' /
    'malignant' folders (sorted the other way round): each image's P(malignant) is the
    model's P(idc), the report says how the classes were read, and a map that names no class
    of the model, or gives two one name, is refused."""
    from tests.conftest import make_image_bundle

    bundle = make_image_bundle(tmp_path / "idc")
    site = tmp_path / "site"
    for i in range(8):
        label = "malignant" if i % 2 else "normal"
        save(site / label / f"p{i}.png", blob_image(i, (50, 50), rgb=True))
    out = tmp_path / "eval"
    base = ["evaluate", "--model", str(bundle), "--dataset", "folder", "--root", str(site)]
    refused = runner.invoke(app, [*base, "--out", str(out), "--quiet"])
    assert refused.exit_code == 2 and "--class-map" in refused.output
    mapped = ["--class-map", "idc=malignant", "--class-map", "benign=normal"]
    result = runner.invoke(
        app,
        [*base, *mapped, "--out", str(out), "--device", "auto", "--quiet"],
        env={"BREASTCAD_CACHE": str(tmp_path / "cache")},
    )
    assert result.exit_code == 0, result.output
    assert "positive class: malignant" in result.output
    table = pd.read_csv(out / "predictions.csv")
    alone = Predictor.from_bundle(bundle, device="auto")  # where the evaluation ran
    alone = alone.predict_paths(table["path"].tolist(), progress=False)
    assert np.allclose(table["p_malignant"], alone["p_idc"], atol=1e-5)
    assert (table["label"] == table["path"].map(lambda p: Path(p).parent.name)).all()
    assert "idc as malignant" in (out / "report.md").read_text()
    ran_on = json.loads((out / "results.json").read_text())["model"]["inference_device"]
    assert ran_on.startswith("cuda:0 (") if torch.cuda.is_available() else ran_on == "cpu"
    assert f"run on {ran_on}" in (out / "report.md").read_text()
    refusals = (("tumour=malignant", "not a class of the model"), ("idc=benign", "one name"))
    for bad, problem in refusals:
        wrong = runner.invoke(app, [*base, "--class-map", bad, "--out", str(out), "--quiet"])
        assert wrong.exit_code == 2 and problem in wrong.output


def test_a_class_map_joins_model_classes_the_data_does_not_tell_apart(tmp_path):
    """`--class-map normal+benign=normal_or_benign`: a three-class model (BUSI's) on two-class
    data (BreastMNIST's malignant vs normal_or_benign) reads its P(normal) + P(benign) as
    P(normal_or_benign); P(malignant), the operating point and the decisions are the model's
    own; the figures are those of the two-class question. Joining the positive class, naming
    a model class twice or a class the model lacks is refused with exit code 2."""
    from breastcad.evaluation.classification import decide
    from tests.conftest import make_image_bundle

    bundle = make_image_bundle(  # BUSI's classes and positive class, as a run records them
        tmp_path / "busi", classes=("benign", "malignant", "normal"), size=32, channels=1,
        positive=1,
    )  # fmt: skip
    site = tmp_path / "site"
    for i in range(12):
        label = "malignant" if i % 3 == 0 else "normal_or_benign"
        save(site / label / f"p{i:02d}.png", blob_image(i, (40, 48)))
    out = tmp_path / "eval"
    base = ["evaluate", "--model", str(bundle), "--dataset", "folder", "--root", str(site)]
    unmapped = runner.invoke(app, [*base, "--out", str(out), "--quiet"])
    assert unmapped.exit_code == 2 and "--class-map A+B=DATA" in unmapped.output
    joined = ["--class-map", "normal+benign=normal_or_benign"]
    result = runner.invoke(app, [*base, *joined, "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "predictions.csv")
    predictor = Predictor.from_bundle(bundle)
    alone = predictor.predict_paths(table["path"].tolist(), progress=False)
    assert np.allclose(table["p_malignant"], alone["p_malignant"], atol=1e-6)
    both = alone["p_normal"] + alone["p_benign"]
    assert np.allclose(table["p_normal_or_benign"], both, atol=1e-6)
    threeway = alone[["p_benign", "p_malignant", "p_normal"]].to_numpy()
    expected = decide(threeway, predictor.positive, predictor.threshold)
    said = table["prediction"] == "malignant"
    assert (said.to_numpy() == (expected == predictor.positive)).all()
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["classes"] == ["normal_or_benign", "malignant"]
    assert results["data"]["positive"] == "malignant"
    ci = results["test"]["ci"]
    truth = (table["label"] == "malignant").astype(int)
    from breastcad.evaluation.metrics import roc_auc

    assert ci["auc_positive"]["value"] == pytest.approx(roc_auc(truth, table["p_malignant"]))
    assert "normal+benign as normal_or_benign" in (out / "report.md").read_text()
    for bad, problem in (
        ("benign+malignant=normal_or_benign", "the positive class"),
        ("normal+benign+tumour=normal_or_benign", "not a class of the model"),
    ):
        wrong = runner.invoke(app, [*base, "--class-map", bad, "--out", str(out)])
        assert wrong.exit_code == 2 and problem in wrong.output, wrong.output
    twice = ["--class-map", "normal+benign=normal_or_benign", "--class-map", "benign=x"]
    wrong = runner.invoke(app, [*base, *twice, "--out", str(out)])
    assert wrong.exit_code == 2 and "names a model class twice" in wrong.output


def test_a_class_map_joins_data_classes_the_model_does_not_tell_apart(tmp_path):
    """`--class-map benign=normal+benign`: a two-class model on three-class data (BUSI's
    normal, benign, malignant) reads normal and benign images as its 'benign'; each image
    keeps the model's own probability, and the labels are joined, not dropped; a join that
    names a class the data lacks, or reads one class twice, is refused."""
    from tests.conftest import make_image_bundle

    bundle = make_image_bundle(tmp_path / "idc")
    site = tmp_path / "site"
    for i in range(9):
        label = ("normal", "benign", "malignant")[i % 3]
        save(site / label / f"p{i}.png", blob_image(i, (50, 50), rgb=True))
    out = tmp_path / "eval"
    base = ["evaluate", "--model", str(bundle), "--dataset", "folder", "--root", str(site)]
    mapped = ["--class-map", "idc=malignant", "--class-map", "benign=normal+benign"]
    result = runner.invoke(app, [*base, *mapped, "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == 9 and sorted(set(table["label"])) == ["malignant", "normal+benign"]
    joined = table["path"].map(lambda p: Path(p).parent.name != "malignant")
    assert ((table["label"] == "normal+benign") == joined).all()
    alone = Predictor.from_bundle(bundle).predict_paths(table["path"].tolist(), progress=False)
    assert np.allclose(table["p_malignant"], alone["p_idc"], atol=1e-5)
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["classes"] == ["normal+benign", "malignant"]
    assert results["data"]["counts"]["evaluated"] == {"normal+benign": 6, "malignant": 3}
    assert "benign as normal+benign" in (out / "report.md").read_text()
    for bad, problem in (
        ("benign=normal+benin", "no class benin"),
        ("benign=normal+malignant", "malignant read as two of the model's classes"),
    ):
        wrong = runner.invoke(
            app, [*base, "--class-map", "idc=malignant", "--class-map", bad, "--out", str(out)]
        )
        assert wrong.exit_code == 2 and problem in wrong.output, wrong.output
