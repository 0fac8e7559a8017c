"""Runs a command that dies with the process that started it:

    python _launch.py PARENT_PID SIGNAL USER -- COMMAND [ARG...]

It becomes the leader of a session of its own (a Ctrl-C in the terminal reaches `strait dev` only, which then
stops its backends in order), switches to USER when one is given (PostgreSQL refuses to run as root), asks
Linux to send it SIGNAL when PARENT_PID's thread ends (PR_SET_PDEATHSIG, armed after the user switch, which
would clear it), and then becomes COMMAND (exec: the same process). Elsewhere than Linux the signal is not
armed, and the next `strait dev` stops what was left.

A script of its own, run by path with the standard library only: the parent starts it with a plain spawn,
never with a `preexec_fn`, because forking a process whose gRPC threads are busy can crash the child.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def main(argv: list[str]) -> None:
    parent, signal_number, user, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit("usage: _launch.py PARENT_PID SIGNAL USER -- COMMAND [ARG...]")
    os.setsid()
    if user:
        entry = pwd.getpwnam(user)
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal_number), 0, 0, 0) != 0:
            raise SystemExit(f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}")
    if os.getppid() != int(parent):
        raise SystemExit(1)  # the parent died before the signal was armed: do not start at all
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
