#!/usr/bin/env python3
"""An agent-check agent: each connection gets the current contents of FILE as one line.

  agent.py PORT FILE     (what the proxy sent, if anything, is appended to FILE.seen)
"""
import socket, sys, threading
from orphan import exit_when_orphaned

exit_when_orphaned()
port, path = int(sys.argv[1]), sys.argv[2]


def serve(conn):
    try:
        conn.settimeout(0.2)
        try:
            sent = conn.recv(1024)
            if sent:
                with open(path + ".seen", "ab") as f:
                    f.write(sent)
        except socket.timeout:
            pass
        with open(path, "rb") as f:
            conn.sendall(f.read().strip() + b"\n")
    finally:
        conn.close()


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
