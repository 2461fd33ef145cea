import pytest

from breastcad.models import create_model, get_spec, list_models, register_model


def test_all_tabular_models_registered():
    assert {"cnn1d", "mlp", "logreg", "svm_rbf", "gboost"} <= set(list_models("tabular"))
    assert get_spec("cnn1d").family == "torch"
    assert get_spec("logreg").family == "sklearn"


def test_unknown_model_fails_loudly_with_known_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet9000'.*cnn1d"):
        create_model("resnet9000")


def test_a_parameter_a_model_does_not_take_is_named_with_those_it_does():
    # `--param nope=1` was a TypeError traceback from deep inside the factory
    from breastcad.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model 'probe' has no parameter 'nope'; .*branches"):
        create_model("probe", nope=1)
    assert create_model("idc_cnn", size=24) is not None  # what it takes still builds


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="already registered"):
        register_model("cnn1d", family="torch", modality="tabular", description="x")(lambda: None)
