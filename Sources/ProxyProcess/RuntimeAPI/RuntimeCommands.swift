import ProxyConfig
import ProxyEngine
import ProxySystem
import Glibc

/// The runtime API's commands: words in, text out. Each answer ends with an empty line, as
/// HAProxy's CLI does, so scripts that read up to it work unchanged. `_getsocks` and `quit`
/// act on the connection and live in `RuntimeAPIServer`.
struct RuntimeCommands {
    let engine: ProxyEngine
    let startedAt: Int
    let threads: Int
    /// True once this process is soft-stopping.
    var stopping: () -> Bool

    /// A command line split into commands (`;`), each into words. A backslash escapes the
    /// next character, as in HAProxy.
    static func split(_ line: String) -> [[String]] {
        var commands: [[String]] = []
        var words: [String] = []
        var word = ""
        var escaped = false
        var inWord = false
        for c in line {
            if escaped { word.append(c); escaped = false; inWord = true; continue }
            switch c {
            case "\\": escaped = true
            case " ", "\t", "\r":
                if inWord { words.append(word); word = ""; inWord = false }
            case ";":
                if inWord { words.append(word); word = ""; inWord = false }
                if !words.isEmpty { commands.append(words) }
                words = []
            default:
                word.append(c); inWord = true
            }
        }
        if inWord { words.append(word) }
        if !words.isEmpty { commands.append(words) }
        return commands
    }

    static let help: [(String, String)] = [
        ("help", "list the commands"),
        ("show info", "report information about the running process"),
        ("quit", "close this connection"),
        ("_getsocks", "hand the listening sockets to a new process (needs 'expose-fd listeners')"),
    ]

    func run(_ words: [String], level: String) -> String {
        switch (words.first ?? "", words.dropFirst().first) {
        case ("help", _):
            return usage()
        case ("show", "info"?):
            return info()
        default:
            return "Unknown command: '\(words.joined(separator: " "))'.\n" + usage()
        }
    }

    func usage() -> String {
        var text = "The following commands are valid at this level:\n"
        for (command, what) in Self.help { text += "  " + command.padding(to: 24) + ": " + what + "\n" }
        return text + "\n"
    }

    func info() -> String {
        let uptime = max(0, Int(time(nil)) - startedAt)
        let days = uptime / 86_400, hours = uptime / 3600 % 24, minutes = uptime / 60 % 60, seconds = uptime % 60
        let model = engine.model
        let fields: [(String, String)] = [
            ("Name", "proxy"),
            ("Version", ProxyMain.version),
            ("Nbthread", "\(threads)"),
            ("Process_num", "1"),
            ("Pid", "\(getpid())"),
            ("Uptime", "\(days)d \(hours)h\(String(minutes).leftPadded(2))m\(String(seconds).leftPadded(2))s"),
            ("Uptime_sec", "\(uptime)"),
            ("Maxconn", "\(model.maxConnections)"),
            ("CurrConns", "\(model.activeConnections.load(ordering: .relaxed))"),
            ("Listeners", "\(engine.listeners.count)"),
            ("Stopping", stopping() ? "1" : "0"),
        ]
        return fields.map { "\($0.0): \($0.1)\n" }.joined() + "\n"
    }
}

extension String {
    func padding(to width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
