import ProxyConfig
import ProxyControl
import ProxyEngine
import ProxyRules
import ProxySystem
import Glibc

/// The process entry point: parses the command line and runs the requested mode.
public enum ProxyMain {
    public static let version = ProductVersion.version

    /// Runs `proxy` with `arguments` (without the program name) and returns the exit status.
    public static func run(_ arguments: [String]) -> Int32 {
        // `proxy cli ...` is the runtime API's client: nothing after it is a proxy flag.
        if arguments.first == "cli" { return CLIClient.run(Array(arguments.dropFirst())) }
        let options: CommandLineOptions
        do {
            options = try CommandLineOptions.parse(arguments)
        } catch let e as CommandLineOptions.UsageError {
            printError("proxy: \(e.message)\n" + CommandLineOptions.usage)
            return 1
        } catch {
            return 1
        }
        if options.showHelp {
            print(CommandLineOptions.usage, terminator: "")
            return 0
        }
        if options.showVersion {
            print("proxy version \(version) - a reverse proxy and zero-downtime reloader (HAProxy 2.6 configuration syntax)")
            return 0
        }
        if let dir = options.changeDirectory {
            do { try ProcessCalls.changeDirectory(dir) } catch let e as SystemError {
                printError("proxy: cannot change to directory '\(dir)': \(e.reason)\n")
                return 1
            } catch { return 1 }
        }
        // `-W`: this process is the master; its workers are this binary again. The master
        // checks the configuration (with the environment file over a copy of its own
        // environment, so a line later removed from the file reverts) and never applies the
        // file to itself.
        // As PID 1 (a container's init) the master is implied: it handles every signal,
        // reaps every orphan, and keeps the listeners while a worker is replaced.
        let isWorker = options.workerVerdictFD != nil
        if (options.masterWorker || ProcessCalls.pid == 1) && !isWorker && !options.checkOnly {
            return runMaster(options, arguments)
        }
        let inheritedEnvironment = ProcessEnvironment.snapshot()
        // `-e FILE`: its variables override the inherited ones, for the configuration and
        // `show env`; a malformed file stops everything before anything is touched.
        for file in options.envFiles {
            do {
                let set = try EnvFile.apply(file)
                if options.verbose && options.checkOnly {
                    for (k, v) in set { print("\(file): \(k)=\(v)") }
                }
            } catch let e as EnvFile.Failure {
                printError("\(e.description)\nproxy: nothing was started\n")
                return 1
            } catch {
                return 1
            }
        }
        // `-L`: the local peer name, which a config may read as ${HAPROXY_LOCALPEER}.
        if let peer = options.localPeer { ProcessEnvironment.set("HAPROXY_LOCALPEER", peer) }
        let environment = Environment(ProcessEnvironment.snapshot())
        if let condition = options.evaluateCondition {
            switch ConfigLoader.evaluateCondition(condition, environment: environment) {
            case .success(let v): return v ? 0 : 1
            case .failure(let e):
                printError("proxy: -cc: \(e.message)\n")
                return 2
            }
        }
        if options.configPaths.isEmpty {
            printError("proxy: no configuration file; use -f <file>\n" + CommandLineOptions.usage)
            return 1
        }
        let started = Clock.monotonicNanoseconds()
        var loader = ConfigLoader(environment: environment)
        loader.ignoresResolutionFailures = options.ignoreResolutionFailures
        let result = loader.load(paths: options.configPaths)
        report(result.diagnostics, quiet: options.quiet)
        guard var configuration = result.configuration else {
            let count = result.errors.count
            printError("proxy: \(count) error\(count == 1 ? "" : "s") in the configuration; nothing was started\n")
            return 1
        }
        if (options.zeroWarning || configuration.global.zeroWarning) && !result.warnings.isEmpty {
            printError("proxy: some warnings were found and \(options.zeroWarning ? "-dW" : "'zero-warning'") is set; aborting\n")
            return 1
        }
        // Command-line flags win over the matching keywords, as in HAProxy.
        if let n = options.maxConnections { configuration.global.maxconn = n }
        if let n = options.defaultProxyMaxConnections {
            for i in configuration.proxies.indices where configuration.proxies[i].isFrontend && configuration.proxies[i].settings.maxconn == nil {
                configuration.proxies[i].settings.maxconn = n
            }
        }
        if options.foreground { configuration.global.daemon = false }
        // In a container (a PID 1 master's worker) there is no syslog: with no global `log`
        // line, `log global` writes to stdout, where the runtime collects it.
        if options.defaultLogToStandardOutput && configuration.global.logs.isEmpty {
            configuration.global.logs = [.target(LogDestination(address: .stdout, format: .raw, facility: "local0"))]
        }
        // `mworker-*` acts only in a master (-W); without one it would do nothing: said.
        // `master-worker` in the file: this process becomes the master, in the environment
        // it inherited (the master never applies the environment file to itself).
        if configuration.global.masterWorker && !isWorker && !options.checkOnly {
            ProcessEnvironment.replace(with: inheritedEnvironment)
            return runMaster(options, arguments)
        }
        if let at = configuration.global.masterSettingsLocation, !options.masterWorker, !configuration.global.masterWorker, !options.quiet {
            printError("\(at): warning: 'mworker-max-reloads' and 'mworker-max-old-workers' act only in master-worker mode (-W); ignored here\n")
        }
        if options.checkOnly {
            // Certificates are checked as a start would: readable, a key that matches.
            var certificateErrors = 0
            for f in configuration.frontends {
                for b in f.binds where b.options.ssl {
                    do {
                        let context = try TLSBinding.load(b, global: configuration.global)
                        if !options.quiet { for w in context.warnings { printError(w + "\n") } }
                    } catch {
                        printError("\(error)\n")
                        certificateErrors += 1
                    }
                }
            }
            do { _ = try ServerTLS.loadAll(configuration) } catch {
                printError("\(error)\n")
                certificateErrors += 1
            }
            if certificateErrors > 0 {
                printError("proxy: \(certificateErrors) error\(certificateErrors == 1 ? "" : "s") in the certificates; nothing would start\n")
                return 1
            }
            if options.verbose {
                for rule in configuration.foldedRules { print(rule.description) }
                for line in ReloadPreview.runtimeVariableRules(configuration) { print(line) }
                if let socket = options.socketTransfer {
                    for line in ReloadPreview.describe(configuration, socket: socket) { print(line) }
                }
                let ms = Double(Clock.monotonicNanoseconds() - started) / 1e6
                print("Loaded \(configuration.files.count) file\(configuration.files.count == 1 ? "" : "s"), \(configuration.proxies.count) proxies in \(formatMilliseconds(ms)) ms")
            }
            if !options.quiet { print("Configuration file is valid") }
            return 0
        }
        let blocking = configuration.unenforcedKeywords.filter(\.changesWire)
        if !blocking.isEmpty {
            for k in blocking {
                printError("\(k.location): error: '\(k.keyword.rawValue)' changes bytes on the wire and is not implemented yet; refusing to start. Remove it, or run HAProxy for this listener\n")
            }
            return 1
        }
        return StartUp(configuration: configuration, options: options).run()
    }

