"""Deep ensembles: averaged probabilities, one bundle, Grad-CAM of all members, ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from breastcad.bundle import ImageModel, image_manifest, load_bundle, save_bundle
from breastcad.errors import ConfigError
from breastcad.explain.gradcam import grad_cam
from breastcad.export import export_onnx
from breastcad.models import create_model
from breastcad.models.ensemble import EnsembleNetwork
from breastcad.predict import Predictor


def _members(n: int = 3, size: int = 24) -> list:
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        nets.append(create_model("idc_cnn", size=size).eval())
    return nets


def _pixels(n: int, size: int = 24) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_the_ensemble_averages_its_members_probabilities():
    members = _members()
    net = EnsembleNetwork(members).eval()
    x = torch.from_numpy(_pixels(5))
    with torch.inference_mode():
        mean = torch.stack([torch.softmax(m(x), dim=1) for m in members]).mean(dim=0)
        out = net(x)
        assert torch.allclose(torch.softmax(out, dim=1), mean, atol=1e-6)
        assert torch.allclose(out.exp().sum(dim=1), torch.ones(5), atol=1e-6)
        assert net.member_logits(x).shape == (3, 5, 2)
    # the members differ (different seeds), so the average is none of them
    singles = [torch.softmax(m(x), dim=1) for m in members]
    assert all(not torch.allclose(s, mean, atol=1e-4) for s in singles)
    assert net.arch["name"] == "ensemble" and len(net.arch["members"]) == 3
    assert net.preprocessing == members[0].preprocessing and net.init == "random"


def test_members_must_share_input_and_classes():
    with pytest.raises(ConfigError, match="at least two"):
        EnsembleNetwork(_members(1))
    other = create_model("idc_cnn", size=32)
    with pytest.raises(ConfigError, match="member 2 takes other input"):
        EnsembleNetwork([_members(1)[0], other])
    three = create_model("idc_cnn", num_classes=3, size=24)
    with pytest.raises(ConfigError, match="classes"):
        EnsembleNetwork([_members(1)[0], three])


def test_an_ensemble_bundle_round_trips_explains_and_exports(tmp_path):
    net = EnsembleNetwork(_members()).eval()
    manifest = image_manifest(
        net,
        ["benign", "malignant"],
        1,
        {"size": 24, "resize": "pad", "channels": 3},
        temperature=1.3,
        threshold={"value": 0.4, "policy": "test"},
        metrics={},
        modality="histopathology",
    )
    folder = save_bundle(tmp_path / "bundle", ImageModel(net), manifest)
    bundle = load_bundle(folder)
    assert bundle.manifest["model"]["name"] == "ensemble"
    pixels = _pixels(4)
    predictor = Predictor(bundle)
    with torch.inference_mode():
        expected = net(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(predictor.predict_logits(pixels), expected, atol=1e-6)

    # Grad-CAM: the mean of the members' maps (each scaled to its maximum), rescaled
    cams = grad_cam(bundle.estimator.net, pixels, target=1)
    assert cams.shape == (4, 24, 24)
    singles = np.stack([grad_cam(m, pixels, target=1) for m in bundle.estimator.net.members])
    mean = np.nanmean(singles, axis=0)
    top = mean.reshape(4, -1).max(axis=1)[:, None, None]
    np.testing.assert_allclose(cams, mean / top, atol=1e-5)
    explained = predictor.predict_image(pixels[0], explain=True)
    assert explained.cam.shape == (24, 24)

    # ONNX: the exported graph averages the members too
    record = export_onnx(folder)
    assert record["parity_max_abs_diff"] <= 1e-4
    onnx = Predictor.from_bundle(folder, "onnx")
    np.testing.assert_allclose(
        onnx.predict_pixels(pixels), predictor.predict_pixels(pixels), atol=1e-5
    )
