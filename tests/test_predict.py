"""`Predictor.predict_paths`: decoding in worker processes changes nothing but the time."""

from pathlib import Path

import numpy as np
import pandas as pd

from breastcad.predict import Predictor
from tests.conftest import make_image_bundle, with_training_hashes
from tests.data.conftest import blob_image, save


def test_files_decoded_in_worker_processes_give_the_same_rows_in_the_same_order(tmp_path):
    bundle = make_image_bundle(tmp_path / "bundle")
    files = [save(tmp_path / "images" / f"p{i:02d}.png", blob_image(i, rgb=True)) for i in range(9)]
    broken = tmp_path / "images" / "broken.png"
    broken.write_bytes(b"not an image")
    tiny = save(tmp_path / "images" / "dot.png", blob_image(1, (3, 3)))
    given = [*files[:4], broken, *files[4:], tiny]
    predictor = Predictor.from_bundle(bundle)
    alone = predictor.predict_paths(given, batch_size=4, progress=False, jobs=1)
    pooled = predictor.predict_paths(given, batch_size=4, progress=False, jobs=2)
    pd.testing.assert_frame_equal(alone, pooled)
    assert alone["path"].tolist() == [str(p) for p in given]
    errors = alone["error"].tolist()
    assert errors[4].startswith("not an image") and "too small" in errors[-1]
    assert (alone["error"] == "").sum() == 9 and np.isfinite(alone["p_idc"][:4]).all()


