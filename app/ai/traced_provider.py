"""A span around each model call when tracing is on (app/tracing.py): `traced` wraps the
providers the gateway calls, so Provider.complete, the one function that calls a model,
reports provider, model, tokens and cost without the gateway knowing about tracing.

Attributes follow OpenTelemetry's GenAI conventions (`gen_ai.*`) plus the cost in USD
(`wfs.ai.cost_usd`, a string: Decimal); never the prompt nor the output (tenant data).
"""

from __future__ import annotations

from typing import Any

from app import tracing
from app.ai import pricing
from app.ai.contracts import InvalidReply, Provider, ProviderError, ProviderResult, TaskSpec
from app.ai_catalog import Catalog


def traced(providers: dict[str, Provider], catalog: Catalog | None = None) -> dict[str, Provider]:
    """`providers`, each model-calling one in a span when tracing is on; as they are if not.

    `catalog`: the gateway's model catalogue (AI_CATALOG over the shipped one; None: the
    shipped one), whose prices cost the span, so the span says what the usage row says."""
    if not tracing.enabled():
        return providers
    return {
        name: provider if name == "baseline" else TracedProvider(provider, catalog=catalog)
        for name, provider in providers.items()
    }


class TracedProvider:
    """A Provider whose `complete` runs in an `ai.call` span (probes are not traced)."""

    def __init__(
        self, provider: Provider, *, catalog: Catalog | None = None, tracer: Any = None
    ) -> None:
        """`tracer`: None for the process's (a test may pass one of its own provider)."""
        from opentelemetry import trace

        self.inner, self.name = provider, provider.name
        self.catalog = catalog
        self._tracer = tracer if tracer is not None else trace.get_tracer(__name__)

    async def complete(
        self, model: str, task: TaskSpec, input: dict[str, Any], *, timeout: float
    ) -> ProviderResult:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        with self._tracer.start_as_current_span(
            f"ai.call {self.name} {model}", kind=SpanKind.CLIENT, record_exception=False
        ) as span:
            span.set_attribute("gen_ai.system", self.name)
            span.set_attribute("gen_ai.request.model", model)
            span.set_attribute("wfs.ai.task", task.name)
            try:
                result = await self.inner.complete(model, task, input, timeout=timeout)
            except InvalidReply as exc:  # answered and paid: its usage is known
                _usage(
                    span,
                    self.name,
                    model,
                    self.catalog,
                    exc.input_tokens,
                    exc.output_tokens,
                    exc.cached_input_tokens,
                )
                span.set_status(Status(StatusCode.ERROR, "invalid_json"))
                raise
            except ProviderError as exc:
                span.set_attribute("error.type", exc.kind)
                span.set_status(Status(StatusCode.ERROR, exc.kind))
                raise
            _usage(
                span,
                self.name,
                model,
                self.catalog,
                result.input_tokens,
                result.output_tokens,
                result.cached_input_tokens,
            )
            return result

    async def probe(self, model: str, *, timeout: float) -> bool:
        return await self.inner.probe(model, timeout=timeout)

    async def list_models(self, *, timeout: float) -> set[str]:
        return await self.inner.list_models(timeout=timeout)


def _usage(
    span: Any,
    provider: str,
    model: str,
    catalog: Catalog | None,
    tokens_in: int,
    tokens_out: int,
    cached_in: int,
) -> None:
    span.set_attribute("gen_ai.usage.input_tokens", tokens_in)
    span.set_attribute("gen_ai.usage.output_tokens", tokens_out)
    try:
        cost = pricing.cost(
            provider,
            model,
            tokens_in,
            tokens_out,
            cached_input_tokens=cached_in,
            catalog=catalog,
        )
    except pricing.UnknownModel:  # the gateway reports that; the span just has no cost
        return
    span.set_attribute("wfs.ai.cost_usd", str(cost))
