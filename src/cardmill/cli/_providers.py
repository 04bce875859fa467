"""Which provider ``--provider`` names, and how to speak of it."""

from __future__ import annotations

import os
from typing import Final

from .._recipe import STUDY_CARDS, Recipe
from ..errors import InputError
from ..model import Run
from ..providers import (
    AnthropicProvider,
    ExtractiveProvider,
    OpenAICompatibleProvider,
    Provider,
)

__all__ = ["for_run", "make_provider", "model_of", "provider_warning"]

_OFFLINE: Final = "or use --provider extractive to work offline"
#: The key of a provider made for a dry run without one: it never goes in a request,
#: since a dry run sends nothing.
_UNSENT_KEY: Final = "cardmill-dry-run-sends-nothing"


def make_provider(
    choice: str, model: str | None, recipe: Recipe = STUDY_CARDS, *, sending: bool = True
) -> tuple[Provider, str]:
    """The provider ``--provider`` names, made for ``recipe``, and a phrase saying which
    it is.

    The providers' own messages for a missing key name their ``api_key=`` argument,
    which the command line does not have: here they name what a user of the command
    can do instead. ``sending=False`` (a dry run: only the model, its prices and what a
    request would hold are needed) makes the provider without a key if there is none.
    """
    if choice == "auto":
        choice = "anthropic" if os.environ.get("ANTHROPIC_API_KEY") else "extractive"
        if choice == "extractive":
            return ExtractiveProvider(recipe=recipe), (
                "the offline extractive provider (set ANTHROPIC_API_KEY to use Claude)"
            )
    unsent: str | None = None  # the key to give a provider that sends nothing
    if choice == "anthropic" and not os.environ.get("ANTHROPIC_API_KEY"):
        if sending:
            raise InputError(f"no Anthropic API key: set ANTHROPIC_API_KEY, {_OFFLINE}")
        unsent = _UNSENT_KEY
    if choice == "openai" and not (
        os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
    ):
        if sending:
            raise InputError(
                "no OpenAI API key: set OPENAI_API_KEY (or OPENAI_BASE_URL for a local "
                f"server that needs none), {_OFFLINE}"
            )
        unsent = _UNSENT_KEY
    if choice == "anthropic":
        anthropic = AnthropicProvider(model=model, recipe=recipe, api_key=unsent)
        return anthropic, f"Anthropic ({anthropic.model})"
    if choice == "openai":
        openai = OpenAICompatibleProvider(model=model, recipe=recipe, api_key=unsent)
        return openai, f"OpenAI-compatible {openai.base_url} ({openai.model})"
    return ExtractiveProvider(recipe=recipe), "the offline extractive provider"


def model_of(provider: Provider) -> str | None:
    """The model a provider asks, if it has one (the extractive provider has none)."""
    model = getattr(provider, "model", None)
    return model if isinstance(model, str) else None


def provider_warning(provider: Provider) -> str | None:
    """What a user should know before a run starts: the recipe fields the offline
    provider leaves out."""
    return provider.warning if isinstance(provider, ExtractiveProvider) else None


_CHOICES: Final = ("anthropic", "openai", "extractive")


def for_run(run: Run, choice: str, model: str | None) -> tuple[str, str | None]:
    """The provider choice and model that go on with ``run``: by default those it was
    made with (`Run.provider`, `Run.model`).

    Raises:
        InputError: ``--provider`` or ``--model`` names another than the run's.
    """
    if choice == "auto" and run.provider in _CHOICES:
        choice = run.provider
    elif run.provider in _CHOICES and choice != run.provider:
        raise InputError(
            f"run {run.id} was made with provider {run.provider}, not {choice}: "
            "a run keeps its provider; go on without --provider"
        )
    if choice != run.provider or not run.model:
        return choice, model
    if model is not None and model != run.model:
        raise InputError(
            f"run {run.id} was made with model {run.model}, not {model}: "
            "a run keeps its model; go on without --model"
        )
    return choice, run.model
