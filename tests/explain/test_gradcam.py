"""Grad-CAM for every image network in the registry, checked against the closed form."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from breastcad.cli import app
from breastcad.explain.gradcam import grad_cam, overlay
from breastcad.models import create_model, get_spec, list_models
from tests.conftest import make_image_bundle

IMAGE_MODELS = [n for n in list_models() if get_spec(n).family in ("cnn", "pretrained")]


def build(name: str):
    params = {"size": 64}
    if get_spec(name).family == "pretrained":
        params["weights"] = "random"
    return create_model(name, **params)


def test_every_image_network_is_covered():
    assert {"idc_cnn", "mammo_cnn", "transfer", "finetune", "full_finetune", "lesion_map"} <= set(
        IMAGE_MODELS
    )


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_maps_for_every_network(name):
    torch.manual_seed(0)
    net = build(name).train()
    channels = net.in_chans if name != "transfer" else 1  # gray broadcast to 3 channels too
    pixels = np.random.default_rng(0).integers(0, 256, (3, 64, 64, channels), dtype=np.uint8)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a random net may give a NaN map
        cam = grad_cam(net, pixels)
    assert cam.shape == (3, 64, 64) and cam.dtype == np.float32
    finite = cam[np.isfinite(cam)]
    assert finite.size and finite.min() >= 0 and finite.max() == pytest.approx(1.0)
    assert net.training  # mode restored
    assert not any(p.grad is not None for p in net.parameters())  # weights untouched


def test_gradcam_equals_cam_for_pooling_plus_linear_heads():
    """With global average pooling and a linear layer (the `transfer` head), Grad-CAM's
    weights are the class's linear weights / (H*W): the map is Zhou et al.'s CAM."""
    torch.manual_seed(1)
    net = build("transfer").eval()
    pixels = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    target = 1
    cam = grad_cam(net, pixels, target=target)
    with torch.no_grad():
        features = net.forward_features(torch.from_numpy(pixels))
        weights = net.head[-1].weight[target]
        expected = F.relu(torch.einsum("c,nchw->nhw", weights, features))[:, None]
        expected = F.interpolate(expected, size=(64, 64), mode="bilinear", align_corners=False)
    expected = expected[:, 0].numpy()
    expected /= expected.reshape(2, -1).max(axis=1)[:, None, None]
    np.testing.assert_allclose(cam, expected, atol=1e-5)


def test_degenerate_map_warns_and_is_nan_and_overlay_leaves_the_image():
    net = build("idc_cnn").eval()
    for p in net.head[-1].parameters():
        torch.nn.init.zeros_(p)  # every class score is constant: no evidence anywhere
    pixels = np.full((1, 64, 64, 3), 120, dtype=np.uint8)
    with pytest.warns(UserWarning, match="zero everywhere"):
        cam = grad_cam(net, pixels, target=0)
    assert np.isnan(cam).all()
    np.testing.assert_array_equal(overlay(pixels[0], cam[0]), pixels[0])
    hot = overlay(pixels[0], np.ones((64, 64), dtype=np.float32))
    assert hot.shape == (64, 64, 3) and not np.array_equal(hot, pixels[0])


def test_explain_cli_writes_overlays_and_reports_bad_files(tmp_path):
    bundle = make_image_bundle(tmp_path / "bundle")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)).save(
            images / f"p{i}.png"
        )
    # a wide one and a large one: overlays keep each image's geometry (large: 1024 px side)
    Image.fromarray(rng.integers(0, 256, (30, 80, 3), dtype=np.uint8)).save(images / "wide.png")
    Image.fromarray(rng.integers(0, 256, (2048, 1536), dtype=np.uint8)).save(images / "big.png")
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["explain", "--model", str(bundle), "--out", str(out), "--quiet", str(images)]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "big_gradcam.png",
        "p0_gradcam.png",
        "p1_gradcam.png",
        "wide_gradcam.png",
    ]
    assert Image.open(out / "p0_gradcam.png").size == (50, 50)
    assert Image.open(out / "wide_gradcam.png").size == (80, 30)  # (width, height)
    assert Image.open(out / "big_gradcam.png").size == (768, 1024)
    assert "skipped" in result.output and "broken.png" in result.output
    slide = CliRunner().invoke(app, ["explain", "--model", str(bundle), "slide"])
    assert slide.exit_code == 2 and "--root" in slide.output


def test_explain_keeps_one_overlay_per_image_when_file_names_repeat(tmp_path):
    # CBIS-DDSM names every file 1-1.dcm: one overlay each, none written over another
    bundle = make_image_bundle(tmp_path / "bundle")
    rng = np.random.default_rng(3)
    images = tmp_path / "images"
    # (a notebook's hidden checkpoint copy is not an image to explain)
    for name in ("P_001/1-1.png", "P_002/1-1.png", "P_002/1-1.tif", ".ipynb_checkpoints/1-1.png"):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)).save(images / name)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["explain", "--model", str(bundle), "--out", str(out), "--quiet", str(images)]
    )
    assert result.exit_code == 0, result.output
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == [
        "P_001/1-1_gradcam.png",
        "P_002/1-1.png_gradcam.png",
        "P_002/1-1.tif_gradcam.png",
    ]
    for name in written:
        assert f"-> {out / name}" in result.output
    pictures = [np.asarray(Image.open(out / name)) for name in written]
    assert not np.array_equal(pictures[0], pictures[1])  # each its own image's overlay


def test_gradcam_of_lesion_map_is_its_cell_score_map():
    """The image logit of `lesion_map` is its highest cell, so the gradient reaches one cell
    and Grad-CAM's channel weights are the 1x1 convolution's: the map is the cell scores
    (without the bias), rectified, upsampled and scaled to 1."""
    torch.manual_seed(0)
    net = create_model("lesion_map", size=128).eval()
    pixels = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    cam = grad_cam(net, pixels, target=1)
    with torch.no_grad():
        cells = net.head.score_map(net.forward_features(torch.from_numpy(pixels)))
        cells = F.relu(cells - net.head.score.bias)[:, None]
        expected = F.interpolate(cells, size=(128, 128), mode="bilinear", align_corners=False)
        expected = expected[:, 0] / expected.flatten(1).amax(dim=1)[:, None, None]
    assert np.allclose(cam, expected.numpy(), atol=1e-5)


def test_a_flip_bundle_explains_the_average_of_both_views(tmp_path):
    """With test-time flips the answer explained is the average of the image and its mirror
    image, which the mirror image shares, so its map is the mirror of the image's map (the
    single view's is not); `explain` and the service get it through the Predictor."""
    from breastcad.predict import Predictor

    predictor = Predictor.from_bundle(
        make_image_bundle(tmp_path / "flip", test_time_augmentation="flip")
    )
    pixels = np.random.default_rng(5).integers(0, 256, (3, 50, 50, 3), dtype=np.uint8)
    mirrored = np.ascontiguousarray(pixels[:, :, ::-1])
    shown = [p.cam for p in predictor.predict_batch(pixels, [True] * 3)]
    shown_mirrored = [p.cam for p in predictor.predict_batch(mirrored, [True] * 3)]
    assert all(np.isfinite(cam).all() for cam in shown)
    for cam, cam_of_mirror in zip(shown, shown_mirrored, strict=True):
        np.testing.assert_allclose(cam_of_mirror, cam[:, ::-1], atol=1e-5)
    decided = [predictor.classes.index(p.prediction) for p in predictor.predict_batch(pixels)]
    one_view = grad_cam(predictor.network, pixels, decided)
    one_view_of_mirror = grad_cam(predictor.network, mirrored, decided)
    assert not np.allclose(one_view_of_mirror, one_view[:, :, ::-1], atol=1e-3)
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rotate'"):
        grad_cam(predictor.network, pixels, decided, "rotate")


