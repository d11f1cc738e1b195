"""The deployment's linkage: its identifier schemes and its model, from the settings.

Every process that standardises or links (the normaliser, the linker, ``caselink link``,
``caselink rebuild``, ``caselink train``) takes them from here, so batch and stream cannot
disagree about who is who. The model is the deployment's own, trained by ``caselink train``
on its data; the bundled one is used only when the settings ask for it (the demo, the samples).
"""

from __future__ import annotations

from caselink.linkage.model import LinkageModel
from caselink.linkage.models import default_model
from caselink.linkage.rules import DEFAULT_PLACEHOLDER_NAMES, LinkageRules
from caselink.linkage.schemes import SchemeCatalogue, SchemeError
from caselink.linkage.standardise import clean_text

from caselink.core.settings import LinkageSettings


class ModelNotFoundError(FileNotFoundError):
    """No model where the settings say the deployment's model is."""


def catalogue(settings: LinkageSettings) -> SchemeCatalogue:
    """The built-in identifier schemes with the deployment's changes (``SchemeError`` if invalid)."""
    try:
        return SchemeCatalogue.from_config(settings.identifier_schemes)
    except SchemeError as exc:
        raise SchemeError(f"linkage.identifier_schemes: {exc}") from None


def rules(settings: LinkageSettings) -> LinkageRules:
    """The rules a new model is trained under: the configured schemes and filler names."""
    extra = {clean_text(name) for name in settings.placeholder_names} - {None}
    return LinkageRules(catalogue(settings), DEFAULT_PLACEHOLDER_NAMES | frozenset(extra))  # type: ignore[arg-type]


def load_model(settings: LinkageSettings) -> LinkageModel:
    """The deployment's model, at the configured thresholds."""
    if settings.bundled_model:
        model = default_model()
    else:
        path = settings.model_path
        if not path.exists():
            raise ModelNotFoundError(
                f"no linkage model at {path}: train one on this deployment's data with "
                f"`caselink train <mapping.yaml>...` (or `caselink train --from-topics`), point "
                f"linkage.model_path at one, or set linkage.bundled_model: true to use the demo model "
                f"(trained on UK-shaped synthetic data; for the demo and samples only)")
        model = LinkageModel.load(path)
    return model.with_thresholds(settings.link_threshold, settings.review_threshold)


def scheme_drift(model: LinkageModel, settings: LinkageSettings) -> list[str]:
    """How the configured identifier schemes differ from those the model was trained with."""
    configured = catalogue(settings).schemes
    trained = model.rules.schemes.schemes
    out = []
    for name in sorted(set(configured) | set(trained)):
        if name not in trained:
            out.append(f"scheme {name} is configured but model {model.version} was trained without it")
        elif name not in configured:
            out.append(f"model {model.version} knows scheme {name}, which is no longer configured")
        elif configured[name] != trained[name]:
            out.append(f"scheme {name} is configured differently from how model {model.version} was trained")
    return out
