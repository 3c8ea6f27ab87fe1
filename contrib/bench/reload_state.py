#!/usr/bin/env python3
"""Runtime state across reloads: sets a server to maint, another's weight and address, a
proc. variable, a frontend's maxconn and a map entry through the runtime API, then reloads N times (-D -p -sf) under a steady
trickle of requests, checking after every reload that each change is still in force and
that the frontend's request counter never went back. Prints the figures and the verdict.

  reload_state.py [--reloads 100] [--proxy PATH]
"""
import argparse, os, socket, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import wait_port, cli as runtime_cli  # noqa: E402
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

CFG = """global
    stats socket %(d)s/admin.sock level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend web
    bind 127.0.0.1:18180
    acl maint var(proc.maint) -m bool
    http-request return status 503 content-type text/plain string "maint" if maint { path /maint }
    use_backend %%[req.hdr(host),lower,map(%(d)s/hosts.map,app)]
    default_backend app
backend special
    http-request return status 200 content-type text/plain string "special"
backend app
    server a 127.0.0.1:18000 weight 10
    server b 127.0.0.1:18000 weight 10
    server c 127.0.0.1:18000 weight 10
"""


def cli(d, line):
    return runtime_cli(d + "/admin.sock", line)


def requests(d):
    for line in cli(d, "show stat").splitlines():
        if line.startswith("web,FRONTEND,"):
            return int(line.split(",")[48])
    return -1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reloads", type=int, default=100)
    ap.add_argument("--proxy", default=os.path.join(ROOT, ".build/release/proxy"))
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="reload-state-")
    cfg = os.path.join(d, "proxy.cfg")
    open(cfg, "w").write(CFG % {"d": d})
    open(os.path.join(d, "hosts.map"), "w").write("other.example.com app\n")
    nginx = subprocess.Popen(["nginx", "-c", os.path.join(HERE, "nginx.conf")], stderr=subprocess.DEVNULL)
    wait_port(18000)
    pidfile = os.path.join(d, "proxy.pid")
    subprocess.run([a.proxy, "-f", cfg, "-D", "-p", pidfile], check=True)
    wait_port(18180)
    assert cli(d, "set server app/a state maint; set weight app/b 3; set var proc.maint bool(true)") == "\n\n\n"
    assert cli(d, "set maxconn frontend web 777; add map %s/hosts.map special.example.com special" % d) == "\n\n"
    stop = threading.Event()
    failed = [0]
    sent = [0]

    def load():
        while not stop.is_set():
            try:
                s = socket.create_connection(("127.0.0.1", 18180), timeout=5)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    c = s.recv(65536)
                    if not c:
                        break
                    data += c
                s.close()
                sent[0] += 1
                if not data.startswith(b"HTTP/1.1 200"):
                    failed[0] += 1
            except OSError:
                failed[0] += 1
            time.sleep(0.005)

    t = threading.Thread(target=load)
    t.start()
    lost, resets, reload_failures = 0, 0, 0
    last = requests(d)
    olds = []
    try:
        for i in range(a.reloads):
            time.sleep(0.05)  # requests in between, on each generation
            old = open(pidfile).read().strip()
            olds.append(int(old))
            r = subprocess.run([a.proxy, "-f", cfg, "-D", "-p", pidfile, "-sf", old], capture_output=True, text=True)
            if r.returncode != 0:
                reload_failures += 1
                continue
            state = cli(d, "show servers state app")
            ok = (" a 127.0.0.1 2 1 " in state and cli(d, "get weight app/b") == "3 (initial 10)\n\n"
                  and cli(d, "get var proc.maint") == "proc.maint: type=bool value=<1>\n\n"
                  and [l for l in cli(d, "show stat").splitlines() if l.startswith("web,FRONTEND,")][0].split(",")[6] == "777"
                  and "found=yes" in cli(d, "get map %s/hosts.map special.example.com" % d))
            if not ok:
                lost += 1
                print("reload %d lost a change:" % i, state.strip().splitlines()[-3:], file=sys.stderr)
            now = requests(d)
            if now < last:
                resets += 1
            last = now
        stop.set()
        t.join()
        # Exactness: once every old process has exited (each hands what it counted while
        # draining to its successor), the newest counts every request sent.
        end = time.time() + 20
        def alive(pid):
            try:
                os.kill(pid, 0)
                return True
            except OSError:
                return False
        while time.time() < end and any(alive(p) for p in olds):
            time.sleep(0.05)
        final = requests(d)
    finally:
        stop.set()
        t.join()
        try:
            os.kill(int(open(pidfile).read().strip()), 15)
        except (OSError, ValueError):
            pass
        nginx.terminate()
        nginx.wait()
    print("reloads %d (failed %d), requests %d (failed %d), changes lost after a reload: %d, counter resets: %d, "
          "req_tot once the old processes exited: %d of %d sent" % (a.reloads, reload_failures, sent[0], failed[0], lost, resets, final, sent[0]))
    ok = lost == 0 and resets == 0 and reload_failures == 0 and final == sent[0] - failed[0]
    print("bar: 0 lost changes, 0 counter resets and every request counted over >= 100 reloads:", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
