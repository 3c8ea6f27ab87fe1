#!/usr/bin/env python3
"""A server killed under load: wrk (50 keep-alive connections) runs for 15 s against two
nginx servers; one is killed (SIGKILL) after 5 s. Prints, for proxy and HAProxy on the same
config, the failed requests (socket errors + non-2xx) and the time from the kill to the
"is DOWN" line.

With --dns, a container that moves: server a is a name (app.test, dnsmasq, `hold valid 1s`)
served by nginx on 127.0.0.2; after 5 s the name moves to 127.0.0.3, where a second nginx
answers, and the first is killed at that moment. Prints the failed requests and the time
from the move to the "changed its IP" line, for each.

  failover.py [--proxy PATH] [--rounds 3] [--dns]
"""
import argparse, sys, os, re, signal, statistics, subprocess, tempfile, threading, time, socket

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import wait_port  # noqa: E402
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

CONFIG = """global
    maxconn 9000
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch

frontend f
    bind 127.0.0.1:18060
    default_backend app

backend app
    balance roundrobin
    server a 127.0.0.1:18001 check inter 500 fall 2 rise 2
    server b 127.0.0.1:18002 check inter 500 fall 2 rise 2
"""

DNS_PORT = 18053
DNS_CONFIG = CONFIG.replace("    server a 127.0.0.1:18001 check inter 500 fall 2 rise 2",
                            "    server a app.test:18001 resolvers dns init-addr none check inter 500 fall 2 rise 2") + """
resolvers dns
    nameserver local 127.0.0.1:%d
    hold valid 1s
    timeout resolve 1s
    timeout retry 1s
""" % DNS_PORT

NGINX = """worker_processes 1;
master_process off;
daemon off;
error_log stderr error;
pid %(dir)s/nginx-%(port)d.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  server { listen %(host)s:%(port)d; root /tmp/proxy-bench-www; } }
"""



def wrk_result(out):
    """wrk's requests, and its failed ones (socket errors and non-2xx/3xx answers)."""
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    return int(re.search(r"(\d+) requests in", out).group(1)), errors + non2xx


def nginx(work, host, port):
    conf = os.path.join(work, "nginx-%s-%d.conf" % (host, port))
    open(conf, "w").write((NGINX % {"dir": work, "host": host, "port": port}).replace("nginx-%d.pid" % port, "nginx-%s-%d.pid" % (host, port)))
    p = subprocess.Popen(["nginx", "-c", conf], stderr=subprocess.DEVNULL)
    wait_port(port, host=host)
    return p


def hosts(work, address):
    """Points app.test at `address`: dnsmasq re-reads the hosts directory (inotify)."""
    d = os.path.join(work, "hosts")
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(work, "app.tmp")
    open(tmp, "w").write("%s app.test\n" % address)
    os.rename(tmp, os.path.join(d, "app"))


def run_dns(name, argv, work):
    """The name moves from 127.0.0.2 to 127.0.0.3 under load; the old address dies."""
    hosts(work, "127.0.0.2")
    dns = subprocess.Popen(["dnsmasq", "-k", "--log-facility=-", "-u", "root", "--port=%d" % DNS_PORT,
                            "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                            "--hostsdir=" + os.path.join(work, "hosts"), "--pid-file=", "--local-ttl=0"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    old = nginx(work, "127.0.0.2", 18001)
    new = nginx(work, "127.0.0.3", 18001)
    other = nginx(work, "127.0.0.1", 18002)
    log = open(os.path.join(work, name + ".log"), "w+")
    p = subprocess.Popen(argv, stdout=log, stderr=log, cwd=ROOT)
    wait_port(18060)
    deadline = time.time() + 10
    while time.time() < deadline:
        log.seek(0)
        if re.search(r"app/a .*(changed its IP|is UP)|Server app/a is UP", log.read()):
            break
        time.sleep(0.05)
    time.sleep(1.5)
    wrk = subprocess.Popen(["wrk", "-t1", "-c50", "-d15s", "http://127.0.0.1:18060/"], stdout=subprocess.PIPE, text=True)
    time.sleep(5)
    moved_at = time.time()
    hosts(work, "127.0.0.3")
    old.send_signal(signal.SIGKILL)
    followed = None
    while wrk.poll() is None:
        log.seek(0)
        if followed is None and re.search(r"app/a changed its IP from 127\.0\.0\.2 to 127\.0\.0\.3", log.read()):
            followed = time.time() - moved_at
        time.sleep(0.01)
    requests, failed = wrk_result(wrk.stdout.read())
    p.terminate(); p.wait()
    for n in (old, new, other, dns):
        n.kill(); n.wait()
    return requests, failed, followed


def run(name, argv, work):
    nginxes = [nginx(work, "127.0.0.1", port) for port in (18001, 18002)]
    log = open(os.path.join(work, name + ".log"), "w+")
    p = subprocess.Popen(argv, stdout=log, stderr=log, cwd=ROOT)
    wait_port(18060)
    time.sleep(1.5)
    wrk = subprocess.Popen(["wrk", "-t1", "-c50", "-d15s", "http://127.0.0.1:18060/"], stdout=subprocess.PIPE, text=True)
    time.sleep(5)
    killed_at = time.time()
    nginxes[0].send_signal(signal.SIGKILL)
    detected = None
    while wrk.poll() is None:
        log.seek(0)
        if detected is None and re.search(r"Server app/a is DOWN", log.read()):
            detected = time.time() - killed_at
        time.sleep(0.01)
    requests, failed = wrk_result(wrk.stdout.read())
    p.terminate(); p.wait()
    for n in nginxes:
        n.kill(); n.wait()
    return requests, failed, detected


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", default=os.path.join(ROOT, ".build/release/proxy"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dns", action="store_true", help="the server's name moves to a new address")
    a = ap.parse_args()
    os.makedirs("/tmp/proxy-bench-www", exist_ok=True)
    open("/tmp/proxy-bench-www/index.html", "w").write("ok\n")
    work = tempfile.mkdtemp()
    cfg = os.path.join(work, "failover.cfg")
    open(cfg, "w").write(DNS_CONFIG if a.dns else CONFIG)
    results = {"proxy": [], "haproxy": []}
    for r in range(a.rounds):
        for name, argv in (("proxy", [a.proxy, "-f", cfg]), ("haproxy", ["haproxy", "-f", cfg])):
            req, failed, det = (run_dns if a.dns else run)(name, argv, work)
            results[name].append((req, failed, det))
            print("round %d %-8s requests %7d  failed %4d  %s %s" % (r + 1, name, req, failed, "followed" if a.dns else "detection",
                  "%.0f ms" % (det * 1000) if det is not None else "not seen"), flush=True)
    print()
    for name, rows in results.items():
        print("%-8s median failed %5d   median %s %6.0f ms" % (
            name, statistics.median(r[1] for r in rows), "time to follow" if a.dns else "detection",
            statistics.median((r[2] or 0) * 1000 for r in rows)))
    if a.dns:
        print("bar: no failed request (retries and redispatch cover the move), the move followed within ~1 s (hold valid 1s)")
    else:
        print("bar: failed requests at most those in flight on the killed server; 0 after detection")


if __name__ == "__main__":
    main()
