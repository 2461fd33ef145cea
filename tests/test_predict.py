"""`Predictor.predict_paths`: decoding in worker processes changes nothing but the time."""

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
