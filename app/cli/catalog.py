"""What tenants may run beyond their own templates: `wfs template` (the public catalog's
reviews) and `wfs plugins` (the installed plugins, docs/plugins.md)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import click

from app.cli.common import answer_from_database, load_settings, table
from app.cli.process import hard_exit

if TYPE_CHECKING:
    from app.plugins.registry import PluginRegistry


@click.group()
def template() -> None:
    """Review tenants' templates for the public catalog (platform operators only)."""


@template.command("reviews")
def template_reviews() -> None:
    """List versions waiting for review, oldest first: what each would let others run, and
    the title, description, tags and category every tenant would read and search."""
    from app.templates.review import CatalogReview

    async def pending(sessions: Any) -> str:
        async with sessions() as session:
            found = await CatalogReview(session).pending()
        lines = []
        for p in found:
            lines += [
                f"{p.template_id}  {p.publisher}/{p.name}  v{p.version}  "
                + _summary(p.capabilities),
                # repr: the tenant's text cannot add lines or terminal control sequences to
                # the operator's screen (newlines, ESC, bidi overrides show escaped).
                f"    title: {p.title!r}",
                f"    description: {p.description!r}",
                f"    tags: {p.tags!r}",
                f"    category: {p.category!r}",
            ]
        return "\n".join(lines) or "no template waits for review"

    answer_from_database(pending)


@template.command("approve")
@click.argument("template_id", type=click.UUID)
@click.argument("version", type=int)
def template_approve(template_id: uuid.UUID, version: int) -> None:
    """Put VERSION of template TEMPLATE_ID in the public catalog (its public version).

    Read its capabilities (`wfs template reviews`) and spec first: every tenant may run it.
    """
    from app.templates.review import CatalogReview

    async def approve(sessions: Any) -> str:
        async with sessions() as session:
            t = await CatalogReview(session).approve(template_id, version)
            await session.commit()
            return f"template {t.name} ({t.id}): v{version} approved, public v{t.public_version}"

    answer_from_database(approve)


@template.command("reject")
@click.argument("template_id", type=click.UUID)
@click.argument("version", type=int)
@click.option("--reason", required=True, help="Shown to the owner on the version.")
def template_reject(template_id: uuid.UUID, version: int, reason: str) -> None:
    """Keep VERSION of template TEMPLATE_ID out of the public catalog, with a reason."""
    from app.templates.review import CatalogReview

    async def reject(sessions: Any) -> str:
        async with sessions() as session:
            t = await CatalogReview(session).reject(template_id, version, reason)
            await session.commit()
            return f"template {t.name} ({t.id}): version {version} rejected"

    answer_from_database(reject)


def _summary(capabilities: Any) -> str:
    """One line of what a version does: activities, then what the operator looks for."""
    flags = [
        name
        for name, on in (
            ("sends mail", capabilities.sends_mail),
            ("reads files", capabilities.reads_files),
            ("writes files", capabilities.writes_files),
            ("uses AI", capabilities.uses_ai),
        )
        if on
    ]
    if capabilities.calls_hosts:
        flags.append("calls " + ",".join(capabilities.calls_hosts))
    effects = "; ".join(flags) or "no mail, files, hosts or AI"
    return f"[{', '.join(capabilities.activities)}] {effects}"


@click.group()
def plugins() -> None:
    """Installed plugins (docs/plugins.md): list them, check their declarations."""


@plugins.command("list")
def plugins_list() -> None:
    """The plugins this deployment loads (PLUGINS_ENABLED): what each adds and its queue."""
    from app.plugins.registry import activate

    click.echo(plugin_table(activate(load_settings())))
    hard_exit(0)


def plugin_table(registry: PluginRegistry) -> str:
    """`wfs plugins list`: one row per loaded plugin, then the refused ones."""
    rows = [["NAME", "VERSION", "STEPS", "TASKS", "PROVIDERS", "TEMPLATES", "QUEUE"]]
    for m in registry.loaded.values():
        rows.append(
            [
                m.name,
                m.version,
                ",".join(m.qualified(s.name) for s in m.steps) or "-",
                ",".join(m.qualified(t.name) for t in m.ai_tasks) or "-",
                ",".join(m.qualified(p.name) for p in m.providers) or "-",
                ",".join(str(t.get("name")) for t in m.templates) or "-",
                m.queue,
            ]
        )
    for name in sorted(registry.refused):
        rows.append([name, "REFUSED", "-", "-", "-", "-", "(wfs plugins check)"])
    return table(rows) if len(rows) > 1 else "no plugins installed"


@plugins.command("check")
@click.argument("name", required=False)
def plugins_check(name: str | None) -> None:
    """Load and check NAME (every installed plugin without one) and print every problem;
    exit 1 on any. Ignores PLUGINS_ENABLED: it checks what is installed."""
    from app.plugins.api import installed_entry_points
    from app.plugins.registry import load

    settings = load_settings()
    installed = sorted(installed_entry_points())
    registry = load([name] if name else installed, installed=installed, settings=settings)
    for plugin, problems in sorted(registry.refused.items()):
        click.echo(f"{plugin}: REFUSED ({len(problems)} problems)")
        for problem in problems:
            click.echo(f"  - {problem}")
    for m in registry.loaded.values():
        click.echo(f"{m.name} {m.version}: OK")
    if not registry.refused and not registry.loaded:
        click.echo("no plugins installed")
    hard_exit(1 if registry.refused else 0)
