#!/usr/bin/env python3
"""CPU per request with the PROXY protocol: stunnel (TLS, `protocol = proxy`) in front of
each subject, HAProxy 2.6 and proxy, both with `bind ... accept-proxy` on the very same
file. Neither wrk nor hey can send a PROXY header, so stunnel does, for both. Each
subject's own CPU per request (utime + stime from /proc/PID/stat) is measured, in
keep-alive and with `Connection: close` (a new TLS session, a new PROXY header and a new
connection to the subject per request); alternating rounds, medians and ratios.

  proxy_protocol.py [--rounds 5] [--duration 8] [--proxy PATH]
"""
import argparse, os, re, statistics, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import wait_port  # noqa: E402
from engine import Subject, cpu_ticks, WWW, ROOT  # noqa: E402
CONFIG = os.path.join(HERE, "proxy-protocol.cfg")


def wrk(duration, close):
    args = ["wrk", "-t1", "-c20", "-d%ds" % duration, "https://127.0.0.1:18443/"]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(m.group(1)) if m else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rps, total, errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--proxy", default=os.path.join(ROOT, ".build/release/proxy"))
    a = ap.parse_args()
    os.makedirs(WWW, exist_ok=True)
    with open(os.path.join(WWW, "index.html"), "w") as f:
        f.write("<html><body>" + "x" * 500 + "</body></html>\n")
    d = tempfile.mkdtemp(prefix="pp-bench-")
    pem = os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost", "-days", "2",
                    "-keyout", pem, "-out", pem], check=True, capture_output=True)
    conf = os.path.join(d, "stunnel.conf")
    with open(conf, "w") as f:
        f.write("foreground = yes\npid =\n[pp]\naccept = 127.0.0.1:18443\nconnect = 127.0.0.1:18080\n"
                "protocol = proxy\ncert = %s\n"
                # Without NODELAY, stunnel's PROXY line and the request go as two segments
                # and Nagle holds the second for the subject's delayed ACK (40 ms).
                "socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n" % pem)
    nginx = subprocess.Popen(["nginx", "-c", os.path.join(HERE, "nginx.conf")], stderr=subprocess.DEVNULL)
    stunnel = subprocess.Popen(["stunnel4", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_port(18000) or not wait_port(18443):
        raise SystemExit("nginx or stunnel did not start")
    subjects = [Subject("proxy", [a.proxy, "-q", "-f", CONFIG]), Subject("haproxy", ["haproxy", "-f", CONFIG])]
    results = {s.name: {} for s in subjects}
    try:
        for r in range(a.rounds):
            for s in (subjects if r % 2 == 0 else list(reversed(subjects))):
                s.start()
                for close in (False, True):
                    label = "close" if close else "keep-alive"
                    wrk(1, close)  # warm-up
                    t0 = cpu_ticks(s.proc.pid)
                    rps, total, errors = wrk(a.duration, close)
                    ticks = cpu_ticks(s.proc.pid) - t0
                    results[s.name].setdefault("%s CPU us/req" % label, []).append(ticks * 1e6 / os.sysconf("SC_CLK_TCK") / max(total, 1))
                    results[s.name].setdefault("%s req/s" % label, []).append(rps)
                    results[s.name].setdefault("%s errors" % label, []).append(errors)
                s.stop()
                print("round %d %s: %s" % (r + 1, s.name, {k: round(v[-1], 2) for k, v in results[s.name].items()}), flush=True)
    finally:
        stunnel.terminate()
        nginx.terminate()
        stunnel.wait()
        nginx.wait()
    print()
    print("%-34s %12s %12s %10s" % ("figure (median), stunnel in front", "proxy", "haproxy", "ratio"))
    for key in results["proxy"]:
        p = statistics.median(results["proxy"][key])
        h = statistics.median(results["haproxy"][key])
        print("%-34s %12.2f %12.2f %10s" % (key, p, h, "%.3f" % (p / h) if h else "-"))


if __name__ == "__main__":
    main()
