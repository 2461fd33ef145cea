"""The one Predictor: CLI, Python API, export and the web service all predict through it.

Example:
    >>> predictor = Predictor.from_bundle("runs/demo/bundles/logreg")  # doctest: +SKIP
    >>> predictor.predict_csv("data.csv").head()  # doctest: +SKIP
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from breastcad.allocator import keep_freed_memory
from breastcad.bundle import Bundle, load_bundle
from breastcad.data.fingerprints import row_hashes
from breastcad.data.imaging import (
    check_decoded,
    prepare,
)
from breastcad.data.modality import CODES as MODALITY_CODES
from breastcad.data.modality import dicom_modality, modality_warning
from breastcad.data.tabular import (
    canonical_feature_name,
    numeric_features,
    numeric_rows,
    read_csv,
)
from breastcad.errors import BundleError, ConfigError, DataError
from breastcad.models import get_spec
from breastcad.predict_inputs import decoded_files, expand_paths, seen_in_training


@dataclass
class ImagePrediction:
    """One image's answer: what the model saw, calibrated probabilities, the decision."""

    pixels: np.ndarray
    """The prepared input (uint8 H x W x C), as the model saw it."""
    probabilities: dict[str, float]
    prediction: str
    cam: np.ndarray | None = None
    """Grad-CAM of the predicted class (H x W in [0, 1], NaN when degenerate) when asked for."""


RUNTIMES = ("torch", "onnx", "auto")
REAL_BOUND_PIXELS = 1024 * 1024
"""Inputs of up to this many values (1024 x 1024 grey, 3 x 605 x 605) have their memory bound
measured on the loaded network itself; larger ones (a full-resolution mammogram network would
compute for seconds) on the meta device."""


