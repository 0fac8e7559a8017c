"""The backend processes of `strait dev`: started as children that die with it, stopped by signal, and found
again (by pid file) when an earlier run left one behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

LAUNCHER = Path(__file__).with_name("_launch.py")


class BackendError(RuntimeError):
    """An embedded backend could not be started."""


def spawn(command: Sequence[str], *, death_signal: signal.Signals, user: str = "",
          output: IO[str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Starts `command` through the launcher: in a session of its own, as `user` when given, and sent
    `death_signal` by Linux when the calling thread ends (so also when this process is killed).

    Call it from a thread that lives as long as the child should (the main thread): Linux watches the thread."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("embedded backends are started from the main thread (Linux ties them to it)")
    argv = [sys.executable, "-I", "-S", str(LAUNCHER), str(os.getpid()), str(int(death_signal)), user, "--",
            *command]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT if output else subprocess.DEVNULL, cwd=cwd)


def stop_child(process: subprocess.Popen[bytes], first: signal.Signals, timeout: float) -> None:
    """Sends `first` (the program's clean shutdown) and waits; kills it when it takes longer than `timeout`."""
    if process.poll() is not None:
        return
    process.send_signal(first)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def alive_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in the first line of `pid_file` when that process still runs and its command line mentions
    `marker` (a path of its own, so a recycled pid is never mistaken for it); None otherwise."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _runs(pid) and marker in _command_line(pid) else None


def stop_leftover(pid: int, first: signal.Signals, timeout: float) -> None:
    """Stops a process that is not our child (an earlier run's), escalating to SIGKILL after `timeout`."""
    for sig, wait in ((first, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _runs(pid):
                return
            time.sleep(0.05)
    raise BackendError(f"process {pid} left by an earlier run did not stop")


def _runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (ended, not yet reaped by its parent) no longer runs
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        if sys.platform == "linux":
            return ""
        # Without /proc: ps names the command.
        found = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
        return found.stdout
