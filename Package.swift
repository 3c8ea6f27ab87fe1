// swift-tools-version:6.0
// proxy: a reverse proxy and zero-downtime reloader for Linux.
// No package dependencies: the Swift toolchain, small C shims, and libcrypt and OpenSSL 3 from
// the system (Debian's libssl-dev, as HAProxy uses).
import PackageDescription

// Release builds drop Swift's run-time exclusivity checks (swift_beginAccess): they were a
// quarter of all user-space instructions per request (callgrind, keep-alive). Debug builds,
// which the test suite and the sanitizer runs use, keep them, so a violation still traps there.
let engineSettings: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "proxy",
    products: [
        .executable(name: "proxy", targets: ["proxy"]),
    ],
    targets: [
        // Only what Swift cannot import from Glibc: epoll, signalfd, timerfd, eventfd, splice, CMSG.
        // crypt(3) for `stats auth` hashes comes from the system's libcrypt.
        .target(name: "CProxySys", cSettings: [.unsafeFlags(["-gdwarf-4"])], linkerSettings: [.linkedLibrary("crypt")]),
        // The system's OpenSSL 3, found by pkg-config; and the few calls the engine makes, with
        // OpenSSL's macros and error queue kept in C.
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        // DWARF 4: valgrind 3.19 (callgrind, for bench/cost.py) cannot read clang's DWARF 5 here.
        .target(name: "CProxyTLS", dependencies: ["COpenSSL"], cSettings: [.unsafeFlags(["-gdwarf-4"])]),
        // One thin wrapper per syscall, errno as a typed error.
        .target(name: "ProxySystem", dependencies: ["CProxySys"], swiftSettings: engineSettings),
        // Fetches, converters, matchers, ACLs, conditions and constant folding.
        .target(name: "ProxyRules", dependencies: ["ProxySystem", "CProxySys"], swiftSettings: engineSettings),
        // HTTP/1 heads parsed in place over bytes, body framing, error pages.
        .target(name: "ProxyHTTP", swiftSettings: engineSettings),
        // Config text to a checked, typed model, with file:line diagnostics.
        .target(name: "ProxyConfig", dependencies: ["ProxyRules", "ProxySystem"], swiftSettings: engineSettings),
        // Event loops, listeners, HTTP and TCP sessions, balancing, logging.
        .target(name: "ProxyEngine", dependencies: ["ProxyConfig", "ProxyRules", "ProxyHTTP", "ProxySystem", "CProxyTLS"], swiftSettings: engineSettings),
        // What operators see and steer: the runtime API's commands, the stats page, Prometheus.
        .target(name: "ProxyControl", dependencies: ["ProxyEngine", "ProxyConfig", "ProxyRules", "ProxySystem", "CProxySys"], swiftSettings: engineSettings),
        // Command line, the ordered start-up, handover and stop.
        .target(name: "ProxyProcess", dependencies: ["ProxyControl", "ProxyEngine", "ProxyConfig", "ProxyRules", "ProxySystem"], swiftSettings: engineSettings),
        .executableTarget(name: "proxy", dependencies: ["ProxyProcess"], swiftSettings: engineSettings),

        .testTarget(name: "ProxyRulesTests", dependencies: ["ProxyRules", "ProxySystem"]),
        .testTarget(name: "ProxyConfigTests", dependencies: ["ProxyConfig", "ProxyRules", "ProxySystem"]),
        .testTarget(name: "ProxyHTTPTests", dependencies: ["ProxyHTTP"]),
        .testTarget(name: "ProxyProcessTests", dependencies: ["ProxyProcess"]),
        .testTarget(name: "ProxyEngineTests", dependencies: ["ProxyEngine", "ProxyConfig", "ProxyRules", "ProxySystem"]),
        .testTarget(name: "ProxySystemTests", dependencies: ["ProxySystem"]),
        .testTarget(name: "EndToEndTests", dependencies: ["proxy"], exclude: ["Helpers"]),
    ]
)
