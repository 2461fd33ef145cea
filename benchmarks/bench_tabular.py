"""WDBC benchmarks: the published 1D-CNN's fit time and accuracy on the published split.

Prints a table. Times are reported as measured and as a ratio against a reference measured in
the same run on the same machine: the same network, data and number of steps trained by a
plain PyTorch loop (no Lightning, no metrics), so machine speed and noise cancel out.

    .venv/bin/python benchmarks/bench_tabular.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from breastcad.config import ProtocolConfig, TrainConfig
from breastcad.data.tabular import load_wdbc
from breastcad.evaluation.metrics import binary_metrics
from breastcad.evaluation.protocol import make_splits
from breastcad.models import create_model
from breastcad.models.preprocess import Standardizer
from breastcad.models.tabular import CNN1D


def plain_loop_seconds(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    """Reference: 50 epochs, batch 32, Adam 5e-5 on the same network, in a bare loop."""
    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    net = CNN1D(x.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=5e-5, eps=1e-7, fused=True)
    start = time.perf_counter()
    for _ in range(50):
        order = torch.randperm(len(yt))
        for i in range(0, len(yt), 32):
            idx = order[i : i + 32]
            loss = F.binary_cross_entropy_with_logits(net(xt[idx]).squeeze(-1), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_wdbc()
    split = make_splits(data.y, ProtocolConfig(kind="published"))[0]
    X_tr, y_tr, X_te, y_te = (
        data.X[split.train],
        data.y[split.train],
        data.X[split.test],
        data.y[split.test],
    )
    scaled = Standardizer().fit(X_tr).transform(X_tr)
    plain_loop_seconds(scaled, y_tr, 0)  # warm-up: first-call allocations and kernel loading
    print(
        f"published 1D-CNN, WDBC published split (stratified 80/20, random_state=0): "
        f"train {len(y_tr)}, test {len(y_te)}; 50 epochs, batch 32; threshold 0.5; "
        f"torch threads {args.threads}"
    )
    print(
        f"{'seed':>4} {'fit s':>7} {'plain loop s':>13} {'ratio':>6} {'test acc':>9} "
        f"{'test AUC':>9}"
    )
    rows = []
    for seed in range(args.seeds):
        model = create_model("cnn1d", train=TrainConfig(val_fraction=0.0, progress=False))
        start = time.perf_counter()
        model.fit(X_tr, y_tr, seed=seed)
        fit_s = time.perf_counter() - start
        ref_s = plain_loop_seconds(scaled, y_tr, seed)
        m = binary_metrics(y_te, model.predict_proba(X_te), 0.5)
        rows.append((fit_s, ref_s, m["accuracy"], m["roc_auc"]))
        print(
            f"{seed:>4} {fit_s:>7.2f} {ref_s:>13.2f} {fit_s / ref_s:>6.2f} "
            f"{m['accuracy']:>9.4f} {m['roc_auc']:>9.4f}"
        )
    a = np.array(rows)
    print(
        f"{'mean':>4} {a[:, 0].mean():>7.2f} {a[:, 1].mean():>13.2f} "
        f"{(a[:, 0] / a[:, 1]).mean():>6.2f} {a[:, 2].mean():>9.4f} {a[:, 3].mean():>9.4f}"
    )
    print("goal: fit < 3 s on the 2-core development machine; test accuracy >= 0.965")


if __name__ == "__main__":
    main()
