#!/usr/bin/env python3
"""A server that speaks first, for server-first check protocols (SMTP):

  talker.py PORT GREETING [REPLY]

Each connection gets GREETING; once the client says something (or after a second), REPLY
if given; then the connection is closed. '\\r\\n' in the texts stands for CRLF.
"""
import socket, sys
from orphan import exit_when_orphaned

exit_when_orphaned()


def text(s):
    return s.encode().replace(b"\\r\\n", b"\r\n")


server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(64)
while True:
    conn, _ = server.accept()
    try:
        conn.sendall(text(sys.argv[2]))
        conn.settimeout(1)
        try:
            conn.recv(1024)
        except OSError:
            pass
        if len(sys.argv) > 3:
            conn.sendall(text(sys.argv[3]))
    except OSError:
        pass
    conn.close()
