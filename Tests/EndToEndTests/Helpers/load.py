#!/usr/bin/env python3
"""Steady HTTP load for the reload tests: counts every request that did not get a 200.

  load.py PORT STOPFILE [--keepalive N] [--close N] [--path /]

Runs N keep-alive clients (one connection each, re-opened only after a clean close by the
server) and N clients that open a connection per request, until STOPFILE exists. Then prints
one JSON line: {"ok": ..., "failed": ..., "errors": [first few reasons]}. Each client waits a
little between requests, so that the load is steady and light on these 2 shared cores.
"""
import json, os, socket, sys, threading, time
from orphan import exit_when_orphaned

exit_when_orphaned()

port, stopfile = int(sys.argv[1]), sys.argv[2]
def arg(name, default):
    return type(default)(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default
keepalive, close, path = arg("--keepalive", 4), arg("--close", 4), arg("--path", "/")
lock = threading.Lock()
stats = {"ok": 0, "failed": 0, "errors": []}


def record(ok, why=None):
    with lock:
        if ok:
            stats["ok"] += 1
        else:
            stats["failed"] += 1
            if len(stats["errors"]) < 10:
                stats["errors"].append(why)


def read_response(f):
    """Reads one response; returns (status, keep-alive?) or raises."""
    line = f.readline()
    if not line:
        raise EOFError("connection closed before a response")
    status = int(line.split()[1])
    length, keep = 0, True
    while True:
        h = f.readline()
        if not h:
            raise EOFError("connection closed in the middle of the head")
        if h in (b"\r\n", b"\n"):
            break
        name, _, value = h.decode("latin1").partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value == "close":
            keep = False
    body = f.read(length)
    if len(body) != length:
        raise EOFError("short body")
    return status, keep


def client(persistent):
    conn, f = None, None
    while not os.path.exists(stopfile):
        try:
            if conn is None:
                conn = socket.create_connection(("127.0.0.1", port), timeout=10)
                f = conn.makefile("rb")
            hdr = "" if persistent else "Connection: close\r\n"
            conn.sendall(("GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n" % (path, hdr)).encode())
            status, keep = read_response(f)
            record(status == 200, "status %d" % status)
            if not persistent or not keep:
                conn.close(); conn = None
        except Exception as e:  # every failure counts, whatever it was
            record(False, "%s: %s" % (type(e).__name__, e))
            try:
                conn and conn.close()
            except Exception:
                pass
            conn = None
        time.sleep(0.005)
    if conn is not None:
        conn.close()


threads = [threading.Thread(target=client, args=(True,)) for _ in range(keepalive)]
threads += [threading.Thread(target=client, args=(False,)) for _ in range(close)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(stats), flush=True)
