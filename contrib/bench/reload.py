#!/usr/bin/env python3
"""Reloads under load: wrk (50 connections) runs while the proxy is reloaded every 0.2 s
with `-sf`, once with keep-alive clients and once with `Connection: close`. HAProxy runs
plain `-sf` and `-x` with `expose-fd listeners`; proxy runs plain `-sf` (handover is
built in). Prints requests, socket errors and non-2xx for each, the reload latency (start of
the reload command to the first answer from the new process), and the survivor's fds/RSS.

  reload.py [--duration 20] [--interval 0.2] [--latency-reloads 50] [--proxy PATH]
"""
import argparse, os, re, signal, socket, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import wait_port, cli  # noqa: E402
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PIDFILE = "/tmp/proxy-bench-reload.pid"



def generation():
    """One request on a fresh connection: which generation answers /gen."""
    try:
        s = socket.create_connection(("127.0.0.1", 18080), timeout=1)
        s.sendall(b"GET /gen HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
        s.close()
        return data.split(b"\r\n\r\n", 1)[1].decode() if b"\r\n\r\n" in data else None
    except OSError:
        return None


class Subject:
    def __init__(self, name, binary, config, extra=()):
        self.name, self.binary, self.config, self.extra = name, binary, config, list(extra)

    def command(self, gen):
        old = open(PIDFILE).read().split() if os.path.exists(PIDFILE) else []
        args = [self.binary, "-f", self.config, "-D", "-p", PIDFILE]
        if old:
            # -x only makes sense when there is an old process to take sockets from.
            args += self.extra + ["-sf"] + old
        env = dict(os.environ, GEN=str(gen))
        return args, env

    def reload(self, gen):
        args, env = self.command(gen)
        return subprocess.run(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def pids(self):
        out = subprocess.run(["pgrep", "-f", "%s -f %s" % (self.binary, self.config)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop_all(self):
        for p in self.pids():
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if os.path.exists(PIDFILE):
            os.remove(PIDFILE)
        time.sleep(0.3)


def wrk_figures(out):
    """wrk's report: requests, socket errors, non-2xx responses."""
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    return requests, errors, non2xx


def fds_and_rss(pid):
    try:
        fds = len(os.listdir("/proc/%d/fd" % pid))
        rss = next(int(l.split()[1]) for l in open("/proc/%d/status" % pid) if l.startswith("VmRSS:"))
        return fds, rss
    except OSError:
        return None, None


def under_load(subject, duration, interval, close):
    subject.stop_all()
    r = subject.reload(0)
    if r.returncode != 0 or not wait_port(18080):
        raise SystemExit("%s did not start: %s" % (subject.name, r.stderr))
    args = ["wrk", "-t1", "-c50", "-d%ds" % duration, "http://127.0.0.1:18080/"]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    wrk = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    reloads, failed, first = 0, 0, None
    end = time.time() + duration - 0.5
    gen = 1
    time.sleep(0.3)
    while time.time() < end:
        r = subject.reload(gen)
        gen += 1
        reloads += 1
        if r.returncode != 0:
            failed += 1
        if first is None:
            time.sleep(0.3)
            pids = subject.pids()
            first = fds_and_rss(max(pids)) if pids else (None, None)
        time.sleep(interval)
    out = wrk.communicate()[0]
    requests, errors, non2xx = wrk_figures(out)
    # Let the draining processes finish, then look at the survivor.
    deadline = time.time() + 35
    while time.time() < deadline and len(subject.pids()) > 1:
        time.sleep(0.2)
    # At rest: proxy hands freed heap back to the kernel at most once a second once quiet.
    time.sleep(1.5)
    pids = subject.pids()
    last = fds_and_rss(pids[0]) if len(pids) == 1 else (None, None)
    subject.stop_all()
    return dict(requests=requests, errors=errors, non2xx=non2xx, reloads=reloads, failed=failed,
                survivors=len(pids), first=first, last=last)


def latency(subject, count):
    subject.stop_all()
    subject.reload(0)
    wait_port(18080)
    samples = []
    for gen in range(1, count + 1):
        args, env = subject.command(gen)
        t0 = time.perf_counter()
        subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while generation() != str(gen):
            if time.perf_counter() - t0 > 5:
                break
        samples.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.05)
    subject.stop_all()
    return statistics.median(samples), max(samples)


class MasterSubject:
    """-W: a master in the foreground, reloaded by SIGUSR2 and by its master CLI's `reload`,
    in turn. HAProxy 2.6 re-executes its master; proxy starts a new worker."""

    def __init__(self, name, binary, config):
        self.name, self.binary, self.config = name, binary, config
        self.sock = "/tmp/proxy-bench-master-%s.sock" % name.split()[0]
        self.process = None

    def start(self):
        self.stop_all()
        self.process = subprocess.Popen([self.binary, "-W", "-f", self.config, "-S", self.sock], cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port(18080):
            raise SystemExit("%s did not start" % self.name)
        deadline = time.time() + 5
        while time.time() < deadline and not self.worker():
            time.sleep(0.02)

    def cli(self, line):
        try:
            return cli(self.sock, line)
        except OSError:
            return ""

    def worker(self):
        """The current worker's pid, from `show proc`."""
        text = self.cli("show proc")
        if "# workers\n" not in text:
            return None
        # The current worker is the one with 0 reloads (HAProxy lists its old workers in the
        # same section until they exit).
        for line in text.split("# workers\n", 1)[1].split("\n"):
            f = line.split()
            if len(f) >= 3 and f[0].isdigit() and f[1] == "worker" and f[2] == "0":
                return int(f[0])
        return None

    def reload(self, n):
        if n % 2:
            os.kill(self.process.pid, signal.SIGUSR2)
        else:
            s = socket.socket(socket.AF_UNIX)
            s.connect(self.sock)
            s.sendall(b"reload\n")
            s.close()

    def pids(self):
        out = subprocess.run(["pgrep", "-f", "%s .*-f %s" % (self.binary, self.config)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop_all(self):
        if self.process:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None
        for p in self.pids():
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.3)


def master_under_load(subject, duration, interval, close):
    subject.start()
    args = ["wrk", "-t1", "-c50", "-d%ds" % duration, "http://127.0.0.1:18080/"]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    wrk = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    reloads = 0
    end = time.time() + duration - 0.5
    time.sleep(0.3)
    while time.time() < end:
        subject.reload(reloads)
        reloads += 1
        time.sleep(interval)
    out = wrk.communicate()[0]
    requests, errors, non2xx = wrk_figures(out)
    subject.stop_all()
    return dict(requests=requests, errors=errors, non2xx=non2xx, reloads=reloads)


def master_latency(subject, count, spacing=0.2):
    """From the reload order to `show proc` naming a new worker, reloads `spacing` s apart
    (proxy starts reloads at least 150 ms apart, merging what comes in between)."""
    subject.start()
    samples = []
    for n in range(count):
        before = subject.worker()
        t0 = time.perf_counter()
        subject.reload(n)
        while True:
            w = subject.worker()
            if w and w != before:
                break
            if time.perf_counter() - t0 > 5:
                break
        samples.append((time.perf_counter() - t0) * 1000)
        time.sleep(spacing)
    subject.stop_all()
    return statistics.median(samples), max(samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--latency-reloads", type=int, default=50)
    ap.add_argument("--proxy", default=os.path.join(ROOT, ".build/release/proxy"))
    ap.add_argument("--only", default="", help="run only subjects whose name starts with this")
    ap.add_argument("--modes", default="keep-alive,close")
    ap.add_argument("--master-worker", action="store_true", help="-W beside HAProxy -W, reloaded by SIGUSR2 and the master CLI")
    a = ap.parse_args()
    os.makedirs("/tmp/proxy-bench-www", exist_ok=True)
    with open("/tmp/proxy-bench-www/index.html", "w") as f:
        f.write("<html><body>" + "x" * 500 + "</body></html>\n")
    nginx = subprocess.Popen(["nginx", "-c", os.path.join(HERE, "nginx.conf")], stderr=subprocess.DEVNULL)
    wait_port(18000)
    subjects = [
        Subject("proxy -sf", a.proxy, os.path.join(HERE, "reload.cfg")),
        Subject("haproxy -sf", "haproxy", os.path.join(HERE, "reload.cfg")),
        Subject("haproxy -x -sf", "haproxy", os.path.join(HERE, "reload-x.cfg"), ["-x", "/tmp/proxy-bench-haproxy.sock"]),
    ]
    subjects = [s for s in subjects if s.name.startswith(a.only)]
    if a.master_worker:
        masters = [MasterSubject("proxy -W", a.proxy, os.path.join(HERE, "reload.cfg")),
                   MasterSubject("haproxy -W", "haproxy", os.path.join(HERE, "reload.cfg"))]
        try:
            print("%-16s %-11s %9s %8s %8s %8s" % ("subject", "clients", "requests", "errors", "non-2xx", "reloads"))
            for close in [m == "close" for m in a.modes.split(",")]:
                for s in masters:
                    r = master_under_load(s, a.duration, a.interval, close)
                    print("%-16s %-11s %9d %8d %8d %8d" % (s.name, "close" if close else "keep-alive", r["requests"], r["errors"],
                                                          r["non2xx"], r["reloads"]), flush=True)
            print()
            for s in masters:
                med, worst = master_latency(s, a.latency_reloads)
                print("reload latency %-16s median %7.1f ms   max %7.1f ms   (%d reloads 0.2 s apart, to a new worker in show proc)"
                      % (s.name, med, worst, a.latency_reloads), flush=True)
            print("bars (proxy -W): 0 errors and 0 non-2xx in both modes; median reload latency < 10 ms")
        finally:
            nginx.terminate()
            nginx.wait()
            for s in masters:
                s.stop_all()
        return
    try:
        print("%-16s %-11s %9s %8s %8s %8s %9s %10s  %s" % ("subject", "clients", "requests", "errors", "non-2xx",
                                                             "reloads", "survivors", "failed", "fds/RSS KiB first -> last"))
        for close in [m == "close" for m in a.modes.split(",")]:
            for s in subjects:
                r = under_load(s, a.duration, a.interval, close)
                print("%-16s %-11s %9d %8d %8d %8d %9d %10d  %s -> %s" % (
                    s.name, "close" if close else "keep-alive", r["requests"], r["errors"], r["non2xx"], r["reloads"],
                    r["survivors"], r["failed"], r["first"], r["last"]), flush=True)
        print()
        for s in subjects:
            med, worst = latency(s, a.latency_reloads)
            print("reload latency %-16s median %7.1f ms   max %7.1f ms   (%d reloads)" % (s.name, med, worst, a.latency_reloads), flush=True)
        print("bars (proxy): 0 errors and 0 non-2xx in both modes over >= 80 reloads; one survivor whose fds/RSS are"
              " no higher than after the first reload; median reload latency < 10 ms")
    finally:
        nginx.terminate()
        nginx.wait()
        for s in subjects:
            s.stop_all()


if __name__ == "__main__":
    main()
