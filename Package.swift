// swift-tools-version:6.0
// proxy: a reverse proxy and zero-downtime reloader for Linux.
// No package dependencies: the Swift toolchain, one small C shim, and libcrypt from the system.
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
        .target(name: "CProxySys", linkerSettings: [.linkedLibrary("crypt")]),
        // One thin wrapper per syscall, errno as a typed error.
        .target(name: "ProxySystem", dependencies: ["CProxySys"], swiftSettings: engineSettings),
        // Fetches, converters, matchers, ACLs, conditions and constant folding.
        .target(name: "ProxyRules", dependencies: ["ProxySystem"], swiftSettings: engineSettings),
        // HTTP/1 heads parsed in place over bytes, body framing, error pages.
        .target(name: "ProxyHTTP", swiftSettings: engineSettings),
        // Config text to a checked, typed model, with file:line diagnostics.
        .target(name: "ProxyConfig", dependencies: ["ProxyRules", "ProxySystem"], swiftSettings: engineSettings),
        // Event loops, listeners, HTTP and TCP sessions, balancing, logging.
        .target(name: "ProxyEngine", dependencies: ["ProxyConfig", "ProxyRules", "ProxyHTTP", "ProxySystem"], swiftSettings: engineSettings),
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
