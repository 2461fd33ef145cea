"""The web app and REST service: `create_app(settings)` (FastAPI), run by `breastcad serve`."""

from breastcad.serve.app import create_app

__all__ = ["create_app"]
