#!/usr/bin/env python3
"""Runs a command as this process's child, and ends it with this process.

  under_parent.py COMMAND [ARGS...]

For daemons such as dnsmasq that close every descriptor they inherit: Foundation's Process
watches a descriptor it gives the child to learn that the child exited, so it would wait on
the daemon forever. This process keeps that descriptor; the command gets SIGKILL when this
process dies (PR_SET_PDEATHSIG), and this process exits when the test run is gone.

A daemon that drops capabilities (dnsmasq does, even as root) changes its credentials, which
clears PR_SET_PDEATHSIG: a watcher process, holding no descriptor of ours, kills the command
once this process is gone.
"""
import ctypes, os, signal, subprocess, sys
from orphan import exit_when_orphaned

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_parent():
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


WATCH = """
import os, signal, sys, time
parent, child = int(sys.argv[1]), int(sys.argv[2])
while os.getppid() == parent:
    try:
        os.kill(child, 0)
    except OSError:
        sys.exit(0)
    time.sleep(0.2)
try:
    os.kill(child, signal.SIGKILL)
except OSError:
    pass
"""

exit_when_orphaned()
child = subprocess.Popen(sys.argv[1:], preexec_fn=die_with_parent, close_fds=False)
subprocess.Popen([sys.executable, "-c", WATCH, str(os.getpid()), str(child.pid)], close_fds=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
sys.exit(child.wait())
