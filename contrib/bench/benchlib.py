"""Helpers shared by the benchmark drivers."""
import os, socket, subprocess, time


def dnsmasq_records(directory, port, count):
    """A dnsmasq on 127.0.0.1:`port` answering app.test with `count` A records (127.2.x.y),
    from a hosts directory under `directory`, EDNS up to 8192 bytes; returns its process."""
    os.makedirs(os.path.join(directory, "hosts"), exist_ok=True)
    with open(os.path.join(directory, "hosts", "app"), "w") as f:
        for i in range(count):
            f.write(f"127.2.{i // 250}.{i % 250 + 1} app.test\n")
    return subprocess.Popen(["dnsmasq", "-k", "--log-facility=-", "-u", "root", f"--port={port}", "--listen-address=127.0.0.1",
                             "--bind-interfaces", "--no-resolv", "--no-hosts", f"--hostsdir={directory}/hosts", "--pid-file=",
                             "--local-ttl=0", "--edns-packet-max=8192"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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
