"""The IDC slide view on a synthetic slide (and on a real patient in ../shared/data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from breastcad.cli import app
from breastcad.errors import ConfigError, DataError
from breastcad.explain.slide import slide_heatmap
from breastcad.predict import Predictor
from tests.conftest import make_image_bundle, shared_dir


def idc_tree(root, patient="1234", cols=6, rows=4):
    """Patches on a grid; the right half annotated IDC; one edge patch smaller than 50x50."""
    rng = np.random.default_rng(0)
    for r in range(rows):
        for c in range(cols):
            label = int(c >= cols // 2)
            folder = root / patient / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            shape = (30, 50, 3) if (r, c) == (rows - 1, 0) else (50, 50, 3)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            name = f"{patient}_idx5_x{1 + 50 * c}_y{1 + 50 * r}_class{label}.png"
            Image.fromarray(pixels).save(folder / name)
    return root


def test_slide_view_writes_figure_and_table(tmp_path):
    predictor = Predictor.from_bundle(make_image_bundle(tmp_path / "bundle"))
    root = idc_tree(tmp_path / "idc")
    result = slide_heatmap(predictor, root, "1234", tmp_path / "out", progress=False)
    assert result.patches == 24 and result.idc_patches == 12
    assert result.auc is not None and 0 <= result.auc <= 1
    table = pd.read_csv(result.csv)
    assert set(table["x"]) == {1 + 50 * c for c in range(6)}
    assert ((table["x"] > 150) == (table["label"] == "idc")).all()
    assert table["p_idc"].between(0, 1).all()
    width, height = Image.open(result.png).size
    assert width > 1000 and height > 400
    with pytest.raises(DataError, match="patients here: 1234"):
        slide_heatmap(predictor, root, "999", tmp_path / "out", progress=False)


def test_slide_view_needs_an_idc_model(tmp_path):
    bundle = make_image_bundle(tmp_path / "b", classes=("normal", "benign", "malignant"))
    with pytest.raises(ConfigError, match="IDC model"):
        slide_heatmap(Predictor.from_bundle(bundle), tmp_path, "1", tmp_path / "out")


@pytest.mark.integration
def test_real_patient_slide_through_the_cli(tmp_path):
    root = shared_dir("idc")
    patient = sorted(p.name for p in (root / "IDC_regular_ps50_idx5").iterdir())[0]
    bundle = make_image_bundle(tmp_path / "bundle")
    result = CliRunner().invoke(
        app,
        [
            "explain",
            "--model",
            str(bundle),
            "slide",
            "--root",
            str(root),
            "--patient",
            patient,
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / f"slide_{patient}.csv")
    assert len(table) > 100 and f"{len(table)} patches" in result.output
    assert (tmp_path / "out" / f"slide_{patient}.png").stat().st_size > 10_000
