"""The linear probe: pooled stage features of a frozen backbone, a logistic regression chosen
by grouped cross-validation and folded into the network's linear head."""

import numpy as np
import pandas as pd
import pytest
import torch

from breastcad.data.datamodule import ImageDataModule
from breastcad.data.manifest import Manifest
from breastcad.errors import ConfigError
from breastcad.explain.gradcam import grad_cam
from breastcad.models import create_model
from breastcad.models.image import ImageNetwork
from breastcad.training.image_fit import ImageFitSettings, fit_image
from breastcad.training.probe_fit import C_GRID, choose_c, logistic_head


def test_probe_pools_every_stage_of_a_frozen_backbone():
    net = create_model("probe", num_classes=3, size=64, weights="random")
    stage_channels = sum(f["num_chs"] for f in net.body.model.feature_info)
    assert net.head.in_features == 1280 + stage_channels  # EfficientNet-Lite0: 1280 + 512
    assert net.recipe.closed_form and net.body_frozen
    assert not any(p.requires_grad for p in net.body.parameters())
    x = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    assert net.eval()(x).shape == (2, 3)
    assert net.cam_layer == "body.model.bn2"  # the last feature map, which Grad-CAM explains
    resnet = create_model("probe", backbone="resnet50", weights="random", size=64)
    assert resnet.cam_layer == "body.model.layer4" and resnet.eval()(x).shape == (2, 2)


def test_probe_branches_add_backbones_at_their_own_sizes_and_rebuild_from_the_bundle_arch():
    net = create_model("probe", size=32, weights="random", branches="tf_efficientnet_lite0@48")
    assert net.head.in_features == 2 * 1792 and net.arch["branches"] == ["tf_efficientnet_lite0@48"]
    seen = []
    stem = net.body.extra[0].conv_stem
    stem.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    x = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    logits = net.eval()(x)
    assert seen == [(48, 48)] and "branch tf_efficientnet_lite0 at (48, 48)" in net.init
    again = create_model(**net.arch)
    again.load_state_dict(net.state_dict())
    assert torch.allclose(again.eval()(x), logits)
    with pytest.raises(ConfigError, match="normalises its input differently"):
        create_model("probe", size=32, weights="random", branches=["resnet50@32"])
    with pytest.raises(ConfigError, match="backbone@size"):
        create_model("probe", size=32, weights="random", branches="tf_efficientnet_lite0@big")


def test_cell_probe_branches_stack_their_maps_on_each_cell_and_rebuild_from_the_bundle_arch():
    """A branch's last feature map joins each cell's features: at its own input size, resized
    to the first backbone's grid where it differs; the bundle's arch rebuilds the same net."""
    net = create_model(
        "cell_probe",
        size=64,
        weights="random",
        branches="tf_efficientnet_lite0@96, tf_efficientnet_lite2",
    )
    assert net.arch["branches"] == ["tf_efficientnet_lite0@96", "tf_efficientnet_lite2"]
    assert net.body.num_features == 2 * 1280 + 1280 and net.head.score.in_channels == 3840
    seen = []
    for branch in net.body.extra:
        branch.conv_stem.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-2]))
    x = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    net.eval()
    maps = net.forward_features(x)
    assert seen == [96, 64] and maps.shape == (2, 3840, 2, 2)  # 96 px gives 3 x 3, resized
    first = net.body.model.forward_features(net.input(x))
    assert torch.equal(maps[:, :1280], first)  # the first backbone's cells as they were
    again = create_model(**net.arch)
    again.load_state_dict(net.state_dict())
    assert torch.allclose(again.eval()(x), net(x))
    with pytest.raises(ConfigError, match="cell_probe branch 'x@big'"):
        create_model("cell_probe", size=64, weights="random", branches="x@big")


@pytest.mark.parametrize("num_classes", [2, 3])
def test_the_folded_head_gives_the_regressions_probabilities(num_classes):
    rng = np.random.default_rng(num_classes)
    x = rng.normal(3.0, 2.0, size=(90, 5))  # far from standardised: the folding must undo it
    y = np.arange(90) % num_classes
    x[:, 0] += y
    w, b, model = logistic_head(x, y, num_classes, 0.1, "balanced")
    logits = torch.as_tensor(x @ w.T + b)
    assert np.allclose(torch.softmax(logits, 1).numpy(), model.predict_proba(x), atol=1e-6)
    with pytest.raises(ConfigError, match="2 of 3 classes"):
        logistic_head(x, np.minimum(y, 1), 3, 0.1, "none")


