"""The human-readable report of a run folder, as Markdown and HTML, rendered from results.json.

`breastcad report RUN_DIR` re-renders it; nothing here re-computes a number.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from breastcad.errors import DataError
from breastcad.evaluation.metrics import METRIC_LABELS, METRICS

NOTICE = (
    "Research use only. breastcad is not a medical device and its outputs must not be "
    "used for diagnosis or treatment decisions."
)
TABLE_METRICS = (
    "accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "roc_auc",
    "brier",
    "ece",
)


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "h3" | "p" | "list" | "table" | "img"
    content: Any


def fmt(v: Any) -> str:
    """A figure as the reports show it: floats to 3 decimals, n/a for None or NaN, anything
    else as it is."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _cell(s: dict[str, float]) -> str:
    low = s.get("ci_low")
    if low is None or math.isnan(low):  # NaN in memory, null once written as JSON
        return _fmt(s["mean"])
    return f"{_fmt(s['mean'])} ({_fmt(s['ci_low'])}-{_fmt(s['ci_high'])})"


def report_head(results: dict[str, Any]) -> list[Block]:
    """Title, the research-use notice and the provenance heading every report starts with."""
    return [
        Block("h1", results.get("title", "breastcad run report")),
        Block("p", f"**{NOTICE}**"),
        Block("h2", "How these results were obtained"),
    ]


def run_line(run: dict[str, Any]) -> str:
    return (
        f"Created {run['created']}, breastcad {run['versions'].get('breastcad')}, "
        f"commit {run.get('git_commit') or 'unknown'}"
        f"{' with uncommitted changes to its source' if run.get('uncommitted_changes') else ''}"
        f", seed {run['seed']}"
    )


def build_blocks(results: dict[str, Any]) -> list[Block]:
    run, data = results["run"], results["data"]
    blocks = [
        *report_head(results),
        Block(
            "list",
            [
                run_line(run),
                f"Data: {data['source']}: {data['n_samples']} samples, {data['n_features']} "
                f"features, sha256 {data['fingerprint'][:16]}...",
                f"Positive class: {data['positive_class']} "
                "(sensitivity, precision and AUC refer to it)",
                "Versions: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items()),
                *results.get("how", []),
            ],
        ),
        Block("h2", "Data checks"),
        Block("list", data["checks"]),
    ]
    if results["plots"].get("class_balance"):
        blocks.append(Block("img", (results["plots"]["class_balance"], "class balance")))
    for key, proto in results["protocols"].items():
        blocks += _protocol_blocks(key, proto)
    if results.get("bundles"):
        blocks.append(Block("h2", "Model bundles"))
        blocks.append(
            Block(
                "list",
                [
                    f"`{path}`: {name}, refitted on all {data['n_samples']} samples; use with "
                    f"`breastcad predict --model {path} data.csv`"
                    for name, path in results["bundles"].items()
                ]
                + _row_hashes_text(results),
            )
        )
    blocks.append(Block("h2", "Limits"))
    blocks.append(
        Block(
            "list",
            results.get(
                "limits",
                [
                    "WDBC is a single-centre set of 569 fine-needle aspirates from the early "
                    "1990s; performance on other populations, devices or feature extraction is "
                    "unknown.",
                    "Intervals describe sampling variation of this data only, not a new "
                    "clinical setting.",
                    "The published single split tests on 114 samples: its intervals are wide, "
                    "and a single random split is a poor basis for comparing models; prefer "
                    "repeated CV.",
                ],
            ),
        )
    )
    return blocks


def _protocol_blocks(key: str, proto: dict[str, Any]) -> list[Block]:
    models = proto["models"]
    first = next(iter(models.values()))
    rows = [[name] + [_cell(m["summary"][k]) for k in TABLE_METRICS] for name, m in models.items()]
    blocks = [
        Block("h2", f"Protocol: {proto['description']}"),
        Block(
            "p", f"Threshold: {first['threshold_policy']}. Intervals: {first['interval_method']}."
        ),
        Block("table", (["model"] + [METRIC_LABELS[k] for k in TABLE_METRICS], rows)),
    ]
    for name in ("roc", "pr", "reliability", "comparison"):
        if proto["plots"].get(name):
            blocks.append(Block("img", (proto["plots"][name], f"{name} {key}")))
    for name, m in models.items():
        blocks.append(Block("h3", f"{name}: {m['description']}"))
        thresholds = m["thresholds"]
        detail = [
            f"threshold {_fmt(thresholds[0])}"
            if len(thresholds) == 1
            else f"thresholds chosen per fold: median "
            f"{_fmt(sorted(thresholds)[len(thresholds) // 2])}, "
            f"range {_fmt(min(thresholds))}-{_fmt(max(thresholds))}",
            f"mean fit time {m['fit_seconds_mean']:.2f} s",
            *(
                [f"epochs trained per fit: {min(m['epochs_run'])}-{max(m['epochs_run'])}"]
                if m.get("epochs_run")
                else []
            ),
            "all metrics: "
            + ", ".join(f"{k} {_cell(m['summary'][k])}" for k in METRICS if k in m["summary"]),
        ]
        if m.get("chosen_params"):
            detail.append(
                f"hyper-parameters chosen inside the training data: "
                f"{_param_counts(m['chosen_params'])}"
            )
        blocks.append(Block("list", detail))
        for fig, path in m["plots"].items():
            blocks.append(Block("img", (path, f"{fig} {name}")))
    return blocks


