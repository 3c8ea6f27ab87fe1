#!/usr/bin/env python3
"""Sends a file's bytes on one TCP connection and writes everything received to stdout.

  rawclient.py PORT FILE [--half-close] [--timeout SECONDS]

Sending runs in a thread while the main thread reads, so a large echo cannot deadlock.
"""
import socket, sys, threading

port, path = int(sys.argv[1]), sys.argv[2]
half_close = "--half-close" in sys.argv
timeout = float(sys.argv[sys.argv.index("--timeout") + 1]) if "--timeout" in sys.argv else 3.0
data = open(path, "rb").read()
s = socket.create_connection(("127.0.0.1", port))


def sender():
    try:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
    except OSError:
        pass


threading.Thread(target=sender, daemon=True).start()
s.settimeout(timeout)
out = sys.stdout.buffer
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        out.write(b)
except (socket.timeout, OSError):
    pass
out.flush()
