"""/metrics scrape time with many servers, proxy beside HAProxy's promex.

Both get the same config: one frontend answering /metrics with the exporter and one backend
with N servers (no checks, so the figure is the exporter's own cost). Scrapes alternate
between the two over keep-alive-less curl requests; the time is curl's time_total, the
whole answer received. Prints the median and p90 of each and the ratio of the medians.
"""
import argparse, os, shutil, signal, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(__file__))
from benchlib import wait_port


def config(port, servers):
    lines = [
        "global", "    maxconn 4096",
        "defaults", "    mode http", "    timeout connect 1s", "    timeout client 10s", "    timeout server 10s",
        "frontend metrics", f"    bind 127.0.0.1:{port}",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    default_backend app",
        "backend app",
    ]
    lines += [f"    server s{i} 127.0.0.{1 + i // 250}:{10000 + i}" for i in range(servers)]
    return "\n".join(lines) + "\n"


def scrape(port):
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download} %{http_code}",
                          f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True, check=True).stdout.split()
    assert out[2] == "200", out
    return float(out[0]) * 1000, int(out[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--servers", type=int, default=1000)
    ap.add_argument("--scrapes", type=int, default=30)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="metrics-bench-")
    procs = []
    try:
        ports = {"proxy": 29180, "haproxy": 29181}
        for name, binary in (("proxy", args.proxy), ("haproxy", shutil.which("haproxy"))):
            path = os.path.join(work, f"{name}.cfg")
            with open(path, "w") as f:
                f.write(config(ports[name], args.servers))
            procs.append(subprocess.Popen([binary, "-f", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if not wait_port(ports[name]):
                sys.exit(f"{name} did not start")
        times = {"proxy": [], "haproxy": []}
        sizes = {}
        for name in ports:  # one warm-up scrape each
            scrape(ports[name])
        for _ in range(args.scrapes):
            for name in ("proxy", "haproxy"):
                ms, size = scrape(ports[name])
                times[name].append(ms)
                sizes[name] = size
        print(f"/metrics with {args.servers} servers, {args.scrapes} scrapes each, alternating")
        for name in ("proxy", "haproxy"):
            t = sorted(times[name])
            p90 = t[int(len(t) * 0.9) - 1]
            print(f"  {name:8} median {statistics.median(t):7.2f} ms  p90 {p90:7.2f} ms  ({sizes[name]:,} bytes)")
        ratio = statistics.median(times["proxy"]) / statistics.median(times["haproxy"])
        print(f"  ratio proxy/haproxy (median): {ratio:.2f}")
        print(f"  bar: under 50 ms: {'yes' if statistics.median(times['proxy']) < 50 else 'NO'}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
