"""What every result records about how it was obtained: versions, time, host, seed."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE_DIR = Path(__file__).parent
_PACKAGES = ("breastcad", "torch", "lightning", "torchmetrics", "scikit-learn", "numpy", "pandas")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(at: Path = PACKAGE_DIR) -> str | None:
    """The commit of the breastcad checkout, when it is one (an installed wheel has none,
    also where its environment lies inside some other repository)."""
    if not _tracked(at):
        return None
    return (_git(at, "rev-parse", "HEAD") or "").strip() or None


def uncommitted_changes(at: Path = PACKAGE_DIR) -> bool | None:
    """Whether the package's source in the checkout differs from its commit (files changed,
    added or deleted under `at`), so that the commit alone does not say what code ran; None
    where there is no checkout."""
    if not _tracked(at):
        return None
    out = _git(at, "status", "--porcelain", "--", ".")
    return None if out is None else bool(out.strip())


def _tracked(at: Path) -> bool:
    """Whether `at` is a folder of a git checkout that tracks its `__init__.py`."""
    return bool((_git(at, "ls-files", "--", "__init__.py") or "").strip())


def _git(at: Path, *args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=at, capture_output=True, text=True, timeout=5, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def run_info(seed: int) -> dict[str, object]:
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "uncommitted_changes": uncommitted_changes(),
        "platform": platform.platform(),
    }


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def to_jsonable(value: Any) -> Any:
    """Plain JSON values (RFC 8259: no NaN or Infinity): numpy scalars and arrays unwrapped,
    paths as text, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def refuse_training_run_folder(out: Path) -> None:
    """An evaluation writes report, results.json, predictions.csv and plots into `out`: refuse a
    folder that holds a training run (its config.yaml), whose results they would replace."""
    from breastcad.errors import ConfigError

    if (Path(out) / "config.yaml").is_file():
        raise ConfigError(
            f"{out} holds a training run (config.yaml); an evaluation written there would "
            "replace the run's report, results.json and predictions.csv: choose another --out"
        )


def refuse_earlier_run(out: Path, overwrite: bool, resume: bool | None = None) -> None:
    """A new run in `out` would replace the results and bundle of the run there (or start an
    interrupted one over, its checkpoints lost): refuse unless `overwrite` (or `resume`,
    where the command can continue a run; None where it cannot)."""
    from breastcad.errors import ConfigError

    kept = [name for name in RUN_OUTPUTS if (Path(out) / name).exists()]
    if overwrite or resume or not kept:
        return
    cont = "--resume continues it, " if resume is not None else ""
    raise ConfigError(
        f"{out} holds an earlier run ({', '.join(kept)}): {cont}--overwrite replaces it, or "
        "choose another --out (nothing was changed)"
    )


RUN_OUTPUTS = ("results.json", "bundle", "bundles", "checkpoints")
"""What a run leaves that is worth keeping: a run that stopped at its settings or its data
wrote none of them, and may be started again as it is."""


def private_folder(path: Path) -> Path:
    """`path` and any missing parents, created readable by this user alone (0700): decoded
    patient images (the decode cache) and stored uploads are not left for every account of a
    shared machine to read. A folder that exists already keeps its mode."""
    path = Path(path)
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    return path


def write_private(path: Path, data: bytes = b"") -> None:
    """Create (or replace) `path` readable and writable by this user alone (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def keep_private(path: Path, mode: int) -> None:
    """Take group and other access away from a cache entry this package wrote before it made
    them private (`private_folder`, `write_private`); never an error."""
    try:
        if Path(path).stat().st_mode & 0o077:
            Path(path).chmod(mode)
    except OSError:
        pass
