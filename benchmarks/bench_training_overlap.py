"""Does `evaluate` recognise the images a bundle learnt from? Two `probe` runs on BUSI (seed 0):
one on a random split (each image its own group, no duplicate audit: what the published BUSI
figures used), one on breastcad's duplicate-aware split; each bundle evaluated on its own test
part and on all of BUSI. Prints, per evaluation, the images flagged (same pixels / near
duplicates), the figures as reported and the figures without the flagged images, and the
seconds the check took (hashes of the evaluated images, from the audit's cache where it knows
them, and the search against the bundle's). Then BreastMNIST (BUSI's centred squares at 28
px) against the duplicate-aware bundle's hashes. Last, what hashing unseen
files costs evaluate: the cache's build and the hashes from one decode or from two.

    .venv/bin/python benchmarks/bench_training_overlap.py [--root ../shared/data/busi] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from breastcad.config import ImageRunConfig
from breastcad.evaluation.image_evaluation import evaluate_image_bundle
from breastcad.evaluation.overlap import match_training
from breastcad.image_experiment import run_image_experiment
from breastcad.predict import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/data/busi"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--breastmnist", type=Path, default=Path("../shared/data/breastmnist"))
    args = parser.parse_args()
    root = args.root.resolve()
    if not root.is_dir():
        raise SystemExit(f"{root}: BUSI not found (see ../shared/data/README.md)")
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-overlap-"))
    rows = []
    for name, distance in (("random split", None), ("duplicate-aware split", 4)):
        run = out / name.replace(" ", "-")
        cfg = ImageRunConfig.model_validate(
            {
                "data": {"dataset": "busi", "root": root, "duplicate_distance": distance},
                "model": "probe",
                "train": {"progress": False},
            }
        )
        run_image_experiment(cfg, run)
        split = run / "splits" / "split.json"
        for part, split_file in (("its own test part", split), ("all of BUSI", None)):
            evaluation = evaluate_image_bundle(
                run / "bundle", "busi", root, run / f"eval-{part[:3]}", split_file=split_file,
                progress=False,
            )  # fmt: skip
            rows.append((name, part, evaluation, _check_seconds(run / "bundle", root, split_file)))
    print(f"\nruns in {out}\n")
    print("| bundle | evaluated on | images | flagged (same / near) | accuracy, macro AUC | "
          "without the flagged | check (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, part, e, seconds in rows:
        o, test = e["data"]["training_overlap"], e["test"]
        flagged = o["same_pixels"] + o["near_duplicates"]
        other = o.get("without_them")
        without = f"{other['images']}: {_pair(other, other['ci'])}" if other else "-"
        figures = _pair({**test["metrics"]["scalars"], "accuracy": test["argmax"]["accuracy"]})
        print(
            f"| {name} | {part} | {o['images']} | "
            f"{flagged} ({o['same_pixels']} / {o['near_duplicates']}) | {figures} | "
            f"{without} | {seconds:.2f} |"
        )
    _smaller_copies(out / "duplicate-aware-split" / "bundle", args.breastmnist)
    _on_breastmnist(out / "duplicate-aware-split" / "bundle", args.breastmnist, out)
    _one_decode(root)


def _smaller_copies(bundle: Path, root: Path) -> None:
    """What the check sees of a copy at another resolution and crop: BreastMNIST is BUSI's
    centred squares at 28 x 28 px; its images against the bundle's training hashes, at
    several distances, by the whole image's pHash alone and with the centred squares' (what
    `evaluate` matches)."""
    from breastcad.data import fingerprints
    from breastcad.data.duplicates import nearest
    from breastcad.data.sources import scan

    if not root.exists():
        print(f"\n{root}: not found, BreastMNIST rows left out")
        return
    paths = scan("breastmnist", root.resolve()).frame["path"].tolist()
    found = fingerprints.fingerprints(paths, 2, False, None)
    phashes = found["phash"][found["readable"]]
    trained = fingerprints.load(bundle)
    print(f"\nBreastMNIST ({len(phashes)} images, BUSI at 28 px) against {bundle}'s hashes:\n")
    print("| distance at most | whole image's pHash only | with centred squares |")
    print("|---|---|---|")
    for distance in (0, 4, 8):
        whole = int((nearest(phashes, trained["phash"], distance) >= 0).sum())
        matched = fingerprints.match(found, trained, distance)
        print(f"| {distance} | {whole} | {int((matched != '').sum())} |")


def _on_breastmnist(bundle: Path, root: Path, out: Path) -> None:
    """The three-class BUSI bundle evaluated on BreastMNIST's two classes (its P(normal) and
    P(benign) summed: `--class-map normal+benign=normal_or_benign`): what evaluate says of
    the images it learnt from, and the figures without them."""
    if not root.exists():
        return
    e = evaluate_image_bundle(
        bundle, "breastmnist", root.resolve(), out / "busi-on-breastmnist", progress=False,
        class_map={"normal+benign": "normal_or_benign"},
    )  # fmt: skip
    o, test = e["data"]["training_overlap"], e["test"]
    other = o.get("without_them")
    without = f"{other['images']}: {_pair(other, other['ci'])}" if other else "-"
    figures = _pair({**test["metrics"]["scalars"], "accuracy": test["argmax"]["accuracy"]})
    print(f"\n{bundle} on BreastMNIST, normal+benign read as normal_or_benign:\n")
    print("| images | flagged (same / near) | accuracy, AUC | without the flagged |")
    print("|---|---|---|---|")
    flagged = o["same_pixels"] + o["near_duplicates"]
    print(
        f"| {o['images']} | {flagged} ({o['same_pixels']} / {o['near_duplicates']}) | "
        f"{figures} | {without} |"
    )


def _one_decode(root: Path, repeats: int = 2) -> None:
    """Evaluating unseen files (cold caches): the decode cache's build and the hashes of the
    images, as two decodes (the cache, then an audit for the hashes) and as one (the build
    records what the audit would find: `ImageCache.build(facts=True)`, what evaluate does)."""
    from breastcad.config import PreprocessConfig
    from breastcad.data import fingerprints
    from breastcad.data.cache import ImageCache
    from breastcad.data.sources import scan

    manifest = scan("busi", root)
    paths = manifest.frame["path"].tolist()
    print(f"\nBUSI's {len(paths)} images, cold caches, 224 px, 2 processes (seconds):\n")
    print("| decodes | cache build + hashes, each run |\n|---|---|")
    times: dict[str, list[float]] = {"two": [], "one": []}
    for _ in range(repeats):
        for name, facts in (("two", False), ("one", True)):
            folder = Path(tempfile.mkdtemp(prefix="bench-overlap-cache-"))
            start = time.perf_counter()
            ImageCache.build(manifest, PreprocessConfig(size=224), folder, 2, False, facts=facts)
            fingerprints.fingerprints(paths, 2, False, folder)
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"| {name} | {' / '.join(f'{v:.2f}' for v in values)} |")


def _pair(figures: dict, ci: dict | None = None) -> str:
    def one(key: str) -> str:
        interval = f" ({ci[key][0]:.3f}-{ci[key][1]:.3f})" if ci else ""
        return f"{figures[key]:.3f}{interval}"

    return f"{one('accuracy')}, {one('macro_auc')}"


def _check_seconds(bundle: Path, root: Path, split_file: Path | None) -> float:
    """The check alone, as `evaluate` makes it (after the evaluation warmed the caches)."""
    from breastcad.data.sources import scan
    from breastcad.evaluation.image_evaluation import _split_part

    manifest, _, _ = _split_part(scan("busi", root), split_file, "test")
    predictor = Predictor.from_bundle(bundle)
    start = time.perf_counter()
    match_training(predictor, manifest, np.arange(len(manifest)), 2, False, None)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
