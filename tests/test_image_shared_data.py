"""Image runs on the real data in ../shared/data (skipped, with why, when absent)."""

import json

import pytest

from breastcad.config import ImageRunConfig
from breastcad.evaluation.image_evaluation import evaluate_image_bundle
from breastcad.image_experiment import run_image_experiment
from breastcad.predict import Predictor
from tests.conftest import shared_dir

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
]


def test_mammogram_model_trains_on_mini_mias_by_woman_and_reads_a_real_dicom(tmp_path):
    dicom_dir = shared_dir("cbis-ddsm")
    cfg = ImageRunConfig.model_validate(
        {
            "data": {
                "dataset": "mini-mias",
                "root": shared_dir("mini-mias"),
                "test_size": 0.25,
                "val_size": 0.15,
                "duplicate_distance": None,
            },
            "model": "mammo_cnn",
            "model_params": {"size": 64},
            "train": {"epochs": 1, "progress": False, "cache_dir": tmp_path / "cache"},
            "bootstrap": 100,
        }
    )
    results = run_image_experiment(cfg, tmp_path / "run")
    split = json.loads((tmp_path / "run" / "splits" / "split.json").read_text())
    by_woman: dict[str, set] = {}
    for group, part in zip(split["rows"]["group_id"], split["rows"]["partition"], strict=True):
        by_woman.setdefault(group, set()).add(part)
    assert max(len(parts) for parts in by_woman.values()) == 1  # no woman in two partitions
    assert results["data"]["preprocessing"]["channels"] == 1  # gray modality, 1-channel cache
    assert results["test"]["n"] > 40 and results["test"]["ci"]["n_groups"]["value"] > 20
    pair = results["test"]["bilateral"]  # a woman's breasts stay together in the test part
    assert pair["images"] == results["test"]["n"] and pair["without_partner"] == 0

    predictor = Predictor.from_bundle(tmp_path / "run" / "bundle")
    table = predictor.predict_paths([dicom_dir], progress=False)
    dicom = table[table["path"].str.endswith(".dcm")]
    assert len(dicom) == 1 and dicom["error"].iloc[0] == ""
    assert abs(dicom["p_normal"].iloc[0] + dicom["p_abnormal"].iloc[0] - 1) < 1e-6


