"""The breastcad command line: one Typer app (`breastcad --help`, or `python -m breastcad`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import ValidationError

from breastcad.errors import BreastcadError, ConfigError, Interrupted

app = typer.Typer(
    help="breastcad: computer-aided diagnosis of breast cancer, evaluated honestly. "
    "Research use only; not a medical device.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def clear_errors(func: F) -> F:
    """Report bad input as one line naming the file and the problem (exit 2), not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (Interrupted, KeyboardInterrupt) as exc:  # Ctrl-C: what was kept, no traceback
            typer.echo(f"\ninterrupted{': ' + str(exc) if str(exc) else ''}", err=True)
            raise typer.Exit(130) from None
        except (BreastcadError, FileNotFoundError, ValidationError, yaml.YAMLError) as exc:
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _one_line(exc: Exception) -> str:
    """Settings errors as `where: what (got value)`, without pydantic's links and types."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        got = repr(error.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        parts.append(f"{where}: {error['msg']} (got {got})")
    return "invalid settings: " + "; ".join(parts)


DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="A labelled CSV (UCI/Kaggle data.csv or any CSV with a label column). "
        "Default: the WDBC data that ships with scikit-learn.",
    ),
]
LabelOpt = Annotated[str | None, typer.Option(help="Label column (default: 'diagnosis').")]
PositiveOpt = Annotated[
    str | None,
    typer.Option(help="Label value meaning malignant (inferred for M/B, malignant/benign, 1/0)."),
]
IdOpt = Annotated[str | None, typer.Option(help="Row id column (default: 'id' when present).")]
DeviceOpt = Annotated[
    str,
    typer.Option(
        help="Image bundles: where the network runs: cpu (the same answers on every machine), "
        "auto (the GPU when there is one) or gpu (an error when there is none)."
    ),
]


def _data_config(
    data: Path | None, label_column: str | None, positive_label: str | None, id_column: str | None
) -> dict[str, Any]:
    if data is None:
        return {"source": "wdbc"}
    return {
        "source": "csv",
        "path": data,
        "label_column": label_column,
        "positive_label": positive_label,
        "id_column": id_column,
    }


@app.command()
@clear_errors
def train(
    out: Annotated[Path, typer.Option(help="Run folder to write.")] = Path("runs/wdbc"),
    config: Annotated[
        Path | None,
        typer.Option(help="A saved config.yaml; options given on the command line override it."),
    ] = None,
    data: DataOpt = None,
    label_column: LabelOpt = None,
    positive_label: PositiveOpt = None,
    id_column: IdOpt = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Model(s) to evaluate; see `breastcad models`."),
    ] = None,
    protocol: Annotated[
        list[str] | None,
        typer.Option(
            help="'published' (80/20 split, random_state 0, threshold 0.5) and/or 'cv' "
            "(repeated stratified k-fold)."
        ),
    ] = None,
    folds: Annotated[int | None, typer.Option(help="CV folds (default 10).")] = None,
    repeats: Annotated[int | None, typer.Option(help="CV repeats (default 10).")] = None,
    threshold: Annotated[
        str | None,
        typer.Option(help="Threshold policy for CV and bundles: youden, fixed or min_sensitivity."),
    ] = None,
    threshold_value: Annotated[
        float | None, typer.Option(help="The fixed threshold, or the sensitivity target.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the models' epochs.")] = None,
    early_stopping: Annotated[
        int | None,
        typer.Option(
            help="Stop PyTorch models after this many epochs without a lower validation loss "
            "and restore the best weights (default: off, as published)."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    jobs: Annotated[int | None, typer.Option(help="CV folds fitted in parallel.")] = None,
    bundle: Annotated[
        list[str] | None,
        typer.Option(help="Model(s) to refit on all data and save as bundles (default: the best)."),
    ] = None,
    training_hashes: Annotated[
        bool,
        typer.Option(
            help="Keep a hash of every row's features in each bundle, so that evaluate "
            "recognises the rows it was refitted on in any table. Whoever holds a row can then "
            "tell whether the bundle learnt from it: --no-training-hashes for bundles that "
            "leave the institution."
        ),
    ] = True,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the run already in --out (refused without it).")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Evaluate models under the published and the honest protocol, write plots, a report and
    bundles into one run folder."""
    from breastcad.config import RunConfig
    from breastcad.experiment import run_experiment
    from breastcad.runinfo import refuse_earlier_run

    base = RunConfig.from_yaml(config).model_dump() if config else RunConfig().model_dump()
    if data is not None or config is None:
        base["data"] = _data_config(data, label_column, positive_label, id_column)
    overrides = {"models": model, "seed": seed, "n_jobs": jobs, "bundle_models": bundle}
    base.update({k: v for k, v in overrides.items() if v is not None})
    if protocol:
        known = {p["kind"]: p for p in base["protocols"]}
        base["protocols"] = [known.get(k, {"kind": k}) for k in protocol]
    for p in base["protocols"]:
        p.update(
            {k: v for k, v in {"n_splits": folds, "n_repeats": repeats}.items() if v is not None}
        )
    if threshold is not None:
        base["threshold"]["policy"] = threshold
    if threshold_value is not None:
        base["threshold"]["value"] = threshold_value
    if epochs is not None:
        base["train"]["epochs"] = epochs
    if early_stopping is not None:
        base["train"]["early_stopping_patience"] = early_stopping
    base["train"]["progress"] = not quiet
    if not training_hashes:
        base["training_hashes"] = False
    cfg = RunConfig.model_validate(base)
    refuse_earlier_run(out, overwrite)
    results = run_experiment(cfg, out, progress=not quiet)
    _print_summary(results)
    typer.echo(f"\nreport: {out / 'report.html'}  (and report.md, results.json, plots/)")
    for name, path in results["bundles"].items():
        typer.echo(f"bundle: {out / path}  ({name}, refitted on all data)")


