"""The model providers (contracts.Provider) and `build_providers` from settings.

openai is configured when OPENAI_API_KEY is set (OPENAI_BASE_URL points it at a compatible
server), anthropic when ANTHROPIC_API_KEY is set; baseline always is. Plugins add providers at
start (app/ai/extensions.py PROVIDERS): each factory gives its provider, or None when the
deployment did not configure it.
"""

from __future__ import annotations

from app.ai import extensions
from app.ai.contracts import Provider
from app.ai.providers.anthropic_provider import AnthropicProvider, map_anthropic_error
from app.ai.providers.baseline import BaselineProvider
from app.ai.providers.openai_provider import OpenAIProvider, map_openai_error
from app.settings import Settings

__all__ = [
    "AnthropicProvider",
    "BaselineProvider",
    "OpenAIProvider",
    "build_providers",
    "map_anthropic_error",
    "map_openai_error",
]


def build_providers(settings: Settings) -> dict[str, Provider]:
    """{name: provider} for every provider the settings configure, baseline included."""
    providers: dict[str, Provider] = {}
    if settings.openai_api_key:
        providers["openai"] = OpenAIProvider(
            settings.openai_api_key,
            settings.openai_base_url,
            output_mode=settings.openai_output_mode,
            catalog=settings.catalog(),
        )
    if settings.anthropic_api_key:
        providers["anthropic"] = AnthropicProvider(
            settings.anthropic_api_key,
            settings.anthropic_base_url,
            output_mode=settings.anthropic_output_mode,
        )
    for name, factory in extensions.PROVIDERS.items():
        if (extra := factory(settings)) is not None:
            providers[name] = extra
    providers["baseline"] = BaselineProvider()
    return providers