def test_idc_patch_model_end_to_end_with_patient_level_results(tmp_path):
    cfg = ImageRunConfig.model_validate(
        {
            "data": {
                "dataset": "idc",
                "root": shared_dir("idc"),
                "test_size": 0.3,
                "val_size": 0.2,
                "duplicate_distance": None,
            },
            "model": "idc_cnn",
            "train": {"epochs": 1, "progress": False, "cache_dir": tmp_path / "cache"},
            "bootstrap": 100,
        }
    )
    results = run_image_experiment(cfg, tmp_path / "run")
    group = results["test"]["group_level"]
    assert group["n_groups"] >= 2 and len(group["per_group_accuracy"]) == group["n_groups"]
    again = evaluate_image_bundle(
        tmp_path / "run" / "bundle",
        "idc",
        shared_dir("idc"),
        tmp_path / "eval",
        split_file=tmp_path / "run" / "splits" / "split.json",
        n_boot=50,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert again["test"]["n"] == results["test"]["n"]  # the same test patients, same model
    assert (
        abs(again["test"]["ci"]["macro_auc"]["value"] - results["test"]["ci"]["macro_auc"]["value"])
        < 1e-6
    )
    # the IDC model on BreakHis (another dataset, slide-level groups), its 'idc' read as
    # BreakHis' 'malignant': a check of the pipeline on real files, not a figure (two images)
    breakhis = evaluate_image_bundle(
        tmp_path / "run" / "bundle",
        "breakhis",
        shared_dir("breakhis"),
        tmp_path / "breakhis",
        n_boot=50,
        cache_dir=tmp_path / "cache",
        progress=False,
        class_map={"idc": "malignant"},
    )
    assert breakhis["data"]["classes"] == ["benign", "malignant"]
    assert breakhis["data"]["class_map"] == {"idc": "malignant"}
    assert breakhis["test"]["n"] == 2 and breakhis["test"]["group_level"]["n_groups"] == 2


def test_real_mini_mias_mammograms_are_paired_by_their_names(tmp_path):
    """`predict --pair` on the real mini-MIAS folder: every image with its woman's other
    breast (consecutive references), each scored against the other with the bundle's fit."""
    import numpy as np

    from tests.conftest import make_image_bundle

    root = shared_dir("mini-mias")
    fit = {"slope": 1.3, "intercept": -0.4, "threshold": 0.5, "chosen_on": "the validation part"}
    bundle = make_image_bundle(
        tmp_path / "mammo",
        model="mammo_cnn",
        classes=("normal", "abnormal"),
        size=64,
        channels=1,
        bilateral=fit,
    )
    table = Predictor.from_bundle(bundle).predict_paired([root], progress=False)
    images = sorted(root.glob("mdb*.*"))
    assert len(table) == len(images) and (table["unpaired"] == "").all()
    assert (table["error"] == "").all()
    number = table["path"].str.extract(r"mdb(\d{3})")[0].astype(int)
    partner = table["partner"].str.extract(r"mdb(\d{3})")[0].astype(int)
    assert ((number + 1) // 2 == (partner + 1) // 2).all() and (number != partner).all()
    by_path = table.set_index("path")["p_bilateral"]
    logit = np.log(by_path / (1 - by_path))
    both = logit.to_numpy() + logit.loc[table["partner"]].to_numpy()
    assert np.allclose(both, 2 * fit["intercept"], atol=1e-6)  # each against the other


def test_evaluate_finds_the_near_duplicates_a_random_busi_split_puts_in_its_test_part(tmp_path):
    """A probe on a random split of the real BUSI (each image its own group, as the published
    figures had it): evaluating its bundle flags exactly the test images that the audit pairs
    by pHash (within 4 bits) with a training or validation image, and on all of BUSI those
    plus every image it learnt from. Two code paths (the audit's pairs, the bundle's hashes)
    on real data. Frames the audit pairs by their thumbnails alone it cannot flag: a bundle
    keeps no thumbnails."""
    from breastcad.data.audit import audit
    from breastcad.data.sources import scan

    root = shared_dir("busi")
    cache = tmp_path / "cache"
    cfg = ImageRunConfig.model_validate(
        {
            "data": {"dataset": "busi", "root": root, "duplicate_distance": None},
            "model": "probe",
            "model_params": {"size": 64},
            "train": {"progress": False, "cache_dir": cache},
            "bootstrap": 50,
        }
    )
    run = run_image_experiment(cfg, tmp_path / "run")
    split = json.loads((tmp_path / "run" / "splits" / "split.json").read_text())["rows"]
    part = dict(zip(split["path"], split["partition"], strict=True))
    found = audit(scan("busi", root), max_distance=4, jobs=2, progress=False, cache_dir=cache)
    paths = found.records["path"].tolist()
    straddling, correlated = set(), set()  # the bundle keeps hashes, no thumbnails
    for i, j, by in found.pairs[["i", "j", "found_by"]].itertuples(index=False):
        a, b = paths[i], paths[j]
        for test, other in ((a, b), (b, a)):
            if part.get(test) == "test" and part.get(other) in ("train", "val"):
                (correlated if by == "correlation" else straddling).add(test)
    assert correlated - straddling  # frames only the audit's thumbnails pair
    evaluated = {}
    for name, split_file in (("test", tmp_path / "run" / "splits" / "split.json"), ("all", None)):
        evaluated[name] = evaluate_image_bundle(
            tmp_path / "run" / "bundle", "busi", root, tmp_path / name, split_file=split_file,
            n_boot=50, progress=False, cache_dir=cache,
        )["data"]["training_overlap"]  # fmt: skip
    test, everything = evaluated["test"], evaluated["all"]
    own = run["test_overlap"]  # the run itself says what its split did
    assert (own["same_pixels"], own["near_duplicates"]) == (
        test["same_pixels"],
        test["near_duplicates"],
    )
    assert test["images"] == list(part.values()).count("test")
    assert test["same_pixels"] + test["near_duplicates"] == len(straddling) > 20
    learnt = sum(p in ("train", "val") for p in part.values())
    assert everything["same_pixels"] >= learnt  # BUSI's exact copies count too
    assert everything["same_pixels"] + everything["near_duplicates"] == learnt + len(straddling)
