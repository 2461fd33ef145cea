from breastcad.config import ImageRunConfig
from breastcad.image_setup import fit_settings
from breastcad.models import create_model


def _cfg(**train):
    return ImageRunConfig.model_validate(
        {"data": {"dataset": "busi", "root": "."}, "model": "finetune", "train": train}
    )


def test_recipe_defaults_and_overrides():
    net = create_model("finetune", num_classes=3, weights="random", size=32)
    default = fit_settings(_cfg(), net, "ultrasound")
    assert default.epochs == 40 and default.lr == 1e-3 and default.augment == "ultrasound"
    assert default.stages[0]["after_epochs"] == 30 and default.class_weight == "balanced"
    short = fit_settings(_cfg(epochs=5, sampling="oversample", augment="none"), net, "ultrasound")
    assert short.stages[0]["after_epochs"] == 1  # the head stage yields to fine-tuning
    assert short.class_weight == "none" and short.augment == "none"
    idc = create_model("idc_cnn")
    plain = fit_settings(_cfg(), idc, "histopathology")
    assert plain.stages is None and plain.patience == 5 and plain.augment == "histo"
    assert plain.optim["optimizer"] == "adam" and plain.optim["schedule"] == "constant"  # Keras


def test_a_probe_takes_resampling_as_the_class_weights_it_equals():
    """The linear probe sees each training image once: re-sampling to equal classes becomes
    balanced class weights (its expectation), so the run's prior shift still applies."""
    net = create_model("probe", num_classes=2, size=32)
    resampled = fit_settings(_cfg(sampling="undersample", class_weight="none"), net, "image")
    assert resampled.class_weight == "balanced"
    assert fit_settings(_cfg(class_weight="none"), net, "image").class_weight == "none"


def test_full_finetune_recipe_reaches_the_optimiser():
    net = create_model("full_finetune", num_classes=3, weights="random", size=32)
    s = fit_settings(_cfg(), net, "ultrasound")
    o = s.optim
    assert (o["optimizer"], o["schedule"], o["warmup_epochs"]) == ("adamw", "cosine", 1)
    assert (o["label_smoothing"], o["body_lr_factor"], o["weight_decay"]) == (0.1, 0.1, 0.01)
    assert s.stages is None and s.patience == 8 and s.epochs == 20
    assert not net.body_frozen and net.train().body.training  # batch norm trains too


def test_precision_reaches_the_trainer_and_a_probe_refuses_bf16():
    import pytest

    from breastcad.errors import ConfigError

    net = create_model("idc_cnn")
    assert fit_settings(_cfg(), net, "histopathology").precision == "32"
    mixed = fit_settings(_cfg(precision="bf16-mixed"), net, "histopathology")
    assert mixed.precision == "bf16-mixed"
    probe = create_model("probe", num_classes=2, size=32)
    with pytest.raises(
        ConfigError, match="a closed-form recipe has no training steps to run in bf16-mixed"
    ):
        fit_settings(_cfg(precision="bf16-mixed"), probe, "image")
    with pytest.raises(ValueError, match="precision"):
        _cfg(precision="16")
