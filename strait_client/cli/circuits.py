"""`strait circuits list|reset`: the circuit breakers of the project's job endpoints."""

from __future__ import annotations

import click

from strait_client.cli._context import ClientGroup, client
from strait_client.cli._render import details, output_option, show, table


@click.group(cls=ClientGroup)
def circuits() -> None:
    """Show and reset the circuit breakers of the project's endpoints."""


@circuits.command("list")
@output_option
@click.pass_context
def list_circuits(ctx: click.Context, output: str) -> None:
    """List the endpoints that have failed since their last success, with their circuit state."""
    found = list(client(ctx).circuits.list())
    show(output, found, lambda: table(
        ["ENDPOINT", "STATE", "FAILURES", "OPEN UNTIL", "LAST ERROR"],
        ([c.endpoint_url, c.state, c.consecutive_failures, c.open_until, c.last_error] for c in found)))


@circuits.command("reset")
@click.argument("endpoint_url")
@output_option
@click.pass_context
def reset_circuit(ctx: click.Context, endpoint_url: str, output: str) -> None:
    """Close the circuit of ENDPOINT_URL now (e.g. after fixing the endpoint): its waiting runs go out again."""
    circuit = client(ctx).circuits.reset(endpoint_url)
    show(output, circuit, lambda: details(circuit))
