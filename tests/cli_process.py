"""The `strait` command line as a real subprocess: with pipes (`Cli`), or on a pseudo-terminal (`Terminal`),
where it draws its live views."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import struct
import sys
import termios
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import eventually

STRAIT = (sys.executable, "-m", "strait_client.cli")
# Colours, cursor moves and the other control sequences a terminal interprets.
CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-B]|\r")


def cli_env(address: str, key: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRAIT_")}
    env.update({"STRAIT_ADDRESS": address, "STRAIT_API_KEY": key, **extra})
    return env


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, f"exit {self.code}: {self.err}"
        return json.loads(self.out)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines()]


@dataclass
class Cli:
    """Runs `strait ARGS...` with the environment given (STRAIT_ADDRESS, STRAIT_API_KEY...)."""

    env: dict[str, str]

    async def __call__(self, *args: str, stdin: str | None = None, timeout: float = 60) -> Result:
        proc = await asyncio.create_subprocess_exec(
            *STRAIT, *args, env=self.env, stdin=asyncio.subprocess.PIPE if stdin is not None else
            asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None), timeout)
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())

    async def json(self, *args: str, stdin: str | None = None) -> Any:
        return (await self(*args, "-o", "json", stdin=stdin)).json()

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        """A long-running command (`runs tail`), its stdout piped."""
        return await asyncio.create_subprocess_exec(*STRAIT, *args, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


@dataclass
class Terminal:
    """A command on a 120x40 pseudo-terminal; `screen` is everything it wrote, control sequences removed."""

    proc: asyncio.subprocess.Process
    master: int
    _raw: bytearray = field(default_factory=bytearray)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    async def start(cls, args: tuple[str, ...], env: dict[str, str]) -> Terminal:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        term_env = {**env, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
        proc = await asyncio.create_subprocess_exec(*args, env=term_env, stdin=slave, stdout=slave, stderr=slave,
                                                    start_new_session=True)
        os.close(slave)
        terminal = cls(proc, master)
        threading.Thread(target=terminal._read, daemon=True).start()
        return terminal

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every copy of the other end is closed
                chunk = b""
            if not chunk:
                os.close(self.master)
                return
            with self._lock:
                self._raw.extend(chunk)

    @property
    def raw(self) -> str:
        with self._lock:
            return self._raw.decode(errors="replace")

    @property
    def screen(self) -> str:
        return CONTROL.sub("", self.raw)

    async def wait_for(self, *texts: str, timeout: float = 30) -> None:
        async def shown() -> bool:
            return all(text in self.screen for text in texts)
        try:
            await eventually(shown, timeout)
        except AssertionError:
            raise AssertionError(f"{texts} not shown; the screen:\n{self.screen}") from None

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    async def exit_code(self, timeout: float = 30) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