def test_c_is_chosen_by_grouped_cross_validation_or_said_to_be_default():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    feats = rng.normal(size=(60, 2, 8)) + y[:, None, None] * np.r_[1.5, np.zeros(7)]
    groups = np.arange(60) // 2  # pairs of images share a group
    chosen = choose_c(feats, y, groups, 2, 1, "none", 0)
    assert chosen["C"] in C_GRID
    by_c = chosen["cross_validation"]["by_C"]
    assert set(by_c) == {str(c) for c in C_GRID} and max(by_c.values()) > 0.85
    assert by_c[str(chosen["C"])] == max(by_c.values())
    one_group = choose_c(feats, y, np.where(y == 1, 99, groups), 2, 1, "none", 0)
    assert one_group["C"] == 0.01 and "not run" in one_group["cross_validation"]


def test_cross_validation_scores_held_out_images_as_the_run_answers():
    # the mirrored view carries the signal, the view as given only noise: scored as given the
    # held-out AUC is near chance, scored as a flip run answers (both views averaged) it is not
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 40)
    feats = rng.normal(size=(80, 2, 4))
    feats[:, 1, 0] += 3 * y
    groups = np.arange(80)
    plain = choose_c(feats, y, groups, 2, 1, "none", 0)["cross_validation"]
    flip = choose_c(feats, y, groups, 2, 1, "none", 0, tta="flip")["cross_validation"]
    assert plain["held_out_scored"] == "as given" and "mirrored" in flip["held_out_scored"]
    assert max(plain["by_C"].values()) < 0.75 < 0.9 < min(flip["by_C"].values())


