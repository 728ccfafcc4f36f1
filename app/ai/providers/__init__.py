"""The model providers (contracts.Provider) and `build_providers` from settings.

openai is configured when OPENAI_API_KEY is set (OPENAI_BASE_URL points it at a compatible
server), anthropic when ANTHROPIC_API_KEY is set; baseline always is. Plugins add providers at start
(app/plugins/ai.py) as factories in EXTRA_PROVIDERS: each gives its provider, or None when
the deployment did not configure it.
"""

from __future__ import annotations

from collections.abc import Callable

from app.ai.contracts import Provider
from app.ai.providers.anthropic_provider import AnthropicProvider, map_anthropic_error
from app.ai.providers.baseline import BaselineProvider
from app.ai.providers.openai_provider import OpenAIProvider, map_openai_error
from app.settings import Settings

__all__ = [
    "AnthropicProvider",
    "BaselineProvider",
    "OpenAIProvider",
    "EXTRA_PROVIDERS",
    "build_providers",
    "map_anthropic_error",
    "map_openai_error",
]


# {provider name: factory(settings) -> provider or None}, filled by app/plugins/ai.py.
EXTRA_PROVIDERS: dict[str, Callable[[Settings], Provider | None]] = {}


def build_providers(settings: Settings) -> dict[str, Provider]:
    """{name: provider} for every provider the settings configure, baseline included."""
    providers: dict[str, Provider] = {}
    if settings.openai_api_key:
        providers["openai"] = OpenAIProvider(settings.openai_api_key, settings.openai_base_url)
    if settings.anthropic_api_key:
        providers["anthropic"] = AnthropicProvider(
            settings.anthropic_api_key, settings.anthropic_base_url
        )
    for name, factory in EXTRA_PROVIDERS.items():
        if (extra := factory(settings)) is not None:
            providers[name] = extra
    providers["baseline"] = BaselineProvider()
    return providers
