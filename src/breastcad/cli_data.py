"""`breastcad data`: list the supported layouts, audit a dataset, split it, fill the cache."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from breastcad.cli import (
    OptionOpt,
    _parse_options,
    app,
    clear_errors,
    parse_correlation,
    parse_size,
)
from breastcad.errors import BreastcadError

data_app = typer.Typer(
    help="Image datasets: list sources, audit, split, cache.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

DatasetArg = Annotated[
    str | None,
    typer.Argument(help="busi, breastmnist, mini-mias, idc, breakhis, dicom or folder."),
]
RootArg = Annotated[
    Path | None, typer.Argument(help="The dataset folder (or .npz file), as downloaded.")
]
# the same two as options, as `train-image` and `evaluate` take them
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", help="Instead of the DATASET argument.")
]
RootOpt = Annotated[Path | None, typer.Option("--root", help="Instead of the ROOT argument.")]
DistanceOpt = Annotated[int, typer.Option(help="Near-duplicate pHash distance (bits).")]
CorrelationOpt = Annotated[
    str,
    typer.Option(
        help="Thumbnail correlation from which images are near duplicates too, where the data "
        "has no patient ids (frames of one lesion); 'none': the pHashes only."
    ),
]
JobsOpt = Annotated[int, typer.Option(help="Decoding processes.")]
QuietOpt = Annotated[bool, typer.Option(help="No progress bar.")]


def _where(
    dataset: str | None, root: Path | None, dataset_opt: str | None, root_opt: Path | None
) -> tuple[str, Path]:
    """The data named as arguments (DATASET ROOT) or as options (--dataset, --root)."""
    if (dataset and dataset_opt) or (root and root_opt):
        raise BreastcadError("name the data once: DATASET ROOT, or --dataset and --root")
    name, folder = dataset or dataset_opt, root or root_opt
    if not name or folder is None:
        raise BreastcadError("name the data: DATASET ROOT (or --dataset NAME --root PATH)")
    return name, folder


def _data(
    dataset: str | None,
    root: Path | None,
    dataset_opt: str | None,
    root_opt: Path | None,
    options: list[str] | None,
):
    """The named data's layout name and manifest (`_where`, then the adapter's scan)."""
    from breastcad.data.sources import scan

    name, folder = _where(dataset, root, dataset_opt, root_opt)
    return name, scan(name, folder, **_parse_options(options))


@data_app.command("sources")
def data_sources() -> None:
    """List the supported dataset layouts."""
    from breastcad.data.sources import SOURCES

    for name, fn in SOURCES.items():
        doc = (sys.modules[fn.__module__].__doc__ or "").strip()
        typer.echo(f"{name:<12} {doc.splitlines()[0] if doc else ''}")


@data_app.command("audit")
@clear_errors
def data_audit(
    dataset: DatasetArg = None,
    root: RootArg = None,
    out: Annotated[Path | None, typer.Option(help="Folder for the audit report.")] = None,
    distance: DistanceOpt = 4,
    correlation: CorrelationOpt = "0.93",
    jobs: JobsOpt = 2,
    option: OptionOpt = None,
    quiet: QuietOpt = False,
    dataset_opt: DatasetOpt = None,
    root_opt: RootOpt = None,
) -> None:
    """Unreadable files, sizes, exact and near duplicates (and label conflicts), class balance,
    samples per group; writes a report with class balance, sample grid and duplicate gallery."""
    from breastcad.data.audit import audit, audit_markdown, write_audit

    dataset, manifest = _data(dataset, root, dataset_opt, root_opt, option)
    result = audit(manifest, distance, jobs, not quiet, correlation=parse_correlation(correlation))
    out = out or Path("runs") / f"audit-{dataset}"
    write_audit(result, out)
    typer.echo(audit_markdown(result.summary).split("\n\n![")[0].strip())
    typer.echo(f"\nreport: {out / 'report.md'}")


@data_app.command("split")
@clear_errors
def data_split(
    dataset: DatasetArg = None,
    root: RootArg = None,
    out: Annotated[Path, typer.Option(help="Split file to write (JSON).")] = Path("split.json"),
    test_size: Annotated[float, typer.Option(help="Fraction for test.")] = 0.2,
    val_size: Annotated[float, typer.Option(help="Fraction for validation (0: none).")] = 0.1,
    folds: Annotated[int | None, typer.Option(help="k-fold instead of train/val/test.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    duplicates: Annotated[
        bool, typer.Option(help="Audit near duplicates and keep each cluster in one partition.")
    ] = True,
    distance: DistanceOpt = 4,
    correlation: CorrelationOpt = "0.93",
    official: Annotated[bool, typer.Option(help="Use official splits where they exist.")] = True,
    option: OptionOpt = None,
    quiet: QuietOpt = False,
    dataset_opt: DatasetOpt = None,
    root_opt: RootOpt = None,
) -> None:
    """Stratified split grouped by patient and near-duplicate cluster; no group spans two
    partitions."""
    from breastcad.data.splits import save_split, split_dataset

    dataset, manifest = _data(dataset, root, dataset_opt, root_opt, option)
    split, skipped, settings = split_dataset(
        manifest,
        test_size,
        val_size,
        folds,
        seed,
        official,
        distance if duplicates else None,
        progress=not quiet,
        correlation=parse_correlation(correlation),
    )
    for line in skipped:
        typer.echo(f"skipped {line}", err=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_split(split, out, manifest, settings)
    counts = split.groupby(["partition", "label"]).size().unstack(fill_value=0)
    typer.echo(counts.to_string())
    typer.echo(f"{split['split_group'].nunique()} groups; no group spans two partitions")
    typer.echo(f"split: {out}")


@data_app.command("cache")
@clear_errors
def data_cache(
    dataset: DatasetArg = None,
    root: RootArg = None,
    size: Annotated[str, typer.Option(help="224 or HEIGHTxWIDTH, in pixels.")] = "224",
    resize: Annotated[str, typer.Option(help="pad, crop or stretch.")] = "pad",
    channels: Annotated[str, typer.Option(help="auto, 1 or 3.")] = "auto",
    cache_dir: Annotated[
        Path | None, typer.Option(help="Default: $BREASTCAD_CACHE or ~/.cache/breastcad.")
    ] = None,
    jobs: JobsOpt = 2,
    option: OptionOpt = None,
    quiet: QuietOpt = False,
    dataset_opt: DatasetOpt = None,
    root_opt: RootOpt = None,
) -> None:
    """Decode every image once into the uint8 cache that training and evaluation read (reused
    while the files and these settings are unchanged)."""
    from breastcad.config import PreprocessConfig
    from breastcad.data.cache import ImageCache

    config = PreprocessConfig(
        size=parse_size(size),
        resize=resize,
        channels=channels if channels == "auto" else int(channels),
    )
    dataset, manifest = _data(dataset, root, dataset_opt, root_opt, option)
    cache = ImageCache.build(manifest, config, cache_dir, jobs, progress=not quiet)
    for path, problem in cache.problems.items():
        typer.echo(f"skipped {path}: {problem}", err=True)
    state = "reused" if cache.reused else "built"
    typer.echo(f"{state} {cache.path}: {int(cache.readable.sum())} images, {cache.settings}")
