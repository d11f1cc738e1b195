"""Bundled linkage models. ``default.json`` is trained on synthetic multi-agency data by
``python -m caselink.linkage.models.build`` and is what the demo and a fresh worker use until an operator
trains one on their own data (``caselink link ... --save-model``)."""

from __future__ import annotations

from pathlib import Path

from caselink.linkage.model import LinkageModel

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "default.json"


def default_model() -> LinkageModel:
    return LinkageModel.load(DEFAULT_MODEL_PATH)
