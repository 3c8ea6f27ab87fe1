#!/usr/bin/env python3
"""HAProxy and proxy side by side on the same config file, one thread each.

Runs alternating rounds and prints, for each figure, the median of each proxy and the
median ratio: keep-alive req/s and `Connection: close` req/s (wrk, 50 connections), CPU
time per request (utime + stime from /proc/PID/stat), p99 latency at a fixed rate (hey),
TCP throughput of one 1 GiB download, and RSS with N idle keep-alive connections.

  engine.py [--rounds 5] [--duration 10] [--idle 8000] [--proxy PATH]
"""
import argparse, os, re, signal, statistics, subprocess, sys, time, socket

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import wait_port  # noqa: E402
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CONFIG = os.path.join(HERE, "http.cfg")
WWW = "/tmp/proxy-bench-www"



def cpu_ticks(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Subject:
    def __init__(self, name, argv):
        self.name, self.argv, self.proc = name, argv, None

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        if not wait_port(18080) or not wait_port(18090):
            raise SystemExit("%s did not start" % self.name)
        return self

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(0.3)


def wrk(duration, close=False):
    args = ["wrk", "-t1", "-c50", "-d%ds" % duration, "http://127.0.0.1:18080/"]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    return rps, total, errors, non2xx


def hey(duration, rate_per_worker=400, workers=50):
    out = subprocess.run(["hey", "-z", "%ds" % duration, "-c", str(workers), "-q", str(rate_per_worker),
                          "http://127.0.0.1:18080/"], capture_output=True, text=True).stdout
    p99 = float(re.search(r"99%+ in ([\d.]+) secs", out).group(1)) * 1000
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return p99, rps


def tcp_gib():
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}", "http://127.0.0.1:18090/1g.bin"],
                         capture_output=True, text=True).stdout
    return float(out) / (1 << 20)


def idle_rss(pid, n):
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "idle_clients.py"), "18080", str(n)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    time.sleep(1)
    rss = rss_kib(pid)
    p.stdin.close()
    p.wait()
    return rss, line


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--idle", type=int, default=8000)
    ap.add_argument("--proxy", default=os.path.join(ROOT, ".build/release/proxy"))
    ap.add_argument("--skip", default="", help="comma list of: ka,close,p99,tcp,rss")
    a = ap.parse_args()
    skip = set(a.skip.split(",")) if a.skip else set()

    os.makedirs(WWW, exist_ok=True)
    with open(os.path.join(WWW, "index.html"), "w") as f:
        f.write("<html><body>" + "x" * 500 + "</body></html>\n")
    big = os.path.join(WWW, "1g.bin")
    if not os.path.exists(big) or os.path.getsize(big) != 1 << 30:
        with open(big, "wb") as f:
            f.truncate(1 << 30)
    nginx = subprocess.Popen(["nginx", "-c", os.path.join(HERE, "nginx.conf")], stderr=subprocess.DEVNULL)
    if not wait_port(18000):
        raise SystemExit("nginx did not start")
    subjects = [Subject("proxy", [a.proxy, "-q", "-f", CONFIG]), Subject("haproxy", ["haproxy", "-f", CONFIG])]
    results = {s.name: {} for s in subjects}

    def record(name, key, value):
        results[name].setdefault(key, []).append(value)

    try:
        for r in range(a.rounds):
            order = subjects if r % 2 == 0 else list(reversed(subjects))
            for s in order:
                s.start()
                pid = s.proc.pid
                if "ka" not in skip:
                    wrk(2)  # warm-up
                    t0 = cpu_ticks(pid)
                    rps, total, errors, non2xx = wrk(a.duration)
                    ticks = cpu_ticks(pid) - t0
                    record(s.name, "keep-alive req/s", rps)
                    record(s.name, "keep-alive CPU us/req", ticks * 1e6 / os.sysconf("SC_CLK_TCK") / max(total, 1))
                    record(s.name, "keep-alive errors", errors + non2xx)
                if "close" not in skip:
                    t0 = cpu_ticks(pid)
                    rps, total, errors, non2xx = wrk(a.duration, close=True)
                    ticks = cpu_ticks(pid) - t0
                    record(s.name, "close req/s", rps)
                    record(s.name, "close CPU us/req", ticks * 1e6 / os.sysconf("SC_CLK_TCK") / max(total, 1))
                    record(s.name, "close errors", errors + non2xx)
                if "p99" not in skip:
                    p99, rate = hey(a.duration)
                    record(s.name, "p99 ms at fixed rate", p99)
                    record(s.name, "fixed rate reached req/s", rate)
                if "tcp" not in skip:
                    record(s.name, "TCP 1 GiB MiB/s", tcp_gib())
                s.stop()
                print("round %d %s: %s" % (r + 1, s.name, {k: round(v[-1], 2) for k, v in results[s.name].items()}), flush=True)
        if "rss" not in skip:
            for s in subjects:
                s.start()
                rss, line = idle_rss(s.proc.pid, a.idle)
                record(s.name, "RSS MiB, %d idle conns" % a.idle, rss / 1024)
                print("%s: %s, RSS %.1f MiB" % (s.name, line, rss / 1024), flush=True)
                s.stop()
    finally:
        nginx.terminate()
        nginx.wait()

    print()
    print("%-34s %12s %12s %10s" % ("figure (median)", "proxy", "haproxy", "ratio"))
    for key in results["proxy"]:
        p = statistics.median(results["proxy"][key])
        h = statistics.median(results["haproxy"].get(key, [0]))
        ratio = "%.3f" % (p / h) if h else "-"
        print("%-34s %12.2f %12.2f %10s" % (key, p, h, ratio))
    print("bars: keep-alive and close req/s ratio >= 1.1; TCP ratio >= 1; p99 ratio <= 1; RSS ratio <= 1")


if __name__ == "__main__":
    main()
