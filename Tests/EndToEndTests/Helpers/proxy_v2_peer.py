#!/usr/bin/env python3
"""A server that reads a PROXY protocol v2 header and answers an HTTP request with what the
header said, as JSON: the addresses and every TLV (the SSL TLV's flags, verify result and
sub-TLVs decoded). Nothing in Debian decodes the SSL TLV (nginx 1.22 has no $proxy_protocol_tlv_*),
so this small parser stands in for the server behind the proxy.

    proxy_v2_peer.py PORT
"""
import json
import socket
import struct
import sys
import threading

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def tlvs(data):
    out = []
    i = 0
    while i + 3 <= len(data):
        kind, length = data[i], struct.unpack("!H", data[i + 1:i + 3])[0]
        value = data[i + 3:i + 3 + length]
        item = {"type": kind}
        if kind == 0x20:
            item["client"] = value[0]
            item["verify"] = struct.unpack("!I", value[1:5])[0]
            item["sub"] = {hex(t["type"]): t["value"] for t in tlvs(value[5:])}
        else:
            item["value"] = value.decode("latin-1")
        out.append(item)
        i += 3 + length
    return out


def serve(conn):
    try:
        header = read_exact(conn, 16)
        if header[:12] != SIGNATURE:
            conn.close()
            return
        length = struct.unpack("!H", header[14:16])[0]
        body = read_exact(conn, length)
        family = header[13]
        result = {"command": header[12] & 0x0F, "family": family}
        rest = body
        if family == 0x11:
            src, dst, sport, dport = struct.unpack("!4s4sHH", body[:12])
            result["source"] = "%s:%d" % (socket.inet_ntoa(src), sport)
            rest = body[12:]
        elif family == 0x21:
            rest = body[36:]
        result["tlvs"] = tlvs(rest)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                break
            request += chunk
        text = json.dumps(result).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(text) + text)
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


def main():
    port = int(sys.argv[1])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
