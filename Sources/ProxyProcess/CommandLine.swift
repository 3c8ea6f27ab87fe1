/// The command line, in HAProxy's grammar.
public struct CommandLineOptions: Equatable, Sendable {
    public var configPaths: [String] = []
    public var checkOnly = false
    /// `-W` / `-Ws`: run as the master of a worker (`Master`); `-Ws` also speaks sd_notify.
    public var masterWorker = false
    public var systemdNotify = false
    /// `-S PATH`: the master CLI's socket.
    public var masterSocket: String?
    /// Set by a master for its workers: where the worker writes its verdict.
    public var workerVerdictFD: Int32?
    /// Set by a master: the pipe it sends its orders on (`U` soft stop, `T` stop; its end of
    /// file, the master gone, is a stop too).
    public var masterPipeFD: Int32?
    /// Set by a master running as PID 1 (a container): logs go to stdout unless `log` says.
    public var defaultLogToStandardOutput = false
    /// Set by a master for a worker replacing one that died: the listeners it held.
    public var inheritedDescriptors: [Int32] = []
    /// `-e FILE` / `--env-file FILE` (ours): variables set before the configuration is read.
    public var envFiles: [String] = []
    public var quiet = false
    public var verbose = false
    public var showVersion = false
    public var showHelp = false
    public var daemon = false
    public var pidFile: String?
    /// Pids to soft-stop (`-sf`) once this process serves.
    public var softStopPIDs: [Int32] = []
    /// Pids to terminate (`-st`) once this process serves.
    public var terminatePIDs: [Int32] = []
    /// `-x SOCKET`: take listeners from this stats socket.
    public var socketTransfer: String?
    /// `-dR`: no SO_REUSEPORT.
    public var noReusePort = false
    /// `-cc COND`: evaluate a `.if` condition and exit.
    public var evaluateCondition: String?
    /// `-C DIR`: chdir before loading.
    public var changeDirectory: String?
    /// `-d`, `-db`: stay in the foreground whatever `daemon` says.
    public var foreground = false
    /// `-dW`: any warning refuses the start (and fails `-c`), as `zero-warning`.
    public var zeroWarning = false
    /// `-dr`: a server whose name does not resolve starts disabled instead of failing the load.
    public var ignoreResolutionFailures = false
    /// `-dS`: no splicing, as `nosplice`.
    public var noSplice = false
    /// `-L NAME`: the local peer name, exported as HAPROXY_LOCALPEER.
    public var localPeer: String?
    /// `-n N`: the global maxconn, over the config's.
    public var maxConnections: Int?
    /// `-N N`: the maxconn of every frontend that sets none.
    public var defaultProxyMaxConnections: Int?
    /// `-m MB`: the memory limit (RLIMIT_AS), in megabytes.
    public var memoryLimitMegabytes: Int?

    public init() {}

    /// A usage error: the message is printed before the usage text, exit 1.
    public struct UsageError: Error, Equatable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// Parses arguments (without the program name).
    public static func parse(_ arguments: [String]) throws -> CommandLineOptions {
        var o = CommandLineOptions()
        var i = 0
        func value(_ flag: String) throws -> String {
            i += 1
            guard i < arguments.count else { throw UsageError(message: "option '\(flag)' needs an argument") }
            return arguments[i]
        }
        while i < arguments.count {
            let arg = arguments[i]
            switch arg {
            case "--":
                o.configPaths += arguments[(i + 1)...]
                i = arguments.count
                continue
            case "-f": o.configPaths.append(try value(arg))
            case "-c": o.checkOnly = true
            case "-q": o.quiet = true
            case "-V": o.verbose = true; o.quiet = false
            case "-v", "-vv": o.showVersion = true
            case "-h", "--help": o.showHelp = true
            case "-D": o.daemon = true
            case "-p": o.pidFile = try value(arg)
            case "-x": o.socketTransfer = try value(arg)
            case "-e", "--env-file": o.envFiles.append(try value(arg))
            case "-dR": o.noReusePort = true
            case "-db", "-d": o.foreground = true
            case "-dW": o.zeroWarning = true
            case "-dr": o.ignoreResolutionFailures = true
            case "-dS": o.noSplice = true
            case "-L": o.localPeer = try value(arg)
            case "-n", "-N", "-m":
                let text = try value(arg)
                guard let n = Int(text), n > 0, n <= Int(Int32.max) else { throw UsageError(message: "option '\(arg)' needs a positive number, not '\(text)'") }
                if arg == "-n" { o.maxConnections = n } else if arg == "-N" { o.defaultProxyMaxConnections = n } else { o.memoryLimitMegabytes = n }
            case "-cc": o.evaluateCondition = try value(arg)
            case "-C": o.changeDirectory = try value(arg)
            case "-sf", "-st":
                var pids: [Int32] = []
                while i + 1 < arguments.count, !arguments[i + 1].hasPrefix("-") {
                    i += 1
                    pids.append(try parsePID(arguments[i], flag: arg))
                }
                if arg == "-sf" { o.softStopPIDs += pids } else { o.terminatePIDs += pids }
            case "-W": o.masterWorker = true
            case "-Ws": o.masterWorker = true; o.systemdNotify = true
            case "-S": o.masterSocket = try value(arg)
            case "--worker-verdict-fd":
                // Internal: a master's worker reports its verdict on this descriptor.
                let text = try value(arg)
                guard let n = Int32(text), n > 2 else { throw UsageError(message: "option '\(arg)' needs a descriptor number") }
                o.workerVerdictFD = n
            case "--master-pipe-fd":
                // Internal: the master's orders to its worker (no signal needed across users).
                let text = try value(arg)
                guard let n = Int32(text), n > 2 else { throw UsageError(message: "option '\(arg)' needs a descriptor number") }
                o.masterPipeFD = n
            case "--logs-to-stdout":
                // Internal: a PID 1 master's worker; with no global `log` line, `log global` goes to stdout.
                o.defaultLogToStandardOutput = true
            case "--inherit-fds":
                // Internal: descriptors a master passes to a replacement worker.
                let text = try value(arg)
                o.inheritedDescriptors = text.split(separator: ",").compactMap { Int32($0) }.filter { $0 > 2 }
            default:
                throw UsageError(message: "unknown option '\(arg)'")
            }
            i += 1
        }
        if o.verbose { o.quiet = false }
        return o
    }

