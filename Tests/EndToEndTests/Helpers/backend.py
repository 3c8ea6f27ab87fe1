#!/usr/bin/env python3
"""Test backends for the end-to-end suite: real sockets, real HTTP/1.1.

  backend.py http PORT NAME   HTTP server; every response names NAME and echoes the request.
                              PORT may be HOST:PORT (another loopback address: 127.0.0.2:PORT).
  backend.py echo PORT        TCP echo server with half-close.

HTTP paths:
  /stats            JSON: request count, the last request's head (does not count itself), the
                    peak number of /slow requests answered at once, and the order in which
                    /slow requests with an id arrived
  /slow?ms=N[&id=I] answer after N ms
  /reset            close the connection with a reset, no answer
  /status/N         answer with status N
  /chunked          chunked response
  /close            response without length, ended by closing
  /big?bytes=N      N bytes of body
  /location         302 with Location: http://example.com/a
  /peer             200 "port=N": the port this connection comes from
  /segments         200 "segs_in=N": the TCP segments this connection had received when the
                    request was read (TCP_INFO), to see whether the handshake's ACK came alone
  /setcookie        200 with the server's own Set-Cookie: SERVERID=fromserver
  /ws               101 upgrade, then echo bytes
  /haproxy.check    200, or 500 when the file NAME.down exists in the working directory, or
                    404 when NAME.drain does
  anything else     200 "NAME <method> <path>\n" plus the request headers as X-Seen-*
"""
import json, os, socket, sys, threading, time
from orphan import exit_when_orphaned

exit_when_orphaned()

count = 0
last = {}
# Requests being answered now, and the most there ever were at once.
inflight = 0
peak = 0
order = []
lock = threading.Lock()


def read_head(conn, buf):
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin1"), rest


def read_body(conn, headers, rest):
    if headers.get("transfer-encoding", "").lower() == "chunked":
        data = rest
        body = b""
        while True:
            while b"\r\n" not in data:
                data += conn.recv(65536)
            line, data = data.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            while len(data) < size + 2:
                data += conn.recv(65536)
            body += data[:size]
            data = data[size + 2:]
            if size == 0:
                return body, data
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return rest[:n], rest[n:]


def send(conn, status, body=b"", headers=(), reason="OK"):
    out = "HTTP/1.1 %d %s\r\n" % (status, reason)
    for k, v in headers:
        out += "%s: %s\r\n" % (k, v)
    out += "Content-Length: %d\r\n\r\n" % len(body)
    conn.sendall(out.encode("latin1") + body)


def http_client(conn, name):
    global count, last, inflight, peak, order
    buf = b""
    try:
        while True:
            head, buf = read_head(conn, buf)
            if head is None:
                return
            lines = head.split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers = {}
            raw = []
            for l in lines[1:]:
                k, v = l.split(":", 1)
                headers[k.strip().lower()] = v.strip()
                raw.append((k.strip(), v.strip()))
            body, buf = read_body(conn, headers, buf)
            path, _, query = target.partition("?")
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            if path == "/stats":
                with lock:
                    send(conn, 200, json.dumps({"count": count, "last": last, "peak": peak, "order": order}).encode())
                continue
            with lock:
                count += 1
                last = {"method": method, "target": target, "version": version, "headers": raw, "body": len(body)}
            if path == "/slow":
                with lock:
                    inflight += 1
                    peak = max(peak, inflight)
                    if "id" in params:
                        order.append(int(params["id"]))
                time.sleep(int(params.get("ms", "1000")) / 1000)
                with lock:
                    inflight -= 1
            if path == "/reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
                return
            if path.startswith("/status/"):
                code = int(path[8:])
                send(conn, code, b"" if code in (204, 304) else ("%s %d\n" % (name, code)).encode(), reason="X")
                continue
            if path == "/chunked":
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n chunks\r\n0\r\n\r\n")
                continue
            if path == "/close":
                conn.sendall(("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n%s until close\n" % name).encode())
                conn.close()
                return
            if path == "/big":
                n = int(params.get("bytes", "1000000"))
                send(conn, 200, b"x" * n)
                continue
            if path == "/setcookie":
                send(conn, 200, b"set\n", [("Set-Cookie", "SERVERID=fromserver; path=/")])
                continue
            if path == "/peer":
                send(conn, 200, ("port=%d\n" % conn.getpeername()[1]).encode())
                continue
            if path == "/segments":
                info = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
                send(conn, 200, ("segs_in=%d\n" % int.from_bytes(info[140:144], "little")).encode())
                continue
            if path == "/location":
                send(conn, 302, b"", [("Location", "http://example.com/a")], reason="Found")
                continue
            if path == "/haproxy.check":
                if os.path.exists(name + ".down"):
                    send(conn, 500, b"down\n", reason="Internal Server Error")
                elif os.path.exists(name + ".drain"):
                    send(conn, 404, b"draining\n", reason="Not Found")
                else:
                    send(conn, 200, b"up\n")
                continue
            if path == "/ws":
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                data = buf
                while True:
                    if data:
                        conn.sendall(data)
                    data = conn.recv(65536)
                    if not data:
                        conn.shutdown(socket.SHUT_WR)
                        return
            extra = [("X-Seen-" + k, v) for k, v in raw if k.lower() in ("x-forwarded-for", "x-test", "host", "cookie", "connection")]
            if method == "HEAD":
                conn.sendall(("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n").encode())
                continue
            send(conn, 200, ("%s %s %s body=%d\n" % (name, method, target, len(body))).encode(), [("X-Backend", name)] + extra)
            if headers.get("connection", "").lower() == "close":
                conn.close()
                return
    except (ConnectionError, OSError):
        return


def echo_client(conn):
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                conn.shutdown(socket.SHUT_WR)
                return
            conn.sendall(data)
    except OSError:
        return


def main():
    kind, where = sys.argv[1], sys.argv[2]
    host, port = where.rsplit(":", 1) if ":" in where else ("127.0.0.1", where)
    port = int(port)
    name = sys.argv[3] if len(sys.argv) > 3 else "b%d" % port
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(512)
    while True:
        conn, _ = s.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = echo_client if kind == "echo" else http_client
        args = (conn,) if kind == "echo" else (conn, name)
        threading.Thread(target=target, args=args, daemon=True).start()


if __name__ == "__main__":
    main()
