import resource

import torch
from typer.testing import CliRunner

from breastcad.cli import app
from breastcad.models import create_model
from breastcad.training.memory import (
    GB,
    MemoryNeed,
    available_bytes,
    batch_that_fits,
    inference_need,
    training_need,
)
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


def test_inference_bound_is_the_largest_layer_input_and_output():
    # Conv 1 -> 8 channels on 10 x 10: input 400 bytes, output 3,200; ReLU: 3,200 + 3,200
    def net() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU())

    assert inference_need(net, (1, 1, 10, 10), dtype=torch.float32) == 6_400
    assert batch_that_fits(32, per_input=GB, free=10 * GB) == 5  # half of 10 GB
    assert batch_that_fits(32, per_input=GB, free=GB) == 1  # never below one image
    assert batch_that_fits(32, per_input=GB, free=None) == 32  # memory unknown: as asked


def test_prediction_lowers_a_batch_that_would_not_fit(tmp_path):
    from breastcad.bundle import rebuild_network
    from breastcad.predict import Predictor
    from tests.conftest import make_image_bundle

    bundle = make_image_bundle(
        tmp_path / "bundle", model="mammo_cnn", classes=("normal", "abnormal"), size=256,
        channels=1,
    )  # fmt: skip
    predictor = Predictor.from_bundle(bundle)
    # worked out on the meta device, it equals what the real network's layers take
    largest = 0

    def hook(module, inputs, output):
        nonlocal largest
        tensors = [t for t in (*inputs, output) if isinstance(t, torch.Tensor)]
        largest = max(largest, sum(t.numel() * t.element_size() for t in tensors))

    net = predictor.network
    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    with torch.inference_mode():
        net(torch.zeros((1, 256, 256, 1), dtype=torch.uint8))
    for h in handles:
        h.remove()
    assert predictor.bytes_per_image == largest == 2 * 32 * 256 * 256 * 4  # conv 32 -> BN
    # the meta device's bound (used for inputs over REAL_BOUND_PIXELS) is the same number
    arch = predictor.bundle.manifest["model"]["arch"]
    assert inference_need(lambda: rebuild_network(arch), (1, 256, 256, 1)) == largest
    # a batch past half of this machine's memory is made smaller, and the CLI says so
    for i in range(3):
        save(tmp_path / "images" / f"m{i}.png", blob_image(i, (300, 200)))
    huge = 10**6
    result = CliRunner().invoke(
        app,
        ["predict", str(tmp_path / "images"), "--model", str(bundle), "--batch-size", str(huge),
         "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = available_bytes(torch.device("cpu")) // 2 // largest
    said = int(result.stderr.split("batches of ")[1].split()[0])
    assert 0.5 * expected < said < 2 * expected and f"instead of {huge}" in result.stderr
    assert "3 predictions" in result.stderr
    assert predictor.batch_that_fits(8) == 8  # a batch that fits is left alone
