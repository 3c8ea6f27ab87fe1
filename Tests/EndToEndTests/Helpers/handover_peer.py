#!/usr/bin/env python3
"""A stand-in old process that speaks proxy's handover protocol 2 (see Handover.swift).

  handover_peer.py NAME_PID PORT READYFILE [--state LINE]... [--hint TEXT]

Listens on the abstract name proxy-handover-NAME_PID, holds a listening socket on
127.0.0.1:PORT, and hands it over to whoever asks: a greeting frame, one batch with the
descriptor and a hint line, then the state lines and 'end'. On 'stop' it answers 'stopped'.
It touches READYFILE once it listens, and stays up for a minute.

Used for a peer from the future (unknown state lines and hint fields, which must be
skipped) and for an impostor (NAME_PID is another process's pid, and this runs as another
uid: the new proxy must refuse it).
"""
import os, socket, struct, sys, threading, time
from orphan import exit_when_orphaned

exit_when_orphaned()

name_pid, port, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
states = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "--state"]
hint = sys.argv[sys.argv.index("--hint") + 1] if "--hint" in sys.argv else \
    "listener inet,ipv4,127.0.0.1,%d v4v6=0,v6only=0,transparent=0,if=,ns=" % port


def frame(text):
    data = text.encode()
    return struct.pack(">I", len(data)) + data


def read_frame(c):
    head = b""
    while len(head) < 4:
        chunk = c.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    n = struct.unpack(">I", head)[0]
    body = b""
    while len(body) < n:
        chunk = c.recv(n - len(body))
        if not chunk:
            return None
        body += chunk
    return body.decode()


ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(128)
ep = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ep.bind("\0proxy-handover-%d" % name_pid)
ep.listen(4)
open(ready, "w").close()
ep.settimeout(60)
try:
    c, _ = ep.accept()
    if read_frame(c) == "PROXY-HANDOVER 2 sockets":
        c.sendall(frame("PROXY-HANDOVER 2 sockets 1"))
        socket.send_fds(c, [frame("batch 1\n%s\n" % hint)], [ls.fileno()])
        c.sendall(frame("".join(s + "\n" for s in states) + "end\n"))
        if read_frame(c) == "stop":
            c.sendall(frame("stopped"))
except OSError:
    pass
time.sleep(60)
