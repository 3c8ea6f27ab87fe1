"""Hostile TLS clients against a TLS port: prints one line per case, what the server did.

  hostile_tls.py PORT
  truncated  the first 40 bytes of a real ClientHello, then FIN
  trickled   a real ClientHello one byte every 5 ms, then the handshake completes
"""
import socket, ssl, sys, time

port = int(sys.argv[1])


def client_hello(version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version:
        ctx.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return obj, incoming, outgoing, outgoing.read()


def finish(sock, obj, incoming, outgoing):
    sock.settimeout(5)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            data = outgoing.read()
            if data:
                sock.sendall(data)
            chunk = sock.recv(65536)
            if not chunk:
                return "closed"
            incoming.write(chunk)
    data = outgoing.read()
    if data:
        sock.sendall(data)
    obj.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    sock.sendall(outgoing.read())
    answer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        incoming.write(chunk)
        try:
            while True:
                got = obj.read(65536)
                if not got:
                    break
                answer += got
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
    return answer.split(b"\r\n")[0].decode(errors="replace")


# truncated
_, _, _, hello = client_hello()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(hello[:40])
s.shutdown(socket.SHUT_WR)
s.settimeout(5)
try:
    got = s.recv(100)
    print("truncated", "closed" if not got else "answered %d bytes" % len(got))
except OSError as e:
    print("truncated", "reset" if "reset" in str(e).lower() else str(e))
s.close()

# trickled
obj, incoming, outgoing, hello = client_hello()
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for b in hello:
    s.sendall(bytes([b]))
    time.sleep(0.005)
print("trickled", finish(s, obj, incoming, outgoing))
s.close()