def test_predicting_with_an_image_model_does_not_import_scikit_learn(tmp_path):
    """scikit-learn and SciPy take 1.5 s to import here and image prediction needs neither
    (they are for tabular models and for metrics), not even to mark the images a bundle
    learnt from (here one that knows the first image: "same"); a fresh process checks what
    it imported."""
    import subprocess
    import sys

    image = save(tmp_path / "p.png", blob_image(0, rgb=True))
    other = save(tmp_path / "q.png", blob_image(5, rgb=True))
    bundle = with_training_hashes(make_image_bundle(tmp_path / "untrained"), [image], tmp_path)
    code = (
        "import sys\n"
        "from breastcad.predict import Predictor\n"
        f"rows = Predictor.from_bundle({str(bundle)!r}).predict_paths([{str(image)!r}, "
        f"{str(other)!r}], progress=False, jobs=1)\n"
        "assert rows['error'].tolist() == ['', ''], rows\n"
        "assert rows['seen_in_training'].tolist() == ['same', ''], rows\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_pairing_with_a_model_that_has_no_bilateral_fit_is_refused_by_name(tmp_path):
    """`predict --pair` / `--pairs` need a bundle whose run fitted each breast against the
    other; without one, a clear error naming the bundle (no traceback), and nothing written."""
    from typer.testing import CliRunner

    from breastcad.cli import app

    bundle = make_image_bundle(tmp_path / "plain")
    left = save(tmp_path / "mdb001.png", blob_image(1))
    right = save(tmp_path / "mdb002.png", blob_image(2))
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(
        app, ["predict", "--model", str(bundle), "--pair", str(left), str(right), "--out", str(out)]
    )
    assert result.exit_code != 0 and "no bilateral fit" in result.output
    assert str(bundle) in result.output and "Traceback" not in result.output
    assert not out.exists()
    both = CliRunner().invoke(
        app, ["predict", "--model", str(bundle), "--pair", "--pairs", str(tmp_path / "w.csv")]
    )
    assert both.exit_code != 0 and "takes the place of the inputs" in both.output


def test_a_predictor_runs_on_the_device_asked_for_and_answers_as_on_the_cpu(tmp_path):
    """The CPU by default; `device="auto"` puts an image network on the GPU where there is one
    (here, on a machine without one, the CPU); probabilities, decisions, Grad-CAM and the
    memory bound are those of the CPU predictor (to float32 and TF32 rounding on a GPU)."""
    import torch

    from breastcad.devices import device_of

    bundle = make_image_bundle(tmp_path / "bundle")
    cpu = Predictor.from_bundle(bundle)
    auto = Predictor.from_bundle(bundle, device="auto")
    assert cpu.device.type == "cpu" and device_of(cpu.network).type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert auto.device.type == expected and device_of(auto.network).type == expected
    pixels = np.random.default_rng(0).integers(0, 256, (5, 50, 50, 3), dtype=np.uint8)
    flags = [True, False, True, False, True]
    here, there = cpu.predict_batch(pixels, flags), auto.predict_batch(pixels, flags)
    tolerance = 1e-6 if expected == "cpu" else 2e-3
    for a, b, explained in zip(here, there, flags, strict=True):
        assert a.prediction == b.prediction
        assert np.allclose(
            list(a.probabilities.values()), list(b.probabilities.values()), atol=tolerance
        )
        assert (a.cam is None) == (b.cam is None) == (not explained)
        if explained:
            assert a.cam.shape == b.cam.shape == (50, 50)
            assert np.allclose(
                a.cam, b.cam, atol=1e-4 if expected == "cpu" else 5e-2, equal_nan=True
            )
    assert auto.bytes_per_image == cpu.bytes_per_image > 0
    assert 1 <= auto.batch_that_fits(16) <= 16


def test_asking_for_a_gpu_that_is_not_there_or_an_unknown_device_is_a_clear_error(tmp_path):
    """`--device gpu` without a CUDA GPU (the CPU would be a silent substitute), an unknown
    device, and a GPU for a model that runs on the CPU only (ONNX Runtime, tabular) are
    refused with exit code 2 and a line saying why: no traceback, no CSV written."""
    import torch
    from typer.testing import CliRunner

    from breastcad.cli import app
    from tests.conftest import make_wdbc_bundle

    bundle = make_image_bundle(tmp_path / "bundle")
    image = save(tmp_path / "p.png", blob_image(0, rgb=True))
    out = tmp_path / "pred.csv"
    runner = CliRunner()

    def predict(model, *extra):
        return runner.invoke(app, ["predict", "--model", str(model), *extra, "--out", str(out)])

    unknown = predict(bundle, str(image), "--device", "tpu")
    assert unknown.exit_code == 2 and "unknown device 'tpu'" in unknown.output
    gpu = predict(bundle, str(image), "--device", "gpu", "--quiet")
    if torch.cuda.is_available():
        assert gpu.exit_code == 0, gpu.output
        out.unlink()
    else:
        assert gpu.exit_code == 2 and "PyTorch sees no CUDA GPU here" in gpu.output
    wdbc = make_wdbc_bundle(tmp_path / "wdbc")
    tabular = predict(wdbc, str(image), "--device", "gpu")
    expected = "is for image bundles" if torch.cuda.is_available() else "no CUDA GPU"
    assert tabular.exit_code == 2 and expected in tabular.output
    for result in (unknown, gpu, tabular):
        assert "Traceback" not in result.output
    assert not out.exists()
    on_cpu = predict(bundle, str(image), "--device", "cpu", "--quiet")
    assert on_cpu.exit_code == 0, on_cpu.output
    assert pd.read_csv(out)["error"].isna().all()


def test_a_dicom_of_another_modality_than_the_bundles_is_answered_with_a_warning(tmp_path):
    """An ultrasound bundle given a mammogram (DICOM Modality MG) still answers, as asked, but
    the row's `warning` says why the answer does not apply, and `predict` prints it; its own
    modality and pictures without a header get none."""
    from typer.testing import CliRunner

    from breastcad.cli import app
    from tests.serve.conftest import dicom_bytes

    bundle = make_image_bundle(tmp_path / "us", modality="ultrasound")
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "mammogram.dcm").write_bytes(dicom_bytes(modality="MG"))
    (folder / "ultrasound.dcm").write_bytes(dicom_bytes(modality="US"))
    save(folder / "picture.png", blob_image(0, rgb=True))
    rows = Predictor.from_bundle(bundle).predict_paths([folder], progress=False, jobs=1)
    names = rows["path"].map(lambda p: Path(p).name)
    warnings = dict(zip(names, rows["warning"], strict=True))
    assert warnings["mammogram.dcm"].startswith("DICOM Modality MG (mammography), but the")
    assert "trained on ultrasound images" in warnings["mammogram.dcm"]
    assert warnings["ultrasound.dcm"] == "" and warnings["picture.png"] == ""
    assert (rows["error"] == "").all() and rows["prediction"].ne("").all()  # still answered
    done = CliRunner().invoke(
        app, ["predict", "--model", str(bundle), str(folder), "--out", str(tmp_path / "p.csv")]
    )
    assert done.exit_code == 0, done.output
    assert f"warning {folder / 'mammogram.dcm'}: DICOM Modality MG" in done.output
    assert "ultrasound.dcm:" not in done.output
    written = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert written["warning"].tolist() == rows["warning"].tolist()


def test_the_terminal_names_ten_warned_files_and_counts_the_rest(tmp_path):
    from typer.testing import CliRunner

    from breastcad.cli import app
    from tests.serve.conftest import dicom_bytes

    bundle = make_image_bundle(tmp_path / "us", modality="ultrasound")
    folder = tmp_path / "mammograms"
    folder.mkdir()
    for i in range(12):
        (folder / f"m{i:02d}.dcm").write_bytes(dicom_bytes(modality="MG"))
    out = tmp_path / "p.csv"
    done = CliRunner().invoke(
        app, ["predict", "--model", str(bundle), str(folder), "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    named = [line for line in done.output.splitlines() if line.startswith("warning ")]
    assert len(named) == 10 and all(f"{folder}/m" in line for line in named)
    assert "... 2 more with a warning (see warning)" in done.output
    assert (pd.read_csv(out)["warning"].str.startswith("DICOM Modality MG")).all()
