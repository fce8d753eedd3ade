"""listener: a webhook receiver and automation listener for media platforms."""
from __future__ import annotations


def create_app(runtime=None):  # noqa: ANN001, ANN201 - imported lazily so `python -m listener` stays light
    from listener.app import create_app as _create_app

    return _create_app(runtime)


__all__ = ["create_app"]
