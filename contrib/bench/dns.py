"""Run-time DNS, proxy beside HAProxy 2.6: one FQDN with 200 A records (dnsmasq) filling a
200-slot `server-template`, `accepted_payload_size 8192`, `hold valid 1s`, no traffic.

Each proxy runs alone on the same file (ports aside) until every slot holds an address, then
its CPU is read over --seconds (`perf stat -e task-clock` when perf is installed: /proc's
10 ms ticks are too coarse for so little); the bar is < 2% of one core.
  python3 contrib/bench/dns.py --proxy .build/release/proxy [--seconds 20]
"""
import argparse, os, shutil, signal, socket, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import dnsmasq_records  # noqa: E402

RECORDS = 200


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def config(port, dns_port, sock):
    return f"""global
    nbthread 1
    stats socket {sock} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
resolvers dns
    nameserver local 127.0.0.1:{dns_port}
    accepted_payload_size 8192
    hold valid 1s
frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    server-template srv {RECORDS} app.test:8080 resolvers dns init-addr none resolve-prefer ipv4
"""


def cli(sock, command):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    try:
        s.connect(sock)
        s.sendall(command.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out.decode()
    except OSError:
        return ""
    finally:
        s.close()


def filled(sock):
    return sum(1 for line in cli(sock, "show stat").splitlines()
               if line.startswith("app,srv") and ",MAINT (resolution)," not in line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--seconds", type=int, default=20)
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="dns-bench-")
    dns_port = 29653
    dns = dnsmasq_records(d, dns_port, RECORDS)
    results = {}
    try:
        for name, binary, port in (("proxy", a.proxy, 29680), ("haproxy", shutil.which("haproxy"), 29681)):
            sock = os.path.join(d, f"{name}.sock")
            cfg = os.path.join(d, f"{name}.cfg")
            with open(cfg, "w") as f:
                f.write(config(port, dns_port, sock))
            p = subprocess.Popen([binary, "-f", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 30
            while time.time() < deadline and filled(sock) < RECORDS:
                time.sleep(0.2)
            count = filled(sock)
            if count < RECORDS:
                p.kill()
                sys.exit(f"{name}: only {count} of {RECORDS} slots filled")
            time.sleep(1)
            before = cpu_seconds(p.pid)
            if shutil.which("perf"):
                out = subprocess.run(["perf", "stat", "-x,", "-e", "task-clock", "-p", str(p.pid), "sleep", str(a.seconds)],
                                     capture_output=True, text=True).stderr
                used = float(out.strip().splitlines()[-1].split(",")[0]) / 1000
            else:
                time.sleep(a.seconds)
                used = cpu_seconds(p.pid) - before
            still = filled(sock)
            p.send_signal(signal.SIGTERM)
            p.wait(30)
            results[name] = (used / a.seconds * 100, still)
    finally:
        dns.kill()
        shutil.rmtree(d, ignore_errors=True)
    print(f"DNS: one name, {RECORDS} A records, a {RECORDS}-slot server-template, hold valid 1s, no traffic, {a.seconds} s each:")
    for name, (pct, still) in results.items():
        print(f"  {name:8} {pct:5.2f}% of a core   ({still}/{RECORDS} slots filled at the end)")
    pct = results["proxy"][0]
    print(f"  bar < 2% of a core: {'yes' if pct < 2 else 'NO'}")


if __name__ == "__main__":
    main()
