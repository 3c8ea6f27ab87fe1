#!/usr/bin/env python3
"""Opens N connections, completes one keep-alive request on each, then holds them idle.

  idle_clients.py PORT N      prints "ready <N>" once every response arrived, then waits
                              until stdin closes, and exits (closing every connection).
"""
import resource, selectors, socket, sys

port, n = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 100), hard))
sel = selectors.DefaultSelector()
request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
socks = []
pending = 0


def step(events):
    """Sends the request on writable sockets, reads answers; returns how many completed."""
    done = 0
    for key, ev in events:
        s2 = key.fileobj
        if ev & selectors.EVENT_WRITE:
            s2.send(request)
            sel.modify(s2, selectors.EVENT_READ, b"")
        else:
            data = key.data + s2.recv(65536)
            if b"\r\n\r\n" in data:
                sel.unregister(s2)
                done += 1
            else:
                sel.modify(s2, selectors.EVENT_READ, data)
    return done


for i in range(n):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    sel.register(s, selectors.EVENT_WRITE, b"")
    socks.append(s)
    pending += 1
    # Keep the accept queue from overflowing: drain as we go.
    while pending > 512:
        pending -= step(sel.select(timeout=5))
while pending > 0:
    events = sel.select(timeout=10)
    if not events:
        break
    pending -= step(events)
print("ready %d" % (n - pending), flush=True)
sys.stdin.read()
