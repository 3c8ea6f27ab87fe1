#!/usr/bin/env python3
"""A server that says how its connections' handshakes ended:

  segments_peer.py PORT LOG

Each connection's first line is answered with "+PONG\\r\\n", and the TCP segments the
connection had received by then (TCP_INFO's segs_in) are appended to LOG, one number a
line: 2 when the handshake's last ACK rode on that line (SYN, line), 3 when it came alone.
"""
import socket, sys, threading
from orphan import exit_when_orphaned

exit_when_orphaned()
lock = threading.Lock()


def serve(conn):
    with conn:
        conn.settimeout(5)
        data = b""
        try:
            while b"\n" not in data:
                chunk = conn.recv(1024)
                if not chunk:
                    return
                data += chunk
            info = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
            with lock, open(sys.argv[2], "a") as log:
                log.write("%d\n" % int.from_bytes(info[140:144], "little"))
            conn.sendall(b"+PONG\r\n")
            conn.recv(1024)
        except OSError:
            pass


server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(64)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
