"""Helpers shared by the benchmark drivers."""
import socket, time


def wait_port(port, timeout=10, host="127.0.0.1"):
    """True once something accepts on host:port, polling until `timeout`."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def cli(path, line):
    """One command line to the runtime API's UNIX socket at `path`; the whole answer."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    s.sendall((line + "\n").encode())
    # HAProxy's master CLI answers a non-interactive line once the client has finished.
    s.shutdown(socket.SHUT_WR)
    out = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        out += c
    s.close()
    return out.decode()
