import resource

import torch
from typer.testing import CliRunner

from breastcad.cli import app
from breastcad.models import create_model
from breastcad.training.memory import GB, MemoryNeed, available_bytes, training_need
from tests.data.conftest import blob_image, save


def test_the_bound_counts_what_training_must_hold():
    # Linear(1000, 10): 10,010 learning parameters x 16 bytes; its 10 outputs x 4 bytes x batch
    need = training_need(lambda: torch.nn.Linear(1000, 10), (1, 1000), batch=4)
    assert (need.parameter_bytes, need.activation_bytes) == (160_160, 160)
    # a frozen body costs its weights only (4 bytes each); only the head keeps outputs
    frozen = training_need(lambda: create_model("transfer", size=64), (1, 3, 64, 64), batch=8)
    net = create_model("transfer", size=64)
    learning = sum(p.numel() for p in net.parameters() if p.requires_grad)
    total = sum(p.numel() for p in net.parameters())
    assert frozen.parameter_bytes == 16 * learning + 4 * (total - learning)
    assert 0 < frozen.activation_bytes < 8 * 4 * 1000
    # the fine-tuning recipe unfreezes its backbone in stage 2: every parameter learns then
    tuned = create_model("finetune", size=64)
    assert tuned.recipe.stages
    later = training_need(
        lambda: create_model("finetune", size=64), (1, 3, 64, 64), batch=8, unfrozen=True
    )
    assert later.parameter_bytes == 16 * sum(p.numel() for p in tuned.parameters())
    assert later.activation_bytes > 100 * frozen.activation_bytes  # the body's outputs too


def test_the_published_mammogram_input_is_worked_out_without_allocating_it():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    need = training_need(
        lambda: create_model("mammo_cnn", size=(2250, 1500)), (1, 1, 2250, 1500), batch=32
    )
    grown_gb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / GB
    # Flatten -> Dense 128 on a 140 x 93 x 512 map: 854 M parameters, 13.7 GB with Adam
    assert 13.5 * GB < need.parameter_bytes < 14 * GB
    assert need.total > 70 * GB and grown_gb < 1.0  # meta tensors: shapes only


def test_a_run_that_cannot_fit_is_refused_before_anything_is_allocated(tmp_path):
    root = tmp_path / "images"
    for i in range(12):
        img = blob_image(i, (40, 44))
        save(root / "benign" / f"b{i:02d}.png", img // 3)
        save(root / "malignant" / f"m{i:02d}.png", 255 - img // 3)
    free = available_bytes(torch.device("cpu"))
    assert free is not None and free > 0  # Linux: MemAvailable

    # the published CNN's dense layer grows with the input: pick a size past this machine
    def need(side: int) -> MemoryNeed:
        return training_need(lambda: create_model("mammo_cnn", size=side), (1, 1, side, side), 2)

    side = 2048
    while need(side).total < 2 * free:
        side *= 2
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = CliRunner().invoke(
        app,
        ["train-image", "--dataset", "folder", "--root", str(root), "--model", "mammo_cnn",
         "--size", str(side), "--val-size", "0.2", "--out", str(tmp_path / "run"), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"at {side} x {side} px" in result.output and "needs at least" in result.output
    assert "give a smaller --size or --batch-size" in result.output
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < GB
    assert not (tmp_path / "run" / "checkpoints").exists()
