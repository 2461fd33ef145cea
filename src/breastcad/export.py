"""Export an image bundle's network to ONNX, checked against PyTorch on real images.

The exported graph takes the same uint8 (N, H, W, C) batch as the PyTorch network (the
normalisation is inside it) and returns logits; the batch size is dynamic. The file is added to
the bundle as `model.onnx` under `exports` in `bundle.json`, with its checksum and the parity
measured, so the service can run the bundle on ONNX Runtime (`breastcad serve --runtime onnx`).
The bundle's own files and model id do not change.

Example:
    >>> info = export_onnx("runs/idc/bundle", ["patch1.png", "patch2.png"])  # doctest: +SKIP
    >>> info["parity_max_abs_diff"] <= 1e-4  # doctest: +SKIP
    True
"""

from __future__ import annotations

import io
import tempfile
import warnings
from collections.abc import Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

from breastcad.bundle import add_export
from breastcad.data.imaging import as_hw
from breastcad.errors import BundleError, ConfigError

ONNX_FILE = "model.onnx"
OPSET = 18
TOLERANCE = 1e-4
MAX_CHECK = 256
"""Parity is checked on at most this many of the given images (the first readable ones)."""


def export_onnx(
    bundle_dir: str | Path,
    check: Sequence[str | Path] = (),
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Write `model.onnx` into the bundle and return what was recorded: opset, the largest
    absolute logit difference from PyTorch, and on which images it was measured (`check`:
    images or folders, the first 256 readable ones; without them, 16 seeded random images,
    and the record says so).
    A difference above `tolerance` times the largest absolute logit (at least 1: float32
    rounding grows with the logits, e.g. a linear probe's on random images) is refused
    (`BundleError`) and nothing is added."""
    import onnxruntime as ort
    import torch

    from breastcad.predict import Predictor

    predictor = Predictor.from_bundle(bundle_dir, device="cpu")  # ONNX Runtime runs there
    if predictor.kind != "image":
        raise ConfigError(
            f"{bundle_dir}: ONNX export is for image bundles; a {predictor.kind} bundle runs "
            "on its own runtime in the service"
        )
    net = predictor.network
    pre = predictor.bundle.manifest["preprocessing"]
    height, width = as_hw(pre["size"])
    example = torch.zeros((2, height, width, int(pre["channels"])), dtype=torch.uint8)
    pixels, source = _parity_pixels(predictor, check, example.shape[1:])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ONNX_FILE
        _write_onnx(net, example, path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        onnx_logits = session.run(None, {"pixels": pixels})[0]
        torch_logits = predictor.predict_logits(pixels, views=False)
        diff = float(np.max(np.abs(onnx_logits - torch_logits)))
        scale = max(1.0, float(np.max(np.abs(torch_logits))))
        if not diff <= tolerance * scale:
            raise BundleError(
                f"{bundle_dir}: ONNX logits differ from PyTorch by {diff:.2e} (> {tolerance:g}"
                f" x {scale:.3g}, the largest logit) on {source}; not added"
            )
        record = {
            "format": "onnx",
            "opset": OPSET,
            "input": "pixels: uint8 (batch, height, width, channels)",
            "parity_max_abs_diff": diff,
            "parity_tolerance": tolerance,
            "parity_logit_scale": scale,
            "parity_checked_on": source,
            "views": "one: the network's logits of the image as given; breastcad's Predictor "
            f"averages the bundle's test-time views around it ({predictor.tta})",
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
        }
        add_export(Path(bundle_dir), ONNX_FILE, path, record)
    return record


def _write_onnx(net: Any, example: Any, path: Path) -> None:
    """`net` as ONNX at `path`: uint8 pixels in, logits out, any batch size (the exporter's
    chatter silenced)."""
    import torch

    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(),
            (example,),
            str(path),
            input_names=["pixels"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
            external_data=False,
        )


def _parity_pixels(
    predictor: Any, check: Sequence[str | Path], shape: Sequence[int]
) -> tuple[np.ndarray, str]:
    """Up to `MAX_CHECK` readable images from `check`, else seeded random pixels."""
    from breastcad.data.imaging import read_image
    from breastcad.errors import DataError
    from breastcad.predict import expand_paths

    images, files = [], expand_paths(check)
    for path in files:
        if len(images) == MAX_CHECK:
            break
        try:
            images.append(predictor.prepare(read_image(path)))
        except DataError:
            continue
    if check and not images:
        raise DataError("no readable image to check parity on", ", ".join(map(str, check)))
    if images:
        return np.stack(images), f"{len(images)} images ({', '.join(p.name for p in files[:3])}" + (
            " ...)" if len(files) > 3 else ")"
        )
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (16, *shape), dtype=np.uint8), "16 seeded random images"