    static func runMaster(_ options: CommandLineOptions, _ arguments: [String]) -> Int32 {
        var cli: MasterCLI.Settings?
        if let text = options.masterSocket {
            switch MasterCLI.Settings.parse(text) {
            case .success(let s): cli = s
            case .failure(let e):
                printError("proxy: \(e.message)\n")
                return 1
            }
        }
        guard let executable = ProcessCalls.executablePath() else {
            printError("proxy: cannot find this binary's path (/proc/self/exe) to start workers\n")
            return 1
        }
        var environment = Environment(ProcessEnvironment.snapshot())
        for file in options.envFiles {
            do {
                let bytes = try FileSystem.readFile(file)
                for (k, v) in try EnvFile.parse(String(decoding: bytes, as: UTF8.self), name: file) { environment.set(k, v) }
            } catch let e as EnvFile.Failure {
                printError("\(e.description)\nproxy: nothing was started\n")
                return 1
            } catch {
                printError("\(file): error: cannot read the environment file: \(error)\nproxy: nothing was started\n")
                return 1
            }
        }
        var loader = ConfigLoader(environment: environment)
        loader.ignoresResolutionFailures = options.ignoreResolutionFailures
        let result = loader.load(paths: options.configPaths)
        report(result.diagnostics, quiet: options.quiet)
        guard let configuration = result.configuration else {
            let count = result.diagnostics.filter { $0.severity == .error }.count
            printError("proxy: \(count) error\(count == 1 ? "" : "s") in the configuration; nothing was started\n")
            return 1
        }
        let g = configuration.global
        return Master(options: options, arguments: arguments, executable: executable,
                      maxReloads: g.masterMaxReloads, maxOldWorkers: g.masterMaxOldWorkers, exitOnFailure: g.masterExitOnFailure,
                      cli: cli, daemon: (options.daemon || g.daemon) && !options.foreground,
                      activated: SocketActivation.fromEnvironment() ?? [], hardStopAfter: g.hardStopAfter,
                      pidFile: options.pidFile ?? g.pidfile).run()
    }

    static func formatMilliseconds(_ ms: Double) -> String {
        let hundredths = Int((ms * 100).rounded())
        let fraction = hundredths % 100
        return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }

    /// Prints diagnostics to stderr: errors always, warnings and notices unless quiet.
    static func report(_ diagnostics: [Diagnostic], quiet: Bool) {
        var text = ""
        for d in diagnostics where !quiet || d.severity == .error { text += d.description + "\n" }
        if !text.isEmpty { printError(text) }
    }

    static func printError(_ text: String) {
        try? FileDescriptor.standardError.writeAll(text)
    }
}
