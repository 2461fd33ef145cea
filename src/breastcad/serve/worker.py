"""One inference thread per served model, batching the requests that arrive together.

Why a thread of its own: PyTorch's CPU kernels run on an OpenMP team that belongs to the
calling thread. Called from a web server's pool of threads, every pool thread grows its own team
and the idle teams spin, so a model ran 4x slower per image in the server than in-process
(measured with benchmarks/bench_service.py before this change). Here every forward pass runs on
the same thread; requests waiting while it works are stacked into one batch (up to
`max_batch`), which is what makes concurrent clients cheaper than one after another.
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
    """Runs `predictor` on one daemon thread; `predict` and `call` are awaitable."""

    def __init__(self, predictor: Predictor, max_batch: int = 32) -> None:
        self.predictor, self.max_batch = predictor, max_batch
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="breastcad-inference", daemon=True)
        self._thread.start()

    async def predict(self, pixels: np.ndarray, explain: bool = False) -> ImagePrediction:
        """One prepared image (H, W, C) -> its prediction, batched with concurrent ones."""
        future: Future = Future()
        self._queue.put(("image", pixels, explain, future))
        return await asyncio.wrap_future(future)

    async def call(self, func: Callable[[], Any]) -> Any:
        """Run `func` on the inference thread (e.g. a tabular prediction)."""
        future: Future = Future()
        self._queue.put(("call", func, None, future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._queue.put(("stop", None, None, None))

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < self.max_batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            images = [item for item in items if item[0] == "image"]
            if images:
                self._predict(images)
            for kind, func, _, future in items:
                if kind == "call":
                    _settle(future, func)
                elif kind == "stop":
                    return

    def _predict(self, items: list[tuple[Any, ...]]) -> None:
        try:
            pixels = np.stack([item[1] for item in items])
            results = self.predictor.predict_batch(pixels, [item[2] for item in items])
        except BaseException as exc:  # every waiting request hears of the failure
            for item in items:
                item[3].set_exception(exc)
            return
        for item, result in zip(items, results, strict=True):
            item[3].set_result(result)


def _settle(future: Future, func: Callable[[], Any]) -> None:
    try:
        future.set_result(func())
    except BaseException as exc:
        future.set_exception(exc)
