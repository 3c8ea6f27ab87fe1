#!/bin/sh
# The container's entrypoint: proxy becomes PID 1 (exec), a master (-W) in the foreground
# with its CLI on /run/proxy/master.sock, with the configuration and the environment file
# from /etc/proxy; `log global` goes to stdout unless the file says otherwise. As PID 1,
# SIGTERM (docker stop, Kubernetes) drains the requests in flight, bounded by
# hard-stop-after (30 s when unset), then exits 0; SIGUSR2 or SIGHUP, or `reload` on the
# master CLI, reloads with the files read afresh.
#
#   docker run IMAGE                  # serve /etc/proxy/proxy.cfg
#   docker run IMAGE -c               # check the configuration (and the env file), then exit
#   docker run IMAGE -- -V            # any proxy options after the defaults
#   docker run -it IMAGE sh           # anything not starting with '-' runs as a command
#
# PROXY, PROXY_CONFIG, PROXY_ENVFILE and PROXY_MASTER_SOCKET override the binary, the
# configuration, the environment file (read at every start and reload; a missing file is
# skipped) and the master CLI's path (empty: none; skipped when its directory is missing).
set -e
PROXY=${PROXY:-/usr/sbin/proxy}
CONFIG=${PROXY_CONFIG:-/etc/proxy/proxy.cfg}
ENVFILE=${PROXY_ENVFILE:-/etc/proxy/env}
MASTER_SOCKET=${PROXY_MASTER_SOCKET-/run/proxy/master.sock}

case "${1:-}" in
    --) shift ;;
    -*|"") ;;
    *) exec "$@" ;;
esac
if [ -n "$MASTER_SOCKET" ] && [ -d "$(dirname "$MASTER_SOCKET")" ]; then
    set -- -S "$MASTER_SOCKET" "$@"
fi
if [ -r "$ENVFILE" ]; then
    exec "$PROXY" -W -db -f "$CONFIG" -e "$ENVFILE" "$@"
fi
exec "$PROXY" -W -db -f "$CONFIG" "$@"
