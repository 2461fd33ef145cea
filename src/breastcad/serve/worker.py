"""One inference thread for the whole server, batching the requests that arrive together.

Why one thread, which also loads the models: PyTorch's CPU kernels run on an OpenMP team that
belongs to the calling thread. Called from a web server's pool of threads, every pool thread
grows a team; once there are more OpenMP threads than cores, GNU OpenMP throttles its spinning
and every small kernel pays for a sleep and a wake-up. Measured with EfficientNet-Lite0 at 224 px
on 2 cores: 33 ms per image on the thread that loaded the model, 61 ms on any other thread, and
4x slower from the server's thread pool (benchmarks/bench_service.py). So the models are built,
run and explained on this one thread; requests waiting while it works are stacked into one batch
per model (up to `max_batch`), which makes concurrent clients cheaper than one after another.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from breastcad.predict import ImagePrediction, Predictor


class InferenceWorker:
    """A daemon thread running every model call: `run` (blocking, e.g. loading a bundle),
    and the awaitable `predict` and `call`."""

    def __init__(self, max_batch: int = 32) -> None:
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="breastcad-inference", daemon=True)
        self._thread.start()

    def run(self, func: Callable[[], Any]) -> Any:
        """Run `func` on the inference thread and wait for its result (or its exception)."""
        future: Future = Future()
        self._queue.put(("call", func, None, future))
        return future.result()

    async def call(self, func: Callable[[], Any]) -> Any:
        """Run `func` on the inference thread (e.g. a tabular prediction)."""
        future: Future = Future()
        self._queue.put(("call", func, None, future))
        return await asyncio.wrap_future(future)

    async def predict(
        self, predictor: Predictor, pixels: np.ndarray, explain: bool = False
    ) -> ImagePrediction:
        """One prepared image (H, W, C) -> its prediction, batched with concurrent ones."""
        future: Future = Future()
        self._queue.put(("image", predictor, (pixels, explain), future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._queue.put(("stop", None, None, None))

    def _loop(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < self.max_batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            groups: dict[int, list[tuple[Any, ...]]] = {}
            for item in items:
                if item[0] == "image":
                    groups.setdefault(id(item[1]), []).append(item)
            for group in groups.values():
                _predict(group)
            for kind, func, _, future in items:
                if kind == "call":
                    _settle(future, func)
                elif kind == "stop":
                    return


def _predict(items: list[tuple[Any, ...]]) -> None:
    """One model's waiting requests, in as few forward passes as fit in memory (full-resolution
    mammograms: fewer images at once; `Predictor.batch_that_fits`)."""
    try:
        step = items[0][1].batch_that_fits(len(items))
    except BaseException as exc:
        _fail(items, exc)
        return
    for start in range(0, len(items), step):
        _predict_batch(items[start : start + step])


def _predict_batch(items: list[tuple[Any, ...]]) -> None:
    predictor = items[0][1]
    try:
        pixels = np.stack([item[2][0] for item in items])
        results = predictor.predict_batch(pixels, [item[2][1] for item in items])
    except BaseException as exc:
        _fail(items, exc)
        return
    for item, result in zip(items, results, strict=True):
        item[3].set_result(result)


def _fail(items: list[tuple[Any, ...]], exc: BaseException) -> None:
    """Every waiting request hears of the failure."""
    for item in items:
        item[3].set_exception(exc)


def _settle(future: Future, func: Callable[[], Any]) -> None:
    try:
        future.set_result(func())
    except BaseException as exc:
        future.set_exception(exc)
