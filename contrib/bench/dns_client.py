"""Our DNS client beside c-ares (DECISIONS: "choose by measurement"): user instructions per
resolution of one name with 200 A records (dnsmasq, EDNS 8192), under callgrind.

  c-ares   contrib/bench/dns-client/cares.c (built here with -lcares, libc-ares-dev): N queries
           one after the other, each answer parsed into addresses; (cost at 3N - cost at N) / 2N.
  proxy    the proxy with a 200-slot server-template on that name, `hold valid 100ms`, for
           --seconds under callgrind: the inclusive cost of building the queries and parsing
           the answers (DNSMessage.query/parse, and the send), per answer; and, apart, the
           cost of moving 200 servers to what an answer says (no c-ares counterpart).
  python3 contrib/bench/dns_client.py --proxy .build/release/proxy [--seconds 25]
"""
import argparse, os, re, shutil, signal, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import dnsmasq_records  # noqa: E402
PORT = 19753


def total(out):
    text = subprocess.run(["callgrind_annotate", "--auto=no", out], capture_output=True, text=True).stdout
    return int(re.search(r"([\d,]+) \([ \d.]+%\)\s+PROGRAM TOTALS", text).group(1).replace(",", ""))


def inclusive(out, pattern):
    text = subprocess.run(["callgrind_annotate", "--auto=no", "--inclusive=yes", out], capture_output=True, text=True).stdout
    for line in text.splitlines():
        if re.search(pattern, line) and "compiler-generated" not in line:
            return int(line.split()[0].replace(",", ""))
    return 0


def calls(out, pattern):
    """How many times functions matching `pattern` were called, from the profile's call
    records (`cfn=` then `calls=`)."""
    names, callee, count = {}, "", 0
    for line in open(out):
        if line.startswith(("fn=", "cfn=")):
            m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.strip())
            if m and m.group(2):
                names[m.group(1)] = m.group(2)
            if line.startswith("cfn="):
                callee = names.get(m.group(1), "") if m else ""
        elif line.startswith("calls=") and re.search(pattern, callee):
            count += int(line[6:].split()[0])
    return count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--seconds", type=int, default=25)
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="dns-client-")
    dns = dnsmasq_records(d, PORT, 200)
    try:
        time.sleep(0.5)
        cares = os.path.join(d, "cares")
        subprocess.run(["cc", "-O2", "-o", cares, os.path.join(HERE, "dns-client", "cares.c"), "-lcares"], check=True)
        costs = []
        for n in (100, 300):
            out = os.path.join(d, f"cares-{n}.out")
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", cares, "127.0.0.1", str(PORT), "app.test", str(n)],
                           check=True, capture_output=True)
            costs.append(total(out))
        per_cares = (costs[1] - costs[0]) / 200
        cfg = os.path.join(d, "p.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
resolvers dns
    nameserver local 127.0.0.1:{PORT}
    accepted_payload_size 8192
    hold valid 100ms
    timeout resolve 100ms
frontend web
    bind 127.0.0.1:19780
    default_backend app
backend app
    server-template srv 200 app.test:8080 resolvers dns init-addr none resolve-prefer ipv4
""")
        out = os.path.join(d, "proxy.out")
        p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", a.proxy, "-f", cfg],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(a.seconds)
        p.send_signal(signal.SIGTERM)
        p.wait(60)
        answers = calls(out, r"DNSMessageO5parse")
        parse = inclusive(out, r"DNSMessageO5parse")
        send = inclusive(out, r"ResolversC4send")
        apply = inclusive(out, r"ResolversC5valid")
        if answers == 0:
            sys.exit("the proxy got no answer")
        print(f"one name, 200 A records, EDNS 8192 (dnsmasq); user instructions per resolution under callgrind:")
        print(f"  c-ares 1.18 (query + ares_parse_a_reply)      {per_cares:12,.0f}")
        print(f"  proxy's client (query + send + parse)         {(parse + send) / answers:12,.0f}   ({answers} answers)")
        print(f"  proxy: moving 200 servers to the answer       {apply / answers:12,.0f}   (no c-ares counterpart)")
    finally:
        dns.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
