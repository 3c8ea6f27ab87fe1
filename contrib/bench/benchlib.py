"""Helpers shared by the benchmark drivers."""
import socket, time


def wait_port(port, timeout=10):
    """True once something accepts on 127.0.0.1:port, polling until `timeout`."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False
