"""`breastcad predict`: probabilities and classes from any bundle, tabular or image (alone,
or each breast against the woman's other one), as a CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from breastcad.cli import DeviceOpt, app, clear_errors
from breastcad.errors import BreastcadError, ConfigError


@app.command()
@clear_errors
def predict(
    model: Annotated[Path, typer.Option("--model", help="A bundle folder.")],
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="A CSV (tabular bundles), or images and folders."),
    ] = None,
    pairs: Annotated[
        Path | None,
        typer.Option(
            help="Image bundles: a CSV of one woman's two breasts per row (columns image, "
            "other); each image is also scored against the other (p_bilateral), with the "
            "bilateral fit of the bundle's run."
        ),
    ] = None,
    pair: Annotated[
        bool,
        typer.Option(
            "--pair",
            help="Image bundles: pair the given images as --pairs does, by what they carry "
            "(DICOM PatientID, examination, laterality and view; mini-MIAS names such as "
            "mdb001); images without a partner are predicted alone, with why (unpaired).",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Write predictions to this CSV (default: print them as CSV)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 32,
    jobs: Annotated[int, typer.Option(min=1, help="Processes decoding images.")] = 2,
    device: DeviceOpt = "cpu",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Probabilities and classes from a bundle (its checksums are verified first). Images:
    PNG, JPEG, PGM, TIFF, DICOM; unreadable files are listed with their problem."""
    from breastcad.predict import Predictor

    if not inputs and pairs is None:
        raise ConfigError("give images, folders or a CSV to predict (or --pairs FILE)")
    if out is not None and out.is_dir():  # found before the work, not when writing it
        raise ConfigError(f"--out {out} is a folder; give the CSV to write, e.g. {out}/pred.csv")
    predictor = Predictor.from_bundle(model, device=device)
    if pairs is not None and (predictor.kind != "image" or inputs or pair):
        raise ConfigError("--pairs is for image bundles, and takes the place of the inputs")
    if pair and predictor.kind != "image":
        raise ConfigError("--pair is for image bundles")
    if predictor.kind == "image":
        table = _predict_images(predictor, inputs, pairs, pair, batch_size, jobs, quiet)
    elif len(inputs) != 1:
        raise BreastcadError("a tabular bundle predicts one CSV at a time")
    else:
        table = predictor.predict_csv(inputs[0])
        bad = [i for i, problem in enumerate(table["error"]) if problem]
        for row in bad[:10]:  # numbered as a spreadsheet shows them (the header is row 1)
            typer.echo(f"not predicted: {inputs[0]} row {row + 2}: {table['error'][row]}", err=True)
        if len(bad) > 10:
            typer.echo(f"... {len(bad) - 10} more rows not predicted (see error)", err=True)
    _write_table(table, out, predictor.kind)


def _predict_images(predictor, inputs, pairs, pair: bool, batch_size: int, jobs: int, quiet: bool):
    """`predict`'s table for an image bundle: images alone, `--pairs` or `--pair`, in batches
    that fit memory; unreadable and unpaired files named on the terminal."""
    from breastcad.predict_pairs import read_pairs

    fits = predictor.batch_that_fits(batch_size)
    if fits < batch_size:
        typer.echo(
            f"batches of {fits} images instead of {batch_size}: each needs at least "
            f"{predictor.bytes_per_image / 1e9:.2f} GB here, and at most half the "
            "memory available is used",
            err=True,
        )
    if pairs is not None:
        table = predictor.predict_pairs(read_pairs(pairs), fits, not quiet, jobs)
    elif pair:
        table = predictor.predict_paired(inputs, fits, not quiet, jobs)
        unpaired = table.loc[table["unpaired"] != ""]
        for row in unpaired.head(10).itertuples():
            typer.echo(f"not paired {row.path}: {row.unpaired}", err=True)
        if len(unpaired) > 10:
            typer.echo(f"... {len(unpaired) - 10} more not paired (see unpaired)", err=True)
    else:
        table = predictor.predict_paths(inputs, fits, progress=not quiet, jobs=jobs)
    for row in table.loc[table["error"] != ""].itertuples():
        typer.echo(f"skipped {row.path}: {row.error}", err=True)
    warned = table.loc[table["warning"] != ""]
    for row in warned.head(10).itertuples():
        typer.echo(f"warning {row.path}: {row.warning}", err=True)
    if len(warned) > 10:
        typer.echo(f"... {len(warned) - 10} more with a warning (see warning)", err=True)
    return table


def _write_table(table, out: Path | None, kind: str) -> None:
    """`predict`'s table to `out` (or stdout), with a line on what it holds: the rows the
    bundle learnt from, those not predicted, those with imputed values."""
    if "seen_in_training" in table.columns and (table["seen_in_training"] != "").any():
        learnt = int((table["seen_in_training"] != "").sum())
        what = "images" if kind == "image" else "rows"
        typer.echo(
            f"{learnt} of these {len(table)} are {what} the bundle learnt from "
            "(seen_in_training): its answers on them are not those it would give new data",
            err=True,
        )
    skipped = int((table["error"] != "").sum()) if "error" in table.columns else 0
    what = "unreadable" if kind == "image" else "not predicted"
    note = f" ({skipped} {what}, listed with their problem)" if skipped else ""
    filled = int((table["imputed"] != "").sum()) if "imputed" in table.columns else 0
    if filled:
        note += (
            f" ({filled} row{'s' if filled != 1 else ''} had missing values, filled with the "
            "training medians: "
            "the imputed column names them)"
        )
    if out is None:  # the table is the output: stdout, so it can be piped or redirected
        typer.echo(table.to_csv(index=False), nl=False)
        typer.echo(f"{len(table) - skipped} predictions{note}", err=True)
    else:  # written to the file only: ten thousand rows are not echoed to the terminal
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
        typer.echo(f"{len(table) - skipped} predictions written to {out}{note}", err=True)
