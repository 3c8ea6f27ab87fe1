#!/usr/bin/env python3
"""The TCP options of one of a process's sockets, read from a copy of it (pidfd_getfd).

  socket_options.py PID LOCAL_PORT REMOTE_PORT
      LOCAL_PORT or REMOTE_PORT may be 0 for any. Prints one JSON object:
      {"keepalive": 0|1, "keepcnt": N, "keepidle": S, "keepintvl": S, "usertimeout": MS}
      or {"error": "..."}.
Needs root (or ptrace rights over PID) and Linux 5.6.
"""
import ctypes, json, os, socket, sys

pid, local, remote = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
inodes = set()
for table in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
    try:
        lines = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        f = line.split()
        lport, rport = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
        if f[3] == "01" and (local == 0 or lport == local) and (remote == 0 or rport == remote):
            inodes.add(f[9])
target = None
for name in os.listdir("/proc/%d/fd" % pid):
    try:
        link = os.readlink("/proc/%d/fd/%s" % (pid, name))
    except OSError:
        continue
    if link.startswith("socket:[") and link[8:-1] in inodes:
        target = int(name)
        break
if target is None:
    print(json.dumps({"error": "no established socket %d -> %d in %d" % (local, remote, pid)}))
    sys.exit(0)
libc = ctypes.CDLL(None, use_errno=True)
pidfd = os.pidfd_open(pid)
fd = libc.syscall(438, pidfd, target, 0)  # pidfd_getfd
if fd < 0:
    print(json.dumps({"error": "pidfd_getfd: %s" % os.strerror(ctypes.get_errno())}))
    sys.exit(0)
s = socket.socket(fileno=fd)
print(json.dumps({
    "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    "keepcnt": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    "keepidle": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    "keepintvl": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
    "usertimeout": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
}))
s.detach()
os.close(fd)
