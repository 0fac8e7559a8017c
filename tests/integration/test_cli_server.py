"""The server's commands under `strait`: `migrate --rollback` asks first (on a throwaway database, never the
shared one), `dev`/`serve`/`migrate` say what to install when the server's dependencies are missing, and
`strait worker` runs a Worker."""

from __future__ import annotations

import asyncio
import sys

import psycopg

from tests.backends import _psycopg_url
from tests.cli_process import STRAIT, Cli, Terminal, cli_env


def tables_exist(database_url: str) -> bool:
    with psycopg.connect(_psycopg_url(database_url), autocommit=True) as conn:
        return conn.execute("SELECT to_regclass('runs') IS NOT NULL").fetchone() == (True,)


def migrate_env(database_url: str) -> dict[str, str]:
    return cli_env("127.0.0.1:1", "", STRAIT_DATABASE_URL=database_url, STRAIT_LOG_LEVEL="warning")


async def test_rollback_without_yes_is_refused_when_it_cannot_ask(database_url: str) -> None:
    cli = Cli(migrate_env(database_url))
    refused = await cli("migrate", "--rollback")  # standard input is not a terminal
    assert refused.code == 2
    assert "pass --yes to confirm" in refused.err and "drops every Strait table" in refused.err
    assert "postgres@" not in refused.err  # the URL's user is redacted
    assert await asyncio.to_thread(tables_exist, database_url)

    done = await cli("migrate", "--rollback", "--yes")
    assert done.code == 0, done.err
    assert done.out == "rolled back all migrations\n"
    assert not await asyncio.to_thread(tables_exist, database_url)


async def test_rollback_asks_on_a_terminal(database_url: str) -> None:
    env = migrate_env(database_url)
    declined = await Terminal.start((*STRAIT, "migrate", "--rollback"), env)
    await declined.wait_for("dropping every Strait table and its data? [y/N]")
    declined.type("n\n")
    assert await declined.exit_code() == 2
    assert "nothing rolled back" in declined.screen
    assert await asyncio.to_thread(tables_exist, database_url)

    accepted = await Terminal.start((*STRAIT, "migrate", "--rollback"), env)
    await accepted.wait_for("[y/N]")
    accepted.type("y\n")
    assert await accepted.exit_code() == 0
    assert "rolled back all migrations" in accepted.screen
    assert not await asyncio.to_thread(tables_exist, database_url)


async def _strait_without(blocked: str, *args: str) -> tuple[int, str]:
    """`strait ARGS` in a Python where the module `blocked` cannot be imported."""
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            f"from strait_client.cli import main; sys.exit(main({list(args)!r}))")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=cli_env("127.0.0.1:1", ""),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_server_commands_name_the_extra_to_install() -> None:
    for command in ("dev", "serve", "migrate"):
        code, err = await _strait_without("asyncpg", command)
        assert code == 2
        assert err.splitlines() == [f"strait: `strait {command}` needs the server's dependencies, which are not "
                                    "installed (import of asyncpg halted; None in sys.modules): "
                                    "pip install 'strait[server]'"]


async def test_without_the_cli_extra_only_the_server_commands_run() -> None:
    code, err = await _strait_without("click", "jobs", "list")
    assert code == 2 and "needs the `cli` extra" in err and "pip install 'strait[cli]'" in err
    code, err = await _strait_without("click", "migrate")  # reaches the server's own parser
    assert code == 2 and err.strip() == "strait: STRAIT_DATABASE_URL must be set"


async def test_worker_refuses_a_target_that_is_not_a_worker() -> None:
    cli = Cli(cli_env("127.0.0.1:1", "strait_x"))
    assert (await cli("worker", "nothing-here")).err.strip() == (
        "strait: name the worker as module:attribute, not 'nothing-here'")
    missing = await cli("worker", "no_such_module:worker")
    assert missing.code == 2 and "cannot load 'no_such_module:worker'" in missing.err
    wrong = await cli("worker", "json:dumps")
    assert wrong.code == 2 and "'json:dumps' is a function, not a strait_client Worker" in wrong.err
