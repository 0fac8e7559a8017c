"""`strait projects ...` and `strait keys ...`: projects and their API keys.

These commands use STRAIT_ADMIN_KEY when it is set (every project), else STRAIT_API_KEY (its own project).
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Group, RenderableType
from rich.text import Text

from strait_client._admin_models import ApiKey, CreatedApiKey, Project
from strait_client._enums import BudgetAction
from strait_client.cli._context import ClientGroup, Refused, client, refusing_bad_input
from strait_client.cli._parse import RATE_LIMIT
from strait_client.cli._render import details, output_option, show, table

RATE_LIMIT_HELP = "REQUESTS/WINDOW, e.g. 100/1s or 5000/1m"


@click.group(cls=ClientGroup)
def projects() -> None:
    """List, create and change projects (with the admin key in STRAIT_ADMIN_KEY)."""


def rate(limit: Any) -> str:
    return f"{limit.requests}/{limit.window.total_seconds():g}s" if limit else "-"


def projects_table(found: list[Project]) -> RenderableType:
    return table(["SLUG", "ID", "NAME", "RATE LIMIT", "BUDGET (µUSD)", "SPENT (µUSD)", "CREATED"],
                 ([p.slug, p.id, p.name, rate(p.api_rate_limit), p.monthly_budget_microusd,
                   p.month_to_date_spend_microusd, p.create_time] for p in found))


@projects.command("list")
@output_option
@click.pass_context
def list_projects(ctx: click.Context, output: str) -> None:
    """List the projects the key sees: all of them with the admin key, else its own."""
    found = list(client(ctx, admin=True).projects.list())
    show(output, found, lambda: projects_table(found))


@projects.command("get")
@click.argument("project_id")
@output_option
@click.pass_context
def get_project(ctx: click.Context, project_id: str, output: str) -> None:
    """Show project PROJECT_ID (proj_...)."""
    found = client(ctx, admin=True).projects.get(project_id)
    show(output, found, lambda: details(found))


@projects.command("create")
@click.argument("slug")
@click.option("--name", default="", help="Display name.")
@click.option("--rate-limit", type=RATE_LIMIT, help=f"API calls the project's keys share: {RATE_LIMIT_HELP}.")
@output_option
@click.pass_context
def create_project(ctx: click.Context, slug: str, name: str, rate_limit: dict[str, Any] | None, output: str) -> None:
    """Create a project named SLUG (needs the admin key)."""
    created = client(ctx, admin=True).projects.create(slug, name, api_rate_limit=rate_limit)
    show(output, created, lambda: details(created))


@projects.command("update")
@click.argument("project_id")
@click.option("--name", help="New display name.")
@click.option("--rate-limit", type=RATE_LIMIT, help=f"API calls the project's keys share: {RATE_LIMIT_HELP}.")
@click.option("--budget", "monthly_budget_microusd", type=click.IntRange(min=0), metavar="MICRO_USD",
              help="Monthly budget in micro-USD (1 USD = 1000000).")
@click.option("--no-budget", is_flag=True, help="Remove the monthly budget.")
@click.option("--budget-action", type=click.Choice([a.value for a in BudgetAction]),
              help="What a spent budget does: notify, or reject new runs.")
@output_option
@click.pass_context
def update_project(ctx: click.Context, /, project_id: str, no_budget: bool, output: str, **given: Any) -> None:
    """Change the given settings of project PROJECT_ID (needs the admin key)."""
    fields = {name: value for name, value in given.items() if value is not None}
    if given["rate_limit"] is not None:
        fields["api_rate_limit"] = fields.pop("rate_limit")
    if no_budget:
        fields["monthly_budget_microusd"] = None
    if not fields:
        raise Refused("name at least one setting to change (see `strait projects update --help`)")
    with refusing_bad_input("bad project settings"):
        updated = client(ctx, admin=True).projects.update(project_id, **fields)
    show(output, updated, lambda: details(updated))


@click.group(cls=ClientGroup)
def keys() -> None:
    """List, create, change and revoke API keys (of any project with STRAIT_ADMIN_KEY, else the key's own)."""


def keys_table(found: list[ApiKey]) -> RenderableType:
    return table(["ID", "NAME", "PREFIX", "PROJECT", "SCOPES", "RATE LIMIT", "CREATED", "REVOKED"],
                 ([k.id, k.name, k.key_prefix, k.project_id, k.scopes, rate(k.api_rate_limit), k.create_time,
                   k.revoke_time] for k in found))


def created_key(key: CreatedApiKey) -> RenderableType:
    return Group(details(key, skip=("secret",), extra=[("secret", key.secret)]),
                 Text("The secret is shown only this once: store it now.", style="yellow"))


@keys.command("list")
@click.option("--project", "project_id", default="", help="The project (proj_...); default: the key's own.")
@output_option
@click.pass_context
def list_keys(ctx: click.Context, project_id: str, output: str) -> None:
    """List a project's API keys, revoked ones included, without their secrets."""
    found = list(client(ctx, admin=True).projects.list_api_keys(project_id))
    show(output, found, lambda: keys_table(found))


@keys.command("create")
@click.option("--project", "project_id", default="", help="The key's project (proj_...); default: the key's own.")
@click.option("--name", default="", help="A label for the key.")
@click.option("--scope", "scopes", multiple=True,
              help="What it may do beyond the API, e.g. workers:connect for workers; repeat for more.")
@click.option("--rate-limit", type=RATE_LIMIT, help=f"The key's own limit (admin key only): {RATE_LIMIT_HELP}.")
@output_option
@click.pass_context
def create_key(ctx: click.Context, project_id: str, name: str, scopes: tuple[str, ...],
               rate_limit: dict[str, Any] | None, output: str) -> None:
    """Create an API key and print its secret (shown only once)."""
    created = client(ctx, admin=True).projects.create_api_key(name, project_id, api_rate_limit=rate_limit,
                                                              scopes=scopes)
    show(output, created, lambda: created_key(created))


@keys.command("update")
@click.argument("key_id")
@click.option("--name", help="New label.")
@click.option("--rate-limit", type=RATE_LIMIT, help=f"The key's own limit (admin key only): {RATE_LIMIT_HELP}.")
@click.option("--project-rate-limit", is_flag=True, help="Put the key back on its project's limit.")
@output_option
@click.pass_context
def update_key(ctx: click.Context, key_id: str, name: str | None, rate_limit: dict[str, Any] | None,
               project_rate_limit: bool, output: str) -> None:
    """Change the label or rate limit of API key KEY_ID (key_...)."""
    fields: dict[str, Any] = {"name": name} if name is not None else {}
    if rate_limit is not None or project_rate_limit:
        fields["api_rate_limit"] = rate_limit
    if not fields:
        raise Refused("name at least one setting to change (see `strait keys update --help`)")
    updated = client(ctx, admin=True).projects.update_api_key(key_id, **fields)
    show(output, updated, lambda: details(updated))


@keys.command("revoke")
@click.argument("key_id")
@output_option
@click.pass_context
def revoke_key(ctx: click.Context, key_id: str, output: str) -> None:
    """Revoke API key KEY_ID (key_...): it stops authenticating at once."""
    revoked = client(ctx, admin=True).projects.revoke_api_key(key_id)
    show(output, revoked, lambda: details(revoked))
