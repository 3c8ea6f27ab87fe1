#!/usr/bin/env python3
"""Runs a command as this process's child, and ends it with this process.

  under_parent.py COMMAND [ARGS...]

For daemons such as dnsmasq that close every descriptor they inherit: Foundation's Process
watches a descriptor it gives the child to learn that the child exited, so it would wait on
the daemon forever. This process keeps that descriptor; the command gets SIGKILL when this
process dies (PR_SET_PDEATHSIG), and this process exits when the test run is gone.
"""
import ctypes, signal, subprocess, sys
from orphan import exit_when_orphaned

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_parent():
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


exit_when_orphaned()
child = subprocess.Popen(sys.argv[1:], preexec_fn=die_with_parent, close_fds=False)
sys.exit(child.wait())