def test_an_affine_bundle_explains_each_view_moved_back_onto_the_image(tmp_path):
    """With affine test-time views the map explained is the mean of the ten views' maps, each
    scaled and moved back onto the image (`unview`), for the class the average decides."""
    from breastcad.models.tta import unview, views
    from breastcad.predict import Predictor

    predictor = Predictor.from_bundle(
        make_image_bundle(tmp_path / "affine", test_time_augmentation="affine")
    )
    pixels = np.random.default_rng(6).integers(0, 256, (2, 50, 50, 3), dtype=np.uint8)
    shown = np.stack([p.cam for p in predictor.predict_batch(pixels, [True] * 2)])
    decided = [predictor.classes.index(p.prediction) for p in predictor.predict_batch(pixels)]
    each = [
        torch.from_numpy(np.nan_to_num(grad_cam(predictor.network, v, decided)))
        for v in views(torch.from_numpy(pixels), "affine")
    ]
    back = torch.stack(unview(each, "affine")).numpy()
    expected = back.mean(axis=0) / back.mean(axis=0).reshape(2, -1).max(axis=1)[:, None, None]
    assert shown.shape == (2, 50, 50) and np.isfinite(shown).all()
    np.testing.assert_allclose(shown, expected, atol=1e-5)
    assert not np.allclose(shown, grad_cam(predictor.network, pixels, decided), atol=1e-2)
