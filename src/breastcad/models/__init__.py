"""Models: one registry (`create_model`, `list_models`) across modalities."""

from breastcad.models.registry import create_model, get_spec, list_models, register_model

__all__ = ["create_model", "get_spec", "list_models", "register_model"]
