import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from breastcad.config import PreprocessConfig
from breastcad.data.datamodule import ImageDataModule
from breastcad.data.lesions import UNKNOWN, lesion_masks
from breastcad.data.sources import scan
from breastcad.errors import ConfigError
from breastcad.evaluation.localisation import lesion_localisation
from breastcad.models import create_model
from breastcad.models.lesion_recipes import LesionMapHead, cell_loss, lesion_background
from breastcad.training.image_fit import ImageFitSettings, fit_image
from tests.data.conftest import save


def _one_lesion_cell():
    scores = torch.full((1, 4, 4), -6.0)
    scores[0, 1, 2] = 6.0
    masks = torch.zeros((1, 16, 16), dtype=torch.uint8)
    masks[0, 5, 9] = 1  # one pixel in cell (1, 2) of a 4 x 4 map
    return scores, masks


def _binary(scores):
    """Two-class cell logits: the background (class 0) at 0, the lesion class's score."""
    return torch.stack([torch.zeros_like(scores), scores], dim=1)


def test_cell_loss_rewards_the_right_cell_and_ignores_unknown_images():
    scores, masks = _one_lesion_cell()
    abnormal = torch.tensor([1])
    assert cell_loss(_binary(scores), masks, abnormal, 0) < 0.01
    assert cell_loss(_binary(-scores), masks, abnormal, 0) > 5.0
    unknown = torch.full((1, 16, 16), UNKNOWN, dtype=torch.uint8)
    both = cell_loss(
        _binary(torch.cat([scores, -scores])), torch.cat([masks, unknown]), torch.tensor([1, 1]), 0
    )
    assert both == pytest.approx(float(cell_loss(_binary(scores), masks, abnormal, 0)))
    # the one lesion cell weighs as much as the fifteen others together
    flat = _binary(torch.zeros((1, 4, 4)))
    assert cell_loss(flat, masks, abnormal, 0) == pytest.approx(np.log(2), rel=1e-5)
    assert float(cell_loss(flat, unknown, abnormal, 0)) == 0.0


def test_cell_loss_labels_lesion_cells_with_their_image_class():
    """Three classes, background 'normal' last: the lesion cell of a malignant image must say
    malignant, not benign; the other cells normal."""
    _, masks = _one_lesion_cell()
    cells = torch.zeros((1, 3, 4, 4))
    cells[0, 2] = 6.0  # normal everywhere...
    cells[0, 2, 1, 2], cells[0, 1, 1, 2] = 0.0, 6.0  # ...but malignant on the lesion
    malignant, benign = torch.tensor([1]), torch.tensor([0])
    assert cell_loss(cells, masks, malignant, 2) < 0.01
    assert cell_loss(cells, masks, benign, 2) > 2.0


def test_head_scores_cells_and_takes_the_highest():
    head = LesionMapHead(8, 2).eval()
    features = torch.randn(3, 8, 5, 5)
    logits = head(features)
    assert logits.shape == (3, 2) and (logits[:, 0] == 0).all()
    assert torch.allclose(logits[:, 1], head.score_map(features).amax(dim=(1, 2)))
    three = LesionMapHead(8, 3, background=2).eval()
    logits = three(features)
    assert logits.shape == (3, 3) and (logits[:, 2] == 0).all()
    assert torch.allclose(logits[:, :2], three.score(features).amax(dim=(2, 3)))
    for classes, background in ((1, 0), (3, 3)):
        with pytest.raises(ConfigError, match="background"):
            LesionMapHead(8, classes, background=background)
    assert lesion_background(["benign", "malignant", "normal"], 1) == 2
    assert lesion_background(["normal", "abnormal"], 1) == 0
    assert lesion_background(["benign", "malignant"], 1) == 0
    with pytest.raises(ConfigError, match="without lesions"):
        lesion_background(["a", "b", "c"], 2)


@pytest.mark.slow
def test_lesion_map_learns_where_the_lesion_is(tmp_path):
    """Synthetic mammograms, 128 px: abnormal ones have a bright disc at a random place given
    in Info.txt (mini-MIAS layout). After a few epochs the score map ranks the disc's cells above
    the others, its highest cell is mostly a disc cell, and abnormal images score above normal
    ones."""
    rng = np.random.default_rng(0)
    lines, abnormal_rows = [], []
    for i in range(1, 33):
        ref = f"mdb{i:03d}"
        img = rng.normal(60, 12, (128, 128))
        if i % 2:
            x, y = rng.integers(16, 112, 2)
            yy, xx = np.mgrid[:128, :128]
            img[(yy - (128 - y)) ** 2 + (xx - x) ** 2 <= 10**2] += 120
            lines.append(f"{ref} F CIRC B {x} {y} 10")
            abnormal_rows.append(i - 1)
        else:
            lines.append(f"{ref} F NORM")
        save(tmp_path / "mias" / f"{ref}.png", np.clip(img, 0, 255).astype(np.uint8))
    (tmp_path / "mias" / "Info.txt").write_text("\n".join(lines) + "\n")
    manifest = scan("mini-mias", tmp_path / "mias")
    pre = PreprocessConfig(size=128, channels=1)
    masks, _ = lesion_masks(manifest, pre, "normal", progress=False)
    partition = ["train"] * 32  # no validation part: the last epoch's weights are kept
    dm = ImageDataModule(
        manifest, partition, pre, 4, cache_dir=tmp_path / "cache", progress=False, masks=masks
    )
    torch.manual_seed(0)
    net = create_model("lesion_map", num_classes=2, size=128)
    assert net.recipe.lesion_masks and all(p.requires_grad for p in net.parameters())
    settings = ImageFitSettings(
        epochs=8, lr=5e-3, progress=False, optim=net.recipe.optim_settings()
    )
    history, _ = fit_image(net, dm, settings, tmp_path / "run")
    assert "train_lesion_loss" in history[-1]
    assert history[-1]["train_lesion_loss"] < history[0]["train_lesion_loss"]
    pixels = torch.from_numpy(np.array(dm.cache.pixels))
    with torch.no_grad():
        scores = net.head.score_map(net.forward_features(pixels))
    cells = torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(masks == 1).float(), (4, 4))
    cell_auc = roc_auc_score(cells.flatten().numpy(), scores.flatten().numpy())
    assert cell_auc > 0.9  # lesion cells score above the other cells, across images
    best = scores.flatten(1).argmax(dim=1)
    found = [bool(cells[r].flatten()[best[r]]) for r in abnormal_rows]
    assert np.mean(found) >= 0.6, found  # the highest cell holds part of the lesion (chance ~0.1)
    where = lesion_localisation(net, dm.cache.pixels, masks, batch_size=5)  # what runs report
    assert where["images"] == 32 and where["images_with_lesion"] == 16
    assert where["cell_auc"] == pytest.approx(cell_auc, abs=1e-6)
    assert where["top_cell_on_lesion"] == sum(found)
    low, high = where["cell_auc_ci"]
    assert low <= cell_auc <= high and high - low > 0
    low, high = where["top_cell_on_lesion_rate_ci"]
    assert low <= np.mean(found) <= high
    # the groups are what is resampled: here pairs of images
    paired = lesion_localisation(net, dm.cache.pixels, masks, np.arange(32) // 2, batch_size=5)
    assert paired["cell_auc"] == where["cell_auc"] and "of 16 groups" in paired["interval"]
    assert where["random_cell_rate"] == pytest.approx(float(cells[abnormal_rows].mean()), abs=1e-6)
    top = scores.amax(dim=(1, 2))
    abnormal = [i in abnormal_rows for i in range(32)]
    assert roc_auc_score(abnormal, top.numpy()) > 0.9