    /// One pid per argument, read like strtol: trailing blanks are allowed, other bytes are not.
    static func parsePID(_ text: String, flag: String) throws -> Int32 {
        var bytes = Substring(text)
        while let l = bytes.last, l == " " || l == "\t" || l == "\n" { bytes = bytes.dropLast() }
        var leading = bytes
        while let f = leading.first, f == " " || f == "\t" { leading = leading.dropFirst() }
        let digits = leading.prefix { $0 == "-" || $0 == "+" || $0.isNumber }
        let rest = leading.dropFirst(digits.count)
        if !rest.isEmpty, !digits.isEmpty {
            throw UsageError(message: "\(flag) option: some bytes unconsumed in PID list {\(rest.trimmingPrefix(while: { $0 == " " || $0 == "\t" }))}")
        }
        guard let pid = Int64(digits), !rest.contains(where: { !$0.isWhitespace }) || digits.isEmpty, !digits.isEmpty else {
            throw UsageError(message: "\(flag) option: '\(text)' is not a pid")
        }
        guard pid > 0, pid <= Int64(Int32.max) else {
            throw UsageError(message: "\(flag) option: pid \(pid) is invalid; pids are positive")
        }
        return Int32(pid)
    }

    public static let usage = """
    Usage: proxy [-f <cfgfile|cfgdir>]* [-c] [-q] [-V] [-v] [-h]
                 [-D] [-p <pidfile>] [-sf <pid>*] [-st <pid>*] [-x <unix_socket>]
            -f <file|dir> loads a config file, or a directory's *.cfg files in byte order; repeatable
            -- <files...>  every later argument is a config file
            -c             check the configuration and exit: 0 when valid, 1 with every error
            -cc <cond>     evaluate a .if condition: exit 0 when true, 1 when false, 2 on error
            -q             quiet: print errors only
            -V             verbose: with -c, show how load-time rules were decided, which rules
                           read proc. variables, and with -x SOCKET what a reload keeps
            -v             print the version
            -D             run in the background once serving (daemon)
            -p <file>      write the serving process's pid to <file>
            -sf <pid>*     once serving, tell these pids to finish their work and exit (SIGUSR1)
            -st <pid>*     once serving, tell these pids to exit at once (SIGTERM)
            -x <socket>    take the listening sockets from this stats socket (HAProxy's -x)
            -W             master-worker: a master supervises one worker and reloads it
                           on SIGUSR2/SIGHUP or the master CLI's 'reload'
            -Ws            -W, and tell systemd (sd_notify) when it is ready and reloading
            -S <path>      the master CLI socket (show proc, reload)
            -e <file>      (--env-file) set NAME=value lines before reading the configuration,
                           overriding the environment; read at every start and reload (ours)
            -dR            do not use SO_REUSEPORT
            -dW            refuse to start (and fail -c) on any warning
            -dr            start a server whose name does not resolve disabled, instead of failing
            -dS            never splice in TCP mode (as 'nosplice')
            -d, -db        stay in the foreground (over 'daemon')
            -n <n>         global maxconn, over the config's
            -N <n>         maxconn of every frontend that sets none
            -m <megabytes> limit the process's memory (RLIMIT_AS)
            -L <name>      local peer name, exported as HAPROXY_LOCALPEER
            -C <dir>       change to <dir> before loading files
       proxy cli [-s <socket>] [<command>...]
                           talk to the runtime API (stats socket); see 'proxy cli -h'

    """
}