def _print_summary(results: dict[str, Any]) -> None:
    for _key, proto in results["protocols"].items():
        typer.echo(f"\n{proto['description']}  (malignant = positive)")
        typer.echo(
            f"{'model':<10} {'accuracy':>22} {'sensitivity':>22} {'specificity':>22} "
            f"{'ROC AUC':>22}"
        )
        for name, m in proto["models"].items():
            cells = []
            for metric in ("accuracy", "sensitivity", "specificity", "roc_auc"):
                s = m["summary"][metric]
                cells.append(f"{s['mean']:.3f} ({s['ci_low']:.3f}-{s['ci_high']:.3f})")
            typer.echo(f"{name:<10} " + " ".join(f"{c:>22}" for c in cells))


@app.command()
@clear_errors
def evaluate(
    model: Annotated[Path, typer.Option("--model", help="A bundle folder.")],
    data: DataOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for metrics, plots and report.")] = Path(
        "runs/evaluation"
    ),
    label_column: LabelOpt = None,
    positive_label: PositiveOpt = None,
    id_column: IdOpt = None,
    dataset: Annotated[
        str | None, typer.Option(help="Image bundles: the dataset layout (see `data sources`).")
    ] = None,
    root: Annotated[Path | None, typer.Option(help="Image bundles: the dataset folder.")] = None,
    split: Annotated[
        Path | None, typer.Option(help="Image bundles: a split file; evaluate one partition.")
    ] = None,
    partition: Annotated[str, typer.Option(help="Partition of --split to evaluate.")] = "test",
    class_map: Annotated[
        list[str] | None,
        typer.Option(
            "--class-map",
            help="Image bundles: MODEL=DATA, a model class as the data names it (repeatable; "
            "e.g. idc=malignant for an IDC patch model on BreakHis); DATA may join classes "
            "the model does not tell apart (normal_or_benign=normal+benign), MODEL classes "
            "the data does not (normal+benign=normal_or_benign: their probabilities summed; "
            "never the positive class).",
        ),
    ] = None,
    option: OptionOpt = None,
    device: DeviceOpt = "cpu",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Evaluate a bundle on labelled data at its stored threshold (and, for images, its stored
    temperature), with bootstrap intervals (resampling patients where the data has them)."""
    if dataset is not None or root is not None:
        from breastcad.evaluation.image_evaluation import evaluate_image_bundle

        if dataset is None or root is None:
            raise BreastcadError("image evaluation needs both --dataset and --root")
        options = _parse_options(option)
        mapped = {}
        for item in class_map or []:
            name, sep, as_named = item.partition("=")
            if not (sep and name.strip() and as_named.strip()):
                raise ConfigError(f"--class-map needs MODEL=DATA, got '{item}'")
            mapped[name.strip()] = as_named.strip()
        results = evaluate_image_bundle(
            model,
            dataset,
            root,
            out,
            options,
            split,
            partition,
            progress=not quiet,
            class_map=mapped,
            device=device,
        )
        from breastcad.cli_image import print_image_summary

        print_image_summary(results)
        typer.echo(f"\nreport: {out / 'report.html'}")
        return
    from breastcad.bundle import read_manifest
    from breastcad.config import TabularDataConfig
    from breastcad.evaluation.tabular_evaluation import evaluate_bundle

    if class_map:
        raise ConfigError("--class-map is for image bundles (with --dataset and --root)")
    if device != "cpu":
        raise ConfigError("--device is for image bundles (with --dataset and --root)")
    if read_manifest(model).get("kind") == "image":
        raise BreastcadError(f"{model}: an image bundle; give --dataset and --root")
    cfg = TabularDataConfig(**_data_config(data, label_column, positive_label, id_column))
    results = evaluate_bundle(model, cfg, out)
    if "seen_in_training" in results:
        typer.echo(f"warning: evaluated on {results['seen_in_training']}", err=True)
    _print_summary(results)
    typer.echo(f"\nreport: {out / 'report.html'}")


@app.command()
@clear_errors
def report(run_dir: Annotated[Path, typer.Argument(help="A run folder.")]) -> None:
    """Re-render report.md and report.html of a run folder from its results.json."""
    from breastcad.evaluation.report import write_report

    md, page = write_report(run_dir)
    typer.echo(f"{md}\n{page}")


@app.command("models")
def models_command() -> None:
    """List the registered models."""
    from breastcad.models import get_spec, list_models

    names = list_models()
    width = max(map(len, names))
    for name in names:
        spec = get_spec(name)
        typer.echo(f"{name:<{width}} {spec.modality:<14} {spec.family:<10} {spec.description}")


OptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        help="Adapter option KEY=VALUE (JSON value or plain text), e.g. "
        "task=benign_vs_malignant for mini-MIAS or BUSI (BUSI: leaves the normal images out) "
        "or magnifications=[200] for BreakHis.",
    ),
]


def parse_correlation(text: str) -> float | None:
    """`--correlation`: a number above 0 and at most 1, or 'none'."""
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise ConfigError(f"--correlation takes a number above 0 and at most 1, or none: {text}")
    return value


def parse_size(text: str) -> int | list[int]:
    """'224' -> 224; '2250x1500' -> [2250, 1500] (height x width)."""
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise BreastcadError(f"--size must be N or HEIGHTxWIDTH, got '{text}'")
    values = [int(p) for p in parts]
    return values[0] if len(values) == 1 else values


def _parse_options(options: list[str] | None) -> dict[str, Any]:
    import json

    kwargs: dict[str, Any] = {}
    for item in options or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise BreastcadError(f"--option needs KEY=VALUE, got '{item}'")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


from breastcad import (  # noqa: E402, F401  (register their commands)
    cli_data,
    cli_image,
    cli_predict,
    cli_service,
)
