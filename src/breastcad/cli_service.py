"""`breastcad serve`, `export`, `explain` and `deid`: using a trained bundle beyond `predict`."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from breastcad.cli import DeviceOpt, app, clear_errors
from breastcad.errors import ConfigError, DataError


@app.command()
@clear_errors
def serve(
    model: Annotated[
        list[Path], typer.Option("--model", help="A bundle folder (repeat for several).")
    ],
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    runtime: Annotated[
        str, typer.Option(help="auto (ONNX Runtime when exported, else torch), torch or onnx.")
    ] = "auto",
    device: DeviceOpt = "cpu",
    max_upload_mb: Annotated[float, typer.Option(help="Larger uploads get 413.")] = 20.0,
    api_key_env: Annotated[
        str | None,
        typer.Option(help="Require X-API-Key equal to this environment variable's value."),
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow this origin by CORS (off by default).")
    ] = None,
    store_uploads: Annotated[
        Path | None, typer.Option(help="Keep uploads in this folder (default: never stored).")
    ] = None,
) -> None:
    """Serve bundles: the upload page at /, the REST API at /api/v1 (docs at /docs)."""
    import uvicorn

    from breastcad.config import ServiceSettings
    from breastcad.serve import create_app

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {api_key_env}: that environment variable is empty")
    settings = ServiceSettings(
        models=model,
        runtime=runtime,
        device=device,
        host=host,
        port=port,
        max_upload_mb=max_upload_mb,
        api_key=api_key,
        cors_origins=cors_origin or [],
        store_uploads=store_uploads,
    )
    server = create_app(settings)
    ids = ", ".join(
        f"{k} ({p.runtime} on {p.device})" for k, p in server.state.models.predictors.items()
    )
    typer.echo(f"serving {ids} on http://{host}:{port}  (research use only)")
    uvicorn.run(server, host=host, port=port, log_level="info")


@app.command()
@clear_errors
def export(
    model: Annotated[Path, typer.Option("--model", help="An image bundle folder.")],
    format: Annotated[str, typer.Option("--format", help="onnx.")] = "onnx",
    check: Annotated[
        list[Path] | None,
        typer.Option(help="Real images or folders to check parity on (repeatable; the first 256)."),
    ] = None,
) -> None:
    """Add model.onnx to the bundle after checking it against PyTorch (max |diff| <= 1e-4)."""
    from breastcad.export import export_onnx

    if format != "onnx":
        raise ConfigError(f"unknown export format '{format}'; breastcad exports onnx")
    record = export_onnx(model, check or [])
    typer.echo(
        f"{model / 'model.onnx'}: opset {record['opset']}, max |logit difference| "
        f"{record['parity_max_abs_diff']:.2e} on {record['parity_checked_on']}"
    )


@app.command()
@clear_errors
def share(
    model: Annotated[Path, typer.Option("--model", help="A bundle folder.")],
    out: Annotated[Path, typer.Option(help="A new folder for the copy.")],
) -> None:
    """Copy a bundle for use outside the institution: without the hashes of the images or rows
    it learnt from (with them, whoever holds an image can tell whether it was one); same model
    files and id. The bundle itself is left as it is."""
    from breastcad.bundle import copy_without_training_hashes, load_bundle

    left_out = copy_without_training_hashes(model, out)
    copy = load_bundle(out)
    if left_out is None:
        typer.echo(f"{out}: a copy of {model} ({copy.model_id}), which kept no training hashes")
        return
    what = f"{left_out['images']} images" if "images" in left_out else f"{left_out['samples']} rows"
    typer.echo(
        f"{out}: a copy of {model} ({copy.model_id}) without the hashes of its {what}; "
        "evaluate cannot recognise its training data with this copy"
    )


@app.command()
@clear_errors
def explain(
    targets: Annotated[
        list[str],
        typer.Argument(
            help="Images or folders; or the word `slide` for the IDC slide view (with --root "
            "and --patient)."
        ),
    ],
    model: Annotated[Path, typer.Option("--model", help="An image bundle folder.")],
    out: Annotated[Path, typer.Option(help="Folder for the PNG overlays.")] = Path("explain"),
    root: Annotated[Path | None, typer.Option(help="slide: the IDC dataset folder.")] = None,
    patient: Annotated[str | None, typer.Option(help="slide: the patient id.")] = None,
    device: DeviceOpt = "cpu",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Grad-CAM overlays of the predicted class for images, or `explain slide`: a patient's IDC
    slide rebuilt from its patches, annotation beside predicted probability."""
    from breastcad.predict import Predictor

    predictor = Predictor.from_bundle(model, device=device)
    if targets[0] == "slide":
        if root is None or patient is None:
            raise ConfigError("explain slide needs --root (the IDC folder) and --patient")
        from breastcad.explain.slide import slide_heatmap

        result = slide_heatmap(predictor, root, patient, out, progress=not quiet)
        auc = "n/a (one class)" if result.auc is None else f"{result.auc:.3f}"
        typer.echo(
            f"{result.png}\n{result.csv}\n{result.patches} patches, {result.idc_patches} "
            f"annotated IDC, patch-level AUC {auc}"
        )
        return
    _explain_images(predictor, targets, out, quiet)


