import ProxyConfig
import ProxySystem
import Glibc

/// `option external-check`: the command a backend's checks run, and the parts of what it is
/// told that do not change from one check to the next (HAProxy's arguments and variables).
struct ExternalCheckCommand {
    let path: String
    /// `external-check path`: the child's PATH (empty by default, as in HAProxy).
    let searchPath: String
    /// The section's first listener, as arguments (`NOT_USED` in a backend) and as variables
    /// (empty in a backend).
    let proxyAddressArgument: String
    let proxyPortArgument: String
    let proxyAddress: String
    let proxyPort: String
    let proxyID: Int
    /// `HAPROXY_SERVER_PROTO`: `h1` in an HTTP backend, `tcp` otherwise.
    let proto: String

    init?(backend: Backend, configuration: Configuration) {
        let settings = backend.settings
        guard settings.externalCheck, let command = settings.externalCheckCommand else { return nil }
        path = command
        searchPath = settings.externalCheckPath
        let proxies = configuration.proxies
        let index = proxies.firstIndex { $0.name == backend.name && $0.kind != .frontend } ?? 0
        proxyID = index + 2
        proto = settings.mode == .http ? "h1" : "tcp"
        var address = "NOT_USED", port = "NOT_USED", envAddress = "", envPort = ""
        let listeners = proxies[index].kind == .listen ? proxies[index].binds.flatMap(\.addresses) : []
        for l in listeners {
            if case .inet(_, let a, let p) = l {
                address = a.map { "\($0)" } ?? "0.0.0.0"; port = "\(p)"
                envAddress = address; envPort = port
                break
            }
            if case .unix(let unixPath) = l {
                address = unixPath; envAddress = unixPath
                break
            }
        }
        proxyAddressArgument = address
        proxyPortArgument = port
        proxyAddress = envAddress
        proxyPort = envPort
    }
}

extension HealthCheck {
    /// Starts the command for this check; its exit comes back through the control loop.
    func runExternal(_ e: ExternalCheckCommand) {
        let a = server.address
        let unix = a.family == AF_UNIX
        let address = unix ? (a.unixPath ?? "") : AddressText.ip(a)
        let port = unix ? "" : "\(a.port)"
        let environment = [
            "HAPROXY_PROXY_ADDR=\(e.proxyAddress)", "HAPROXY_PROXY_ID=\(e.proxyID)", "HAPROXY_PROXY_NAME=\(backend.name)",
            "HAPROXY_PROXY_PORT=\(e.proxyPort)", "HAPROXY_SERVER_ADDR=\(address)",
            "HAPROXY_SERVER_CURCONN=\(server.active.load(ordering: .relaxed))", "HAPROXY_SERVER_ID=\(server.index + 1)",
            "HAPROXY_SERVER_MAXCONN=\(server.maxconn)", "HAPROXY_SERVER_NAME=\(server.name)", "HAPROXY_SERVER_PORT=\(port)",
            "HAPROXY_SERVER_PROTO=\(e.proto)", "HAPROXY_SERVER_SSL=\(options.ssl ? 1 : 0)", "PATH=\(e.searchPath)",
        ]
        externalRun += 1
        let run = externalRun
        let loop = context.loop
        nonisolated(unsafe) let target = self
        // The control thread starts it (DECISIONS: never from a data loop's stack) and
        // reports the pid, then the exit; as HAProxy bounds an external check: by `inter`.
        ChildProcesses.request(e.path, [e.path, e.proxyAddressArgument, e.proxyPortArgument, address, port], environment: environment,
                               started: { pid, error in loop.post { target.externalStarted(run, pid, error, path: e.path) } },
                               onExit: { status in loop.post { target.externalExited(run, status) } })
        context.loop.setDeadline(self, startedMs + Int64(options.inter))
    }

    /// The command of run `run` started (`pid`), or could not (`error`).
    func externalStarted(_ run: Int, _ pid: Int32?, _ error: String?, path: String) {
        guard run == externalRun, inProgress else {
            // The check timed out (or stopped) before the command started: it is not wanted.
            if let pid { kill(-pid, SIGKILL) }
            return
        }
        guard let pid else {
            complete(false, reason: "External check error, info: \"cannot run '\(path)': \(error ?? "unknown error")\"", code: 255)
            return
        }
        childPid = pid
    }

    /// The command of run `run` exited with `status`: 0 passes, anything else fails.
    func externalExited(_ run: Int, _ status: Int32) {
        guard run == externalRun, inProgress else { return }
        childPid = 0
        if status == 0 {
            complete(true, reason: "External check passed", code: 0)
        } else {
            complete(false, reason: "External check error", code: Int(status))
        }
    }

    /// Kills a command still running (its whole process group): a timeout, or a stop.
    func killExternal() {
        guard childPid > 0 else { return }
        kill(-childPid, SIGKILL)
        childPid = 0
    }
}