def _stripes(i: int, vertical: bool) -> np.ndarray:
    """A noisy 32x32 gray picture of stripes, vertical or horizontal."""
    rng = np.random.default_rng(i)
    period = 4 + i % 4
    stripes = (np.arange(32) // (period // 2)) % 2 * 140 + 50
    img = np.tile(stripes, (32, 1)) if vertical else np.tile(stripes[:, None], (1, 32))
    return np.clip(img + rng.normal(0, 25, (32, 32)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("tta", ["none", "affine"])
def test_fit_probe_learns_a_texture_from_imagenet_features(tmp_path, tta):
    """Vertical against horizontal stripes, which ImageNet's edge detectors tell apart (a
    mirror image keeps the orientation, and so, nearly, do the affine views' 10 degree
    turns): the fitted network separates held-out images; with affine test-time views it
    learns from all ten views of each training image and is cross-validated on them."""
    from breastcad.config import PreprocessConfig
    from tests.data.conftest import save

    rows = []
    for i in range(48):
        for label, vertical in (("benign", False), ("malignant", True)):
            path = tmp_path / label / f"{label}{i}.png"
            save(path, _stripes(i if vertical else 100 + i, vertical))
            group = f"{label}{i // 2}"
            rows.append({"path": str(path), "label": label, "group_id": group, "dataset": "t"})
    manifest = Manifest(pd.DataFrame(rows), tmp_path, ["benign", "malignant"])
    partition = np.array(["train"] * 64 + ["test"] * 32)[np.random.default_rng(0).permutation(96)]
    dm = ImageDataModule(
        manifest,
        partition,
        PreprocessConfig(size=32, channels=1),
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    net = create_model("probe", size=32)
    settings = ImageFitSettings(epochs=0, lr=0.0, accelerator="cpu", progress=False, tta=tta)
    history, info = fit_image(net, dm, settings, tmp_path / "run")
    assert history == [] and info["epochs_run"] == 0
    assert info["probe"]["training_images"] == 64 and info["probe"]["C"] in C_GRID
    scored = info["probe"]["cross_validation"]["held_out_scored"]
    if tta == "affine":
        assert info["probe"]["samples"] == "each training image in its 10 test-time views (affine)"
        assert scored == "its 10 test-time views (affine), averaged"
    else:
        assert "as given and mirrored" in info["probe"]["samples"] and scored == "as given"
    assert isinstance(net, ImageNetwork) and not net.training
    test = dm.datasets["test"]
    x, y = test[list(range(len(test)))][:2]
    with torch.inference_mode():
        p = torch.softmax(net(x), 1)[:, 1].numpy()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y.numpy(), p) > 0.9
    cam = grad_cam(net, x[:2].numpy())
    assert cam.shape == (2, 32, 32) and np.isfinite(cam).any()


def test_the_cell_probe_scales_its_highest_cell_into_an_image_logit():
    """Of many cells the highest scores high in every image, normal or not: the cell
    regression alone would call every image a lesion image. The per-class image scale, fitted
    on the training images, puts the two classes either side of P = 0.5 and keeps the order
    (the most lesion-like cell still decides)."""
    from breastcad.training.probe_fit import _image_scale

    rng = np.random.default_rng(0)
    n, cells, features = 60, 50, 4
    y = np.repeat([0, 1], n // 2)  # background 0 (normal), lesion class 1
    maps = rng.normal(0, 1, (n, cells, features))
    maps[y == 1, 0, 0] += 3.5  # one cell of each lesion image stands out
    w_cells, b_cells = np.array([[1.0, 0.0, 0.0, 0.0]]), np.array([3.0])
    top = (maps @ w_cells.T + b_cells).max(axis=1)[:, 0]
    assert (top > 3.5).all()  # unscaled: every image > 0.97 'lesion'
    scale = _image_scale(maps, y, w_cells, b_cells, [1], 0)
    logit = scale["a"][0] * top + scale["b"][0]
    assert scale["a"][0] > 0
    p = 1 / (1 + np.exp(-logit))
    assert p[y == 0].mean() < 0.5 < p[y == 1].mean()
    assert ((p > 0.5) == y).mean() > 0.75
    flat = _image_scale(maps, np.zeros(n, int), w_cells, b_cells, [1], 0)  # one class only
    assert flat["a"][0] == 1.0 and flat["b"][0] == 0.0


@pytest.mark.parametrize("mode", ["flip", "affine"])
def test_the_cell_probe_takes_moved_lesion_cells_where_the_moved_image_shows_the_lesion(mode):
    """`lesion_views`: each moved view's lesion cells are those of its moved annotation, and
    these are where the moved picture shows the lesion (the annotation moves as the image
    does, in the same direction); the features are the body's cells of that view."""
    from breastcad.data.lesions import LESION
    from breastcad.models.tta import views
    from breastcad.training.probe_fit import _moved_lesion_cells

    size = 64
    net = create_model("cell_probe", size=size, weights="random").eval()
    assert net.arch["lesion_views"] == "affine"  # the default: cross-validated on mini-MIAS
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - 14) ** 2 + (xx - 44) ** 2 <= 7**2  # off-centre, so that every move shows
    img = np.where(disc, 250, 10).astype(np.uint8)
    x = torch.from_numpy(np.repeat(img[None, :, :, None], 3, axis=3))  # 1 x H x W x 3
    masks = torch.from_numpy(np.where(disc, LESION, 0).astype(np.uint8))[None]
    with torch.inference_mode():
        moved = _moved_lesion_cells(net, x, masks, mode, torch.device("cpu"))
        seen = views(x, mode)[1:]
        assert len(moved) == len(seen) == (1 if mode == "flip" else 9)
        for cells, view in zip(moved, seen, strict=True):
            maps = net.forward_features(view)[0]  # D x h x w
            h, w = maps.shape[-2:]
            bright = view[0, :, :, 0].reshape(h, size // h, w, size // w) > 128
            shown = bright.any(3).any(1).flatten()  # cells where this view shows the disc
            assert 0 < int(shown.sum()) < h * w
            expected = maps.flatten(1).T[shown].numpy()
            assert cells[0].shape == expected.shape and np.allclose(cells[0], expected)
    with pytest.raises(ConfigError, match="lesion_views must be one of none, flip, affine"):
        create_model("cell_probe", size=size, weights="random", lesion_views="rotate")
