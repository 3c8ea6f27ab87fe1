#!/bin/sh
# The container's entrypoint: proxy becomes PID 1 (exec), in the foreground, logging to
# stderr, with the configuration and the environment file from /etc/proxy. As PID 1,
# SIGTERM (docker stop, Kubernetes) drains the requests in flight, bounded by
# hard-stop-after (30 s when unset), then exits 0.
#
#   docker run IMAGE                  # serve /etc/proxy/proxy.cfg
#   docker run IMAGE -c               # check the configuration (and the env file), then exit
#   docker run IMAGE -- -V            # any proxy options after the defaults
#   docker run -it IMAGE sh           # anything not starting with '-' runs as a command
#
# PROXY, PROXY_CONFIG and PROXY_ENVFILE override the binary, the configuration and the
# environment file (read at every start; a missing file is skipped).
set -e
PROXY=${PROXY:-/usr/sbin/proxy}
CONFIG=${PROXY_CONFIG:-/etc/proxy/proxy.cfg}
ENVFILE=${PROXY_ENVFILE:-/etc/proxy/env}

case "${1:-}" in
    --) shift ;;
    -*|"") ;;
    *) exec "$@" ;;
esac
if [ -r "$ENVFILE" ]; then
    exec "$PROXY" -db -f "$CONFIG" -e "$ENVFILE" "$@"
fi
exec "$PROXY" -db -f "$CONFIG" "$@"
