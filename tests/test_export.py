"""ONNX export: parity with PyTorch, the bundle stays verified, and the ONNX runtime serves."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from breastcad.bundle import load_bundle
from breastcad.cli import app
from breastcad.errors import BundleError, ConfigError
from breastcad.export import export_onnx
from breastcad.predict import Predictor
from tests.conftest import make_image_bundle, make_wdbc_bundle, shared_dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = make_image_bundle(tmp_path_factory.mktemp("onnx") / "idc")
    model_id = load_bundle(folder).model_id
    return folder, export_onnx(folder), model_id


def test_export_records_parity_and_keeps_the_model_id(exported):
    folder, record, model_id = exported
    assert record["parity_max_abs_diff"] <= 1e-4
    assert record["parity_checked_on"] == "16 seeded random images"
    bundle = load_bundle(folder)  # every checksum, the new file's included, verifies
    assert bundle.model_id == model_id
    assert bundle.manifest["exports"]["model.onnx"]["opset"] == record["opset"]


def test_onnx_runtime_matches_torch_for_any_batch_size(exported):
    folder, _, _ = exported
    torch_p, onnx_p = Predictor.from_bundle(folder), Predictor.from_bundle(folder, "onnx")
    assert Predictor.from_bundle(folder, "auto").runtime == "onnx"
    for n in (1, 7):
        pixels = np.random.default_rng(n).integers(0, 256, (n, 50, 50, 3), dtype=np.uint8)
        np.testing.assert_allclose(
            onnx_p.predict_pixels(pixels), torch_p.predict_pixels(pixels), atol=1e-5
        )


def test_a_modified_onnx_file_is_refused(exported, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(exported[0], folder)
    with open(folder / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=r"model\.onnx: checksum mismatch"):
        Predictor.from_bundle(folder, "onnx")


def test_clear_errors_without_export_and_for_tabular(tmp_path):
    image = make_image_bundle(tmp_path / "img")
    with pytest.raises(BundleError, match="breastcad export"):
        Predictor.from_bundle(image, "onnx")
    assert Predictor.from_bundle(image, "auto").runtime == "torch"
    tabular = make_wdbc_bundle(tmp_path / "tab")
    result = CliRunner().invoke(app, ["export", "--model", str(tabular)])
    assert result.exit_code == 2 and "image bundles" in result.output
    with pytest.raises(ConfigError, match="unknown runtime"):
        Predictor.from_bundle(image, "tensorrt")


@pytest.mark.slow
@pytest.mark.integration
def test_parity_on_real_images_with_real_imagenet_weights(tmp_path):
    """EfficientNet-Lite0 with its ImageNet weights at 224 px on real BUSI ultrasound images."""
    images = shared_dir("busi")
    files = sorted(p for p in images.rglob("*.png") if "_mask" not in p.name)[:12]
    folder = make_image_bundle(
        tmp_path / "busi",
        model="transfer",
        classes=("normal", "benign", "malignant"),
        size=224,
        channels=1,
    )
    args = ["export", "--model", str(folder)] + [f"--check={f}" for f in files]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((folder / "bundle.json").read_text())["exports"]["model.onnx"]
    assert record["parity_max_abs_diff"] <= 1e-4
    assert record["parity_checked_on"].startswith("12 images")
    assert "ImageNet" in load_bundle(folder).manifest["model"]["init"]


def test_a_flip_tta_bundle_averages_views_on_both_runtimes(tmp_path):
    """The ONNX graph is one view; the Predictor averages the bundle's views around it, so
    both runtimes give the same averaged answer, and a mirror image gets the same answer."""
    folder = make_image_bundle(tmp_path / "idc", test_time_augmentation="flip")
    record = export_onnx(folder)
    assert record["parity_max_abs_diff"] <= 1e-4  # measured on the single view
    assert "(flip)" in record["views"]
    torch_p, onnx_p = Predictor.from_bundle(folder), Predictor.from_bundle(folder, "onnx")
    assert torch_p.tta == onnx_p.tta == "flip"
    pixels = np.random.default_rng(3).integers(0, 256, (5, 50, 50, 3), dtype=np.uint8)
    averaged = torch_p.predict_pixels(pixels)
    np.testing.assert_allclose(onnx_p.predict_pixels(pixels), averaged, atol=1e-5)
    np.testing.assert_allclose(torch_p.predict_pixels(pixels[:, :, ::-1]), averaged, atol=1e-5)
    one_view = torch_p.predict_logits(pixels, views=False)
    assert not np.allclose(one_view, torch_p.predict_logits(pixels), atol=1e-3)


def test_an_unknown_tta_in_a_bundle_is_a_clear_error(tmp_path):
    folder = make_image_bundle(tmp_path / "idc", test_time_augmentation="rotate")
    with pytest.raises(BundleError, match="unknown test-time augmentation 'rotate'"):
        Predictor.from_bundle(folder)
