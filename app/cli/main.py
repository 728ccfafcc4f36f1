"""`wfs`: api, worker, dev, migrate, seed, schema, backup, restore, replay, tenant
create/set-tier/verify-sender, template reviews/approve/reject, apikey create/list/revoke,
platform key create/list/revoke, plugins list/check.

The commands live by area: app/cli/serving.py (api, worker, dev), app/cli/operations.py
(migrate, seed, backup, restore, replay), app/cli/accounts.py (tenant, apikey, platform),
app/cli/catalog.py (template, plugins); what they share is app/cli/common.py. Their modules
import the heavy parts (SQLAlchemy, the API, the workers) inside the commands: `wfs dev` spawns
its role processes as soon as it can, and `wfs --help` stays quick.
"""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError

from app.cli import accounts, catalog, operations, serving
from app.cli.process import hard_exit

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "graphql" / "schema.graphql"


@click.group()
def cli() -> None:
    """workflow-service command line."""


@cli.command()
@click.option("--output", type=click.Path(path_type=Path), default=SCHEMA_PATH, show_default=True)
def schema(output: Path) -> None:
    """Write the GraphQL SDL (graphql/schema.graphql)."""
    from app.api.schema import build_schema

    output.write_text(build_schema().as_str() + "\n")
    click.echo(f"wrote {output}")


for command in (
    serving.api,
    serving.worker,
    serving.dev,
    operations.migrate,
    operations.seed,
    operations.backup,
    operations.restore,
    operations.replay,
    accounts.tenant,
    accounts.apikey,
    accounts.platform,
    catalog.template,
    catalog.plugins,
):
    cli.add_command(command)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except RuntimeError as exc:
        click.echo(f"error: {exc}", err=True)
        hard_exit(1)
    except ValidationError as exc:  # the settings refused the environment: say why, briefly
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        click.echo(f"error: invalid configuration: {problems}", err=True)
        hard_exit(1)
