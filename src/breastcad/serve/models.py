"""The models a server holds: bundles loaded on the one inference thread, by model id, and
found by id or name for each request.
"""

from __future__ import annotations

from pathlib import Path

from breastcad.bundle import load_bundle
from breastcad.errors import ConfigError
from breastcad.predict import Predictor
from breastcad.serve.errors import ApiError
from breastcad.serve.worker import InferenceWorker


def _loaded(path: Path, runtime: str, device: str) -> Predictor:
    """A bundle's predictor with its memory need per image worked out (a second or two for
    the larger backbones), so that no request waits for it. `device` is for image networks; a
    tabular model runs on the CPU."""
    bundle = load_bundle(path)
    predictor = Predictor(bundle, runtime, device if bundle.kind == "image" else "cpu")
    if predictor.kind == "image":
        _ = predictor.bytes_per_image
    return predictor


class ServedModels:
    """The predictors a server holds, by model id, and the one inference thread that loads
    and runs them all (`InferenceWorker`; concurrent requests are batched per model)."""

    def __init__(self, predictors: list[Predictor], worker: InferenceWorker | None = None) -> None:
        self.predictors: dict[str, Predictor] = {}
        for p in predictors:  # one id, one model: a second would silently replace the first
            twin = self.predictors.setdefault(p.bundle.model_id, p)
            if twin is not p:
                raise ConfigError(
                    f"{twin.bundle.path} and {p.bundle.path} hold the same model files (id "
                    f"{p.bundle.model_id}), so requests could not tell them apart; serve one"
                )
        self.worker = worker or InferenceWorker()

    @classmethod
    def load(cls, paths: list[Path], runtime: str, device: str = "cpu") -> ServedModels:
        """Load bundles on the inference thread (see `serve.worker` for why)."""
        worker = InferenceWorker()
        try:
            loaded = [worker.run(lambda p=p: _loaded(p, runtime, device)) for p in paths]
            return cls(loaded, worker)
        except Exception:
            worker.close()  # no thread left behind by a refused start
            raise

    def close(self) -> None:
        self.worker.close()

    def get(self, ref: str | None, kind: str) -> tuple[str, Predictor]:
        """A model by id or name; with no `ref`, the only model of this kind."""
        candidates = {k: p for k, p in self.predictors.items() if p.kind == kind}
        if ref is None:
            if len(candidates) == 1:
                return next(iter(candidates.items()))
            if not candidates:
                raise ApiError(422, "no_model", f"no {kind} model is served here")
            raise ApiError(
                422,
                "choose_model",
                f"several {kind} models are served; choose one with model=: "
                + ", ".join(candidates),
            )
        for key, predictor in self.predictors.items():
            if ref in (key, predictor.bundle.manifest["model"]["name"]):
                if predictor.kind != kind:
                    raise ApiError(
                        422, "wrong_kind", f"model {key} is a {predictor.kind} model, not {kind}"
                    )
                return key, predictor
        raise ApiError(
            404, "unknown_model", f"no model '{ref}'; served: {', '.join(self.predictors)}"
        )
