import itertools

import pytest
import torch

from breastcad.models.tabular import MLP
from breastcad.training.fit import FitSettings, TensorBatches, fit_binary
from tests.conftest import synthetic_table


def tensors(n, seed):
    X, y = synthetic_table(n, seed=seed)
    return torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)


def test_tensor_batches_cover_every_sample_once_per_epoch():
    x, y = torch.arange(10.0)[:, None], torch.zeros(10)
    batches = TensorBatches(x, y, batch_size=4, shuffle=True, seed=0)
    assert len(batches) == 3
    seen = torch.cat([b[0] for b in batches]).squeeze(1)
    assert sorted(seen.tolist()) == list(range(10))
    again = torch.cat([b[0] for b in batches]).squeeze(1)
    assert seen.tolist() != again.tolist()  # reshuffled each epoch


def test_history_has_train_and_validation_per_epoch():
    history = fit_binary(
        MLP(6),
        tensors(120, 0),
        tensors(60, 1),
        FitSettings(epochs=4, batch_size=16, lr=1e-2, progress=False),
    )
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "val_auc"} <= set(history[0])
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_seeded_fits_are_reproducible():
    settings = FitSettings(epochs=2, batch_size=16, lr=1e-2, seed=7, progress=False)
    a, b = MLP(6), MLP(6)
    b.load_state_dict(a.state_dict())
    fit_binary(a, tensors(80, 0), None, settings)
    fit_binary(b, tensors(80, 0), None, settings)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_early_stopping_stops_and_restores_best_weights():
    # validation labels are the opposite of training labels: val loss rises from the start
    x, y = tensors(120, 0)
    settings = FitSettings(epochs=50, batch_size=16, lr=5e-2, patience=2, progress=False)
    net = MLP(6)
    history = fit_binary(net, (x, y), (x, 1 - y), settings)
    assert len(history) < 50
    best = min(h["val_loss"] for h in history)
    net.eval()
    with torch.no_grad():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(-1), 1 - y)
    assert abs(loss.item() - best) < 1e-4


def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    from breastcad.training.image_module import warmup_cosine

    factors = [warmup_cosine(s, 4, 20) for s in range(21)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[12] == pytest.approx(0.5) and factors[20] == 0.0
    assert all(a >= b for a, b in itertools.pairwise(factors[4:]))
    assert warmup_cosine(0, 0, 10) == 1.0  # no warm-up


def test_optim_refuses_unknown_optimizer_or_schedule():
    from breastcad.training.image_module import Optim

    with pytest.raises(ValueError, match="optimizer 'sgd'"):
        Optim(1e-3, optimizer="sgd")
    with pytest.raises(ValueError, match="schedule 'step'"):
        Optim(1e-3, schedule="step")