class Predictor:
    """Calibrated-as-trained probabilities and classes from a verified bundle.

    `runtime="auto"` picks ONNX Runtime when the bundle has an export, else PyTorch.
    `runtime="onnx"` runs an image bundle's exported `model.onnx` on ONNX Runtime (see
    `breastcad export`); Grad-CAM always uses the PyTorch network (it needs gradients).
    `device` (`breastcad.devices`): where an image bundle's PyTorch network runs, `cpu` (the
    default: the same answers on every machine), `auto` (the GPU when there is one) or `gpu`;
    ONNX Runtime and tabular models run on the CPU."""

    def __init__(self, bundle: Bundle, runtime: str = "torch", device: str = "cpu") -> None:
        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime '{runtime}'; choose from {', '.join(RUNTIMES)}")
        if runtime == "auto":
            runtime = "onnx" if "model.onnx" in bundle.manifest.get("exports", {}) else "torch"
        if bundle.kind != "image" and runtime != "onnx":  # a tabular model runs as it was fitted
            runtime = get_spec(bundle.manifest["model"]["name"]).family  # sklearn or torch
        self.bundle, self.runtime = bundle, runtime
        from breastcad.models.tta import MODES

        if self.tta not in MODES:
            raise BundleError(
                f"{bundle.path}: unknown test-time augmentation '{self.tta}' in the manifest "
                f"(known: {', '.join(MODES)}); a newer breastcad may have written it"
            )
        self._session = None
        if runtime == "onnx":
            self._session = self._onnx_session()
        self.device = self._place(device)

    @classmethod
    def from_bundle(
        cls, path: str | Path, runtime: str = "torch", device: str = "cpu"
    ) -> Predictor:
        return cls(load_bundle(Path(path)), runtime, device)

    def _place(self, device: str):
        """The torch device the network now lives on (`device` resolved; the CPU for ONNX
        Runtime and tabular models, where asking for the GPU is an error)."""
        import torch

        from breastcad.devices import inference_device

        wanted = inference_device(device)
        if self.kind != "image" or self.runtime != "torch":
            if device in ("gpu", "cuda"):
                raise ConfigError(
                    f"{self.bundle.path}: --device {device} is for image bundles run on "
                    f"PyTorch; this one runs on {self.runtime}, on the CPU"
                )
            return torch.device("cpu")
        if wanted.type != "cpu":
            self.network.to(wanted)
        return wanted

    def _onnx_session(self):
        from breastcad.export import ONNX_FILE

        if self.kind != "image":
            raise ConfigError(f"{self.bundle.path}: the ONNX runtime is for image bundles")
        if ONNX_FILE not in self.bundle.manifest.get("exports", {}):
            raise BundleError(
                f"{self.bundle.path}: no {ONNX_FILE} in the bundle; run "
                f"`breastcad export --model {self.bundle.path} --format onnx` first"
            )
        import onnxruntime as ort

        path = str(self.bundle.path / ONNX_FILE)
        return ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    @property
    def threshold(self) -> float | None:
        value = self.bundle.manifest["threshold"]["value"]
        return None if value is None else float(value)

    @property
    def kind(self) -> str:
        return self.bundle.kind

    # --- images -------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self.bundle.manifest.get("classes", ["benign", "malignant"]))

    @property
    def positive(self) -> int:
        return int(self.bundle.manifest["positive"])

    @property
    def temperature(self) -> float:
        return float(self.bundle.manifest.get("temperature", 1.0))

    @property
    def prior_shift(self) -> np.ndarray:
        """Per-class logit shift applied before the temperature (`classification.prior_shift`;
        zeros unless the run was calibrated with `--calibration prior-shift` and re-weighted
        its classes, and for bundles made before it was recorded)."""
        shift = self.bundle.manifest.get("prior_shift")
        return np.zeros(len(self.classes)) if shift is None else np.asarray(shift, float)

    @property
    def network(self):
        """The PyTorch image network (`BundleError` for a tabular bundle)."""
        if self.kind != "image":
            raise BundleError(f"{self.bundle.path}: a {self.kind} model cannot classify images")
        return self.bundle.estimator.net

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """A decoded image (as `read_image` gives it; anything else is a `DataError`) as the
        model's input: uint8 size x size x channels."""
        pre = self.bundle.manifest["preprocessing"]
        return prepare(check_decoded(image), pre["size"], pre["resize"], pre["channels"])

    def explanation_picture(self, image: np.ndarray, cam: np.ndarray) -> np.ndarray:
        """A Grad-CAM map (over the model's input) drawn on the decoded image it came from, at
        the image's own geometry (longer side at most 1024 px): what `explain` and the
        service show."""
        from breastcad.explain.gradcam import overlay_on_image

        return overlay_on_image(image, cam, self.bundle.manifest["preprocessing"]["resize"])

    @property
    def tta(self) -> str:
        """The bundle's test-time augmentation (`breastcad.models.tta`): none, flip or
        affine."""
        return str(self.bundle.manifest.get("test_time_augmentation", "none"))

    def predict_logits(self, pixels: np.ndarray, views: bool = True) -> np.ndarray:
        """Uncalibrated logits for a prepared uint8 batch (N, H, W, C), averaged over the
        bundle's test-time views (`views=False`: the network's own logits of the image as
        given)."""
        import torch

        from breastcad.models.tta import with_views

        def forward(x: torch.Tensor) -> torch.Tensor:
            if self._session is not None:
                x_np = np.ascontiguousarray(x.numpy())
                return torch.from_numpy(self._session.run(None, {"pixels": x_np})[0]).float()
            return self.network(x).float()

        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        with torch.inference_mode():
            x = torch.from_numpy(pixels).to(self.device)
            return with_views(forward, x, self.tta if views else "none").cpu().numpy()

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities for a prepared uint8 batch (N, H, W, C)."""
        from breastcad.evaluation.classification import softmax

        return softmax(self.predict_logits(pixels), self.temperature, self.prior_shift)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        from breastcad.evaluation.classification import decide

        return decide(probs, self.positive, self.threshold)

    def predict_image(self, image: np.ndarray, explain: bool = False) -> ImagePrediction:
        """One decoded image (as `read_image`/`decode_image` give it): calibrated
        probabilities, the decision at the operating point and, if asked, Grad-CAM."""
        return self.predict_batch(self.prepare(image)[None], [explain])[0]

    def predict_batch(
        self, pixels: np.ndarray, explain: Sequence[bool] | None = None
    ) -> list[ImagePrediction]:
        """Prepared images (N, H, W, C) in one forward pass; Grad-CAM of the decided class
        for those whose `explain` flag is set (the service batches concurrent requests here)."""
        probs = self.predict_pixels(pixels)
        decided = self.decide(probs)
        flags = np.zeros(len(pixels), bool) if explain is None else np.asarray(explain, bool)
        cams: dict[int, np.ndarray] = {}
        if flags.any():
            import warnings

            from breastcad.explain.gradcam import grad_cam

            index = np.flatnonzero(flags)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a NaN map says it already
                maps = grad_cam(self.network, pixels[index], decided[index], self.tta)
            cams = dict(zip(index.tolist(), maps, strict=True))
        return [
            ImagePrediction(
                pixels=pixels[i],
                probabilities={k: float(v) for k, v in zip(self.classes, probs[i], strict=True)},
                prediction=self.classes[int(decided[i])],
                cam=cams.get(i),
            )
            for i in range(len(pixels))
        ]

    @functools.cached_property
    def bytes_per_image(self) -> int:
        """At least what one image needs on its way through the network (`training.memory.
        inference_need`): for an input of up to `REAL_BOUND_PIXELS` values, the loaded
        network run on one image of zeros; for a larger one, worked out on the meta device
        (nothing allocated)."""
        from breastcad.bundle import rebuild_network
        from breastcad.data.imaging import as_hw
        from breastcad.models.ensemble import NAME as ENSEMBLE
        from breastcad.models.ensemble import EnsembleNetwork
        from breastcad.training.memory import inference_need

        def archs(arch: dict) -> list[dict]:  # an ensemble runs its members one by one
            if arch["name"] != ENSEMBLE:
                return [arch]
            return [a for member in arch["members"] for a in archs(member)]

        def loaded(net) -> list:
            if not isinstance(net, EnsembleNetwork):
                return [net]
            return [n for member in net.members for n in loaded(member)]

        pre = self.bundle.manifest["preprocessing"]
        height, width = as_hw(pre["size"])
        shape = (1, height, width, self.network.in_chans)
        if height * width * self.network.in_chans <= REAL_BOUND_PIXELS:
            return max(
                inference_need(lambda n=net: n, shape, on_meta=False)
                for net in loaded(self.network)
            )
        return max(
            inference_need(lambda a=arch: rebuild_network(a), shape)
            for arch in archs(self.bundle.manifest["model"]["arch"])
        )

    def batch_that_fits(self, requested: int) -> int:
        """`requested`, or fewer images a batch where that many would take more than half the
        memory available on the device (a mammogram network at full resolution: about 0.9 GB
        an image)."""
        from breastcad.training.memory import available_bytes, batch_that_fits

        if self.kind != "image" or requested <= 1:
            return requested
        return batch_that_fits(requested, self.bytes_per_image, available_bytes(self.device))

    def predict_paths(
        self,
        paths: Iterable[str | Path],
        batch_size: int = 32,
        progress: bool = True,
        jobs: int = 2,
    ) -> pd.DataFrame:
        """One row per image: path, P(class) per class, predicted class, threshold, and the
        problem for files that could not be read (reported, skipped, never a crash), and a
        `warning` for a DICOM of another modality than the bundle's training images. A batch
        that would not fit in memory is made smaller (`batch_that_fits`); `jobs` processes
        decode the files (a DICOM mammogram takes about half a second to decode here). Where
        the bundle keeps the hashes of its training images, `seen_in_training` marks the
        images it learnt from ("same" pixels, "near" duplicate; `data.fingerprints`): its
        answers on them are not those it would give a new image."""
        keep_freed_memory()
        batch_size = self.batch_that_fits(batch_size)
        files = expand_paths(paths)
        columns = [f"p_{k}" for k in self.classes]
        rows: list[dict] = []  # in the order of `files`, unreadable ones included
        batch: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            results = self.predict_batch(np.stack([b[1] for b in batch]))
            for (row, _), result in zip(batch, results, strict=True):
                probs = {f"p_{k}": v for k, v in result.probabilities.items()}
                rows[row] |= probs | {"prediction": result.prediction}
            batch.clear()

        pre = self.bundle.manifest["preprocessing"]
        trained = self.bundle.training_hashes()
        settings = (pre["size"], pre["resize"], pre["channels"])
        decoded = decoded_files(files, settings, jobs, fingerprint=trained is not None)
        found: list[tuple | None] = []
        bar = tqdm(total=len(files), desc="predicting", unit="img", disable=not progress)
        with bar:
            for path, (pixels, problem, hashes) in zip(files, decoded, strict=True):
                rows.append({"path": str(path), "prediction": "", "error": problem})
                found.append(hashes)
                if pixels is not None:
                    batch.append((len(rows) - 1, pixels))
                if len(batch) >= batch_size:
                    flush()
                bar.update()
            if batch:
                flush()
        frame = pd.DataFrame(rows, columns=["path", *columns, "prediction", "error"])
        frame["warning"] = self.modality_warnings(files, frame["error"])
        frame["threshold"] = self.threshold
        frame["model"] = self.bundle.model_id
        if trained is not None:
            frame["seen_in_training"] = seen_in_training(found, *trained)
        return frame

    @property
    def modality(self) -> str:
        """What the bundle's training images were (ultrasound, mammography, histopathology;
        `image` for a plain folder, and for bundles from before this was recorded)."""
        return str(self.bundle.manifest.get("modality") or "image")

    def modality_warnings(self, files: list[Path], errors: Iterable[str]) -> list[str]:
        """Per readable file, why its DICOM Modality is not what the bundle was trained on
        (`data.modality`); '' for the others, files that are not DICOM among them."""
        if self.modality not in MODALITY_CODES:
            return [""] * len(files)
        return [
            "" if error else modality_warning(self.modality, dicom_modality(path))
            for path, error in zip(files, errors, strict=True)
        ]

    @property
    def bilateral(self) -> dict | None:
        """The run's fit for each breast against the woman's other breast
        (`evaluation.bilateral.fit_bilateral`), or None where the run had no pairs."""
        return self.bundle.manifest.get("bilateral")

    def pair_probability(self, probs: np.ndarray, other_probs: np.ndarray) -> np.ndarray:
        """P(positive) of each image against its partner: the bundle's bilateral fit applied
        to the difference of their log-odds (rows of calibrated class probabilities)."""
        from breastcad.evaluation.bilateral import bilateral_probability, log_odds

        if self.bilateral is None:
            raise BundleError(f"{self.bundle.path}: no bilateral fit in this bundle")
        score = log_odds(probs, self.positive) - log_odds(other_probs, self.positive)
        return bilateral_probability(score, self.bilateral)

    def predict_pairs(
        self,
        pairs: Iterable[tuple[str | Path, str | Path]],
        batch_size: int = 32,
        progress: bool = True,
        jobs: int = 2,
        alone: dict[Path, str] | None = None,
        breasts: dict | None = None,
    ) -> pd.DataFrame:
        """Each (image, other) pair of one woman's two breasts, each image alone and against
        the other (`breastcad.predict_pairs.pair_table`, which says what the table holds)."""
        from breastcad.predict_pairs import pair_table

        return pair_table(self, pairs, batch_size, progress, jobs, alone, breasts)

    def predict_paired(
        self,
        paths: Iterable[str | Path],
        batch_size: int = 32,
        progress: bool = True,
        jobs: int = 2,
    ) -> pd.DataFrame:
        """`predict_pairs` of images and folders paired by what they carry
        (`breastcad.predict_pairs.paired_table`); the rest predicted alone, with why."""
        from breastcad.predict_pairs import paired_table

        return paired_table(self, paths, batch_size, progress, jobs)

    def bilateral_decision(self, p: float) -> str:
        """The class decided for a `pair_probability` at the bilateral threshold: the
        positive class, or below it the other one ('normal', 'benign')."""
        if p >= self.bilateral["threshold"]:
            return self.classes[self.positive]
        others = [c for i, c in enumerate(self.classes) if i != self.positive]
        return others[0] if len(others) == 1 else f"not {self.classes[self.positive]}"

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(malignant) for rows already in the bundle's feature order."""
        return self.bundle.estimator.predict_proba(np.asarray(X, dtype=np.float64))

    def features_from_frame(self, frame: pd.DataFrame, source: str = "input") -> np.ndarray:
        """The bundle's features from a table; accepts UCI/Kaggle and scikit-learn names. A
        cell that is not a number is an error naming it (see `predict_frame` for rows)."""
        return numeric_features(self._feature_columns(frame, source), source)

    def _feature_columns(self, frame: pd.DataFrame, source: str) -> pd.DataFrame:
        """The bundle's feature columns of `frame`, by canonical name; missing ones named."""
        renamed = frame.rename(columns=lambda c: canonical_feature_name(str(c)))
        missing = [f for f in self.bundle.feature_names if f not in renamed.columns]
        if missing:
            raise DataError(
                f"{len(missing)} features the model needs are missing: {', '.join(missing[:8])}"
                + (" ..." if len(missing) > 8 else ""),
                source,
            )
        return renamed[self.bundle.feature_names]

    def predict_frame(self, frame: pd.DataFrame, source: str = "input") -> pd.DataFrame:
        """Per row: id (when the table has one), P(malignant), predicted class, threshold, the
        features that were missing and filled with the training medians (`imputed`, empty
        when none was), and `error`: a row with a value that is not a finite number (text,
        inf) is not predicted, its cells named there, and the other rows are. Where the
        bundle keeps the hashes of the rows it was refitted on, `seen_in_training` marks them
        ("same"): its answers on them are not those it would give a new sample."""
        X, errors = numeric_rows(self._feature_columns(frame, source))
        ok = np.array([not e for e in errors], dtype=bool)
        proba = np.full(len(X), np.nan)
        if ok.any():
            proba[ok] = self.predict_proba(X[ok])
        names = self.bundle.feature_names
        out = pd.DataFrame(
            {
                "p_malignant": proba,
                "prediction": np.where(
                    ok, np.where(proba >= self.threshold, "malignant", "benign"), ""
                ),
                "threshold": self.threshold,
                "imputed": [
                    ";".join(n for n, gap in zip(names, row, strict=True) if gap) if good else ""
                    for row, good in zip(np.isnan(X), ok, strict=True)
                ],
                "error": errors,
            }
        )
        trained = self.bundle.training_hashes()
        if trained is not None:
            seen = ok & np.isin(row_hashes(X), trained[0]["rows"])
            out["seen_in_training"] = np.where(seen, "same", "")
        if "id" in frame.columns:
            out.insert(0, "id", frame["id"].to_numpy())
        return out

    def predict_csv(self, path: str | Path) -> pd.DataFrame:
        return self.predict_frame(read_csv(Path(path)), str(path))