def overlay_names(files: list[Path]) -> list[Path]:
    """Each image's overlay name, `<stem>_gradcam.png`; where two images would share one
    (CBIS-DDSM names every file 1-1.dcm), the folders below the images' common folder are kept
    too, and beside them the suffix where two still meet (scan.png and scan.dcm)."""
    plain = [Path(f"{f.stem}_gradcam.png") for f in files]
    if len(set(plain)) == len(plain):
        return plain
    absolute = [f.resolve() for f in files]
    common = Path(os.path.commonpath([a.parent for a in absolute]))
    relative = [a.relative_to(common) for a in absolute]
    named = [r.parent / f"{r.stem}_gradcam.png" for r in relative]
    counts = Counter(named)
    return [
        r.parent / f"{r.name}_gradcam.png" if counts[n] > 1 else n
        for r, n in zip(relative, named, strict=True)
    ]


def _explain_images(predictor, targets: list[str], out: Path, quiet: bool) -> None:
    from PIL import Image
    from tqdm.auto import tqdm

    from breastcad.data.imaging import read_image
    from breastcad.predict import expand_paths

    files = expand_paths(targets)
    if not files:
        raise DataError("no images found", ", ".join(targets))
    out.mkdir(parents=True, exist_ok=True)
    names = overlay_names(files)
    for path, name in tqdm(
        list(zip(files, names, strict=True)), desc="explaining", unit="img", disable=quiet
    ):
        try:
            image = read_image(path)
            result = predictor.predict_image(image, explain=True)
        except DataError as exc:
            typer.echo(f"skipped {path}: {exc.problem}", err=True)
            continue
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(predictor.explanation_picture(image, result.cam)).save(target)
        probs = ", ".join(f"{k} {v:.3f}" for k, v in result.probabilities.items())
        typer.echo(f"{path}: {result.prediction} ({probs}) -> {target}")


@app.command()
@clear_errors
def deid(
    source: Annotated[Path, typer.Argument(help="A DICOM file or a folder of them.")],
    out: Annotated[Path, typer.Argument(help="Folder for the de-identified copies.")],
    key_file: Annotated[
        Path | None,
        typer.Option(
            help="Secret key for consistent pseudonyms/UIDs across runs (created if missing); "
            "default: a random key, so outputs cannot be linked back."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """De-identify DICOM files (PS3.15 basic profile): report what changed per file."""
    import pandas as pd

    from breastcad.data.deid import deidentify_folder

    key = None
    if key_file is not None:
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_bytes(os.urandom(32))
            key_file.chmod(0o600)
        key = key_file.read_bytes()
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise ConfigError(f"{out}: write the copies outside the source folder {source}")
    rows, problems = deidentify_folder(source, out, key, progress=not quiet)
    for problem in problems:
        typer.echo(f"skipped {problem}", err=True)
    report = out / "deid_report.csv"
    pd.DataFrame(rows).to_csv(report, index=False)
    changed = sum(bool(r["removed"] or r["emptied"] or r["replaced"]) for r in rows)
    private = sum(r["private_tags_removed"] for r in rows)
    typer.echo(
        f"{len(rows)} files de-identified into {out} ({changed} had identifying attributes, "
        f"{private} private tags removed); report: {report}"
    )
    for row in rows:
        if row["warnings"]:
            typer.echo(f"warning {row['file']}: {row['warnings']}", err=True)
