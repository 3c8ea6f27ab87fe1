# Shared helpers for the benchmarks: install tools, build the release binary.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROXY="$ROOT/.build/release/proxy"

need() {
    local missing=()
    for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq haproxy hyperfine wrk hey sysstat nginx-light socat curl stunnel4 openssl >/dev/null
    fi
}

build_release() {
    (cd "$ROOT" && swift build -c release --static-swift-stdlib --product proxy >&2)
}