def _param_counts(chosen: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for params in chosen:
        key = json.dumps(params, sort_keys=True)
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.content)
        elif b.kind == "p":
            out.append(b.content)
        elif b.kind == "list":
            out.append("\n".join(f"- {item}" for item in b.content))
        elif b.kind == "table":
            header, rows = b.content
            out.append(
                "\n".join(
                    ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                    + ["| " + " | ".join(r) + " |" for r in rows]
                )
            )
        elif b.kind == "img":
            out.append(f"![{b.content[1]}]({b.content[0]})")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escape, then render **bold** and `code` spans."""
    parts = html.escape(text).split("`")
    for i in range(1, len(parts), 2):
        parts[i] = f"<code>{parts[i]}</code>"
    text = "".join(parts)
    bold = text.split("**")
    for i in range(1, len(bold), 2):
        bold[i] = f"<strong>{bold[i]}</strong>"
    return "".join(bold)


def to_html(blocks: list[Block], title: str) -> str:
    body = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            body.append(f"<{b.kind}>{_inline(b.content)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{_inline(b.content)}</p>")
        elif b.kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.content) + "</ul>")
        elif b.kind == "table":
            header, rows = b.content
            head = "".join(f"<th>{_inline(h)}</th>" for h in header)
            trs = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
        elif b.kind == "img":
            src, alt = (html.escape(x, quote=True) for x in b.content)
            body.append(f'<img src="{src}" alt="{alt}">')
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
        "padding:0 1em;color:#222}table{border-collapse:collapse;font-size:0.9em}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:0.5em 0}"
        "code{background:#f3f3f3;padding:0 3px}"
    )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def write_report(run_dir: Path) -> tuple[Path, Path]:
    """Render report.md and report.html of a run folder from its results.json."""
    run_dir = Path(run_dir)
    source = run_dir / "results.json"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no results.json; is {run_dir} a breastcad run folder?")
    results = _results(source)
    if results.get("kind") == "image":
        from breastcad.evaluation.image_report import image_blocks

        blocks = image_blocks(results)
    else:
        blocks = build_blocks(results)
    md, page = run_dir / "report.md", run_dir / "report.html"
    md.write_text(to_markdown(blocks))
    page.write_text(to_html(blocks, results.get("title", "breastcad report")))
    return md, page


def _results(source: Path) -> dict[str, Any]:
    """A run's or an evaluation's results.json; anything else is a `DataError` naming it."""
    try:
        results = json.loads(source.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        results, why = None, f"not JSON: {exc.__class__.__name__}"
    if isinstance(results, dict):
        image = results.get("kind") == "image"
        needed = ("model", "operating_point", "test") if image else ("plots", "protocols")
        missing = [k for k in ("run", "data", *needed) if k not in results]
        if not missing:
            return results
        why = f"no {', '.join(missing)}"
    elif results is not None:
        why = f"a JSON {type(results).__name__}, not an object"
    raise DataError(
        f"not the results of a breastcad run or evaluation ({why}); a report is rendered "
        "from the results.json that `train`, `train-image` or `evaluate` write",
        source,
    )


def _row_hashes_text(results: dict[str, Any]) -> list[str]:
    """What a tabular run's bundles keep of its rows (`data.fingerprints.row_hashes`); nothing
    for runs from before bundles kept them."""
    if "bundle_training_hashes" not in results:
        return []
    if not results["bundle_training_hashes"]:
        return [
            "Privacy: the bundles keep nothing of the rows (--no-training-hashes), so "
            "`breastcad evaluate` cannot recognise them in other tables."
        ]
    return [
        "Privacy: each bundle keeps a 64-bit hash of every row's features, so that "
        "`breastcad evaluate` recognises the rows it was refitted on in any table; no row can "
        "be rebuilt from them, but whoever holds a row can tell whether the bundle learnt from "
        "it. Train with --no-training-hashes, or copy a bundle with `breastcad share`, for "
        "bundles that leave the institution."
    ]
