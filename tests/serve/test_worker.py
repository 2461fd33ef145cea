"""The inference thread: concurrent requests are batched and each gets its own answer."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from breastcad.bundle import load_bundle
from breastcad.predict import Predictor
from breastcad.serve.worker import InferenceWorker
from tests.conftest import make_image_bundle


class Recording(Predictor):
    """The real predictor, recording batch sizes and the thread it runs on; the first call
    waits until released, so the others pile up behind it."""

    def __init__(self, bundle) -> None:
        super().__init__(bundle)
        self.sizes: list[int] = []
        self.threads: set[int] = set()
        self.release = threading.Event()

    def predict_batch(self, pixels, explain=None):
        self.release.wait(timeout=10)
        self.sizes.append(len(pixels))
        self.threads.add(threading.get_ident())
        return super().predict_batch(pixels, explain)


def test_concurrent_requests_are_batched_on_one_thread(bundles):
    predictor = Recording(load_bundle(bundles["image"]))
    worker = InferenceWorker(max_batch=16)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (9, 50, 50, 3), dtype=np.uint8)

    async def main():
        first = asyncio.ensure_future(worker.predict(predictor, images[0]))
        await asyncio.sleep(0.2)  # the worker now holds image 0
        rest = [
            asyncio.ensure_future(worker.predict(predictor, im, explain=i == 3))
            for i, im in enumerate(images[1:], 1)
        ]
        await asyncio.sleep(0.2)
        predictor.release.set()
        return await asyncio.gather(first, *rest)

    results = asyncio.run(main())
    worker.close()
    assert predictor.sizes == [1, 8] and len(predictor.threads) == 1
    expected = Predictor(predictor.bundle).predict_batch(images)
    for got, want in zip(results, expected, strict=True):
        assert got.probabilities == pytest.approx(want.probabilities, abs=1e-6)
        np.testing.assert_array_equal(got.pixels, want.pixels)
    assert [r.cam is not None for r in results] == [i == 3 for i in range(9)]


class Limited(Recording):
    """As if only three images fitted in memory at once (a full-resolution mammogram model)."""

    def batch_that_fits(self, requested: int) -> int:
        return min(requested, 3)


def test_waiting_requests_are_split_into_batches_that_fit(bundles):
    predictor = Limited(load_bundle(bundles["image"]))
    worker = InferenceWorker(max_batch=16)
    images = np.random.default_rng(1).integers(0, 256, (8, 50, 50, 3), dtype=np.uint8)

    async def main():
        first = asyncio.ensure_future(worker.predict(predictor, images[0]))
        await asyncio.sleep(0.2)
        rest = [asyncio.ensure_future(worker.predict(predictor, im)) for im in images[1:]]
        await asyncio.sleep(0.2)
        predictor.release.set()
        return await asyncio.gather(first, *rest)

    results = asyncio.run(main())
    worker.close()
    assert predictor.sizes == [1, 3, 3, 1]  # seven waiting: 3 + 3 + 1, each its own answer
    expected = Predictor(predictor.bundle).predict_batch(images)
    for got, want in zip(results, expected, strict=True):
        assert got.probabilities == pytest.approx(want.probabilities, abs=1e-6)


def test_a_failure_reaches_every_waiting_request(bundles):
    class Failing(Predictor):
        def predict_batch(self, pixels, explain=None):
            raise RuntimeError("boom")

    worker, failing = InferenceWorker(), Failing(load_bundle(bundles["image"]))
    pixels = np.zeros((50, 50, 3), np.uint8)

    async def main():
        return await asyncio.gather(
            worker.predict(failing, pixels), worker.predict(failing, pixels), return_exceptions=True
        )

    outcomes = asyncio.run(main())
    worker.close()
    assert all(isinstance(o, RuntimeError) for o in outcomes)


def test_models_load_on_the_inference_thread_and_errors_reach_the_caller(bundles, tmp_path):
    from breastcad.config import ServiceSettings
    from breastcad.errors import BundleError
    from breastcad.serve import create_app
    from breastcad.serve.models import ServedModels

    models = ServedModels.load([bundles["image"], bundles["tabular"]], "auto")
    loader = models.worker.run(threading.get_ident)
    assert loader != threading.get_ident() and len(models.predictors) == 2
    models.close()
    with pytest.raises(BundleError, match="not a bundle folder"):
        create_app(ServiceSettings(models=[tmp_path / "missing"]))
    from breastcad.errors import ConfigError

    twin = tmp_path / "twin"  # the same network, another manifest: the same model id
    make_image_bundle(twin, bilateral={"slope": 1.0, "intercept": 0.0, "threshold": 0.5})
    with pytest.raises(ConfigError, match="hold the same model files"):
        ServedModels.load([bundles["image"], twin], "auto")


def test_served_image_networks_run_on_the_device_asked_for_and_tabular_models_on_the_cpu(
    bundles,
):
    """`serve --device`: cpu puts the image network there; gpu puts it on the GPU, or, on a
    machine without one (as here), refuses to start with a line saying why; a tabular model
    served beside it runs on the CPU either way."""
    import torch

    from breastcad.devices import device_of
    from breastcad.errors import ConfigError
    from breastcad.serve.models import ServedModels

    both = [bundles["image"], bundles["tabular"]]
    on_cpu = ServedModels.load(both, "torch", "cpu")
    try:
        kinds = {p.kind: p.device.type for p in on_cpu.predictors.values()}
        assert kinds == {"image": "cpu", "tabular": "cpu"}
    finally:
        on_cpu.close()
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="PyTorch sees no CUDA GPU here"):
            ServedModels.load(both, "torch", "gpu")
        return
    on_gpu = ServedModels.load(both, "torch", "gpu")
    try:
        image = next(p for p in on_gpu.predictors.values() if p.kind == "image")
        assert device_of(image.network).type == "cuda"
        assert {p.device.type for p in on_gpu.predictors.values()} == {"cuda", "cpu"}
    finally:
        on_gpu.close()
