import ProxyRules

/// A `%` variable of a log-format string, as HAProxy 2.6 names them ("Custom log format").
public enum LogVariable: String, CaseIterable, Sendable {
    case bytesRead = "B", requestCookie = "CC", responseCookie = "CS", hostname = "H"
    case method = "HM", uriPath = "HP", pathOnly = "HPO", query = "HQ", uri = "HU", httpVersion = "HV"
    case uniqueID = "ID", status = "ST", gmtDate = "T", activeTime = "Ta", connectTime = "Tc", dataTime = "Td"
    case localDate = "Tl", handshakeTime = "Th", idleTime = "Ti", requestTotalTime = "Tq", requestTime = "TR"
    case responseTime = "Tr", timestamp = "Ts", totalTime = "Tt", userTime = "Tu", queueTime = "Tw"
    case bytesUploaded = "U", activeConnections = "ac", backend = "b", backendConnections = "bc"
    case backendSourceIP = "bi", backendSourcePort = "bp", backendQueue = "bq", clientIP = "ci", clientPort = "cp"
    case frontend = "f", frontendConnections = "fc", frontendIP = "fi", frontendPort = "fp", frontendTransport = "ft"
    case logCounter = "lc", requestHeaders = "hr", requestHeaderList = "hrl", responseHeaders = "hs"
    case responseHeaderList = "hsl", milliseconds = "ms", pid = "pid", requestLine = "r", retries = "rc"
    case requestCounter = "rt", server = "s", serverConnections = "sc", serverIP = "si", serverPort = "sp"
    case serverQueue = "sq", tlsCipher = "sslc", tlsVersion = "sslv", date = "t", requestDate = "tr"
    case requestDateGMT = "trg", requestDateLocal = "trl", termination = "ts", terminationCookie = "tsc"

    /// HAProxy's "H" restriction: the variable needs `mode http`.
    public var needsHTTP: Bool {
        switch self {
        case .requestCookie, .responseCookie, .method, .uriPath, .pathOnly, .query, .uri, .httpVersion,
             .activeTime, .idleTime, .requestTotalTime, .requestTime, .responseTime, .requestLine,
             .requestDate, .requestDateGMT, .requestDateLocal, .terminationCookie:
            return true
        default:
            return false
        }
    }

    /// The request line is kept for the log only when a variable reads it.
    public var readsRequestLine: Bool {
        switch self {
        case .method, .uriPath, .pathOnly, .query, .uri, .httpVersion, .requestLine: return true
        default: return false
        }
    }
}

/// The flags of a log-format variable: `%{+Q}r`, `%{+X}ci`, `%{+E}[expr]`.
public struct LogFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// `Q`: a string in double quotes.
    public static let quote = LogFlags(rawValue: 1)
    /// `X`: IPs, ports and counters in hexadecimal.
    public static let hex = LogFlags(rawValue: 2)
    /// `E`: `"`, `\` and `]` escaped with `\` (RFC 5424 structured data).
    public static let escape = LogFlags(rawValue: 4)
}

/// One piece of a parsed log-format string.
public enum LogFormatNode: Sendable {
    case literal([UInt8])
    /// An unescaped space of an access-log format: consecutive ones print one space, and
    /// none after a variable that printed nothing.
    case separator
    case variable(LogVariable, LogFlags)
    case sample(SampleExpression, LogFlags)
}

/// Parses HAProxy log-format strings (access logs, header values, bodies, redirects).
public enum LogFormatText {
    /// HAProxy's three built-in layouts, as the log-format strings it documents.
    public static let tcpLog = "%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq"
    public static let httpLog = "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs %{+Q}r"
    public static let httpLogCLF = "%{+Q}o %{-Q}ci - - [%trg] %r %ST %B \"\" \"\" %cp %ms %ft %b %s %TR %Tw %Tc %Tr %Ta %tsc %ac %fc %bc %sc %rc %sq %bq %CC %CS %hrl %hsl"

    public struct Failure: Error, Sendable {
        public let message: String
    }

    /// The nodes of `text`. With `separators`, spaces are log-line separators (merged);
    /// otherwise they are literal text.
    public static func parse(_ text: String, separators: Bool) throws(Failure) -> [LogFormatNode] {
        var nodes: [LogFormatNode] = []
        var literal: [UInt8] = []
        var global: LogFlags = []
        let b = Array(text.utf8)
        func flush() { if !literal.isEmpty { nodes.append(.literal(literal)); literal = [] } }
        var i = 0
        while i < b.count {
            let c = b[i]
            if c == 0x20 && separators {
                flush()
                if case .separator? = nodes.last {} else { nodes.append(.separator) }
                i += 1
                continue
            }
            guard c == UInt8(ascii: "%") else { literal.append(c); i += 1; continue }
            i += 1
            guard i < b.count else { throw Failure(message: "'%' at the end of '\(text)'; write '%%' for a percent sign") }
            if b[i] == UInt8(ascii: "%") { literal.append(c); i += 1; continue }
            var flags = global
            if b[i] == UInt8(ascii: "{") {
                let start = i + 1
                while i < b.count, b[i] != UInt8(ascii: "}") { i += 1 }
                guard i < b.count else { throw Failure(message: "'%{' without '}' in '\(text)'") }
                for option in String(decoding: b[start..<i], as: UTF8.self).split(separator: ",", omittingEmptySubsequences: true) {
                    guard let sign = option.first, sign == "+" || sign == "-", option.count == 2 else {
                        throw Failure(message: "'%{\(option)}': a flag is written '+Q' or '-Q' (flags: Q, X, E)")
                    }
                    let flag: LogFlags
                    switch option.last! {
                    case "Q": flag = .quote
                    case "X": flag = .hex
                    case "E": flag = .escape
                    default: throw Failure(message: "'%{\(option)}': unknown flag '\(option.last!)'; the flags are Q (quote), X (hexadecimal) and E (escape)")
                    }
                    if sign == "+" { flags.insert(flag) } else { flags.remove(flag) }
                }
                i += 1
            }
            if i < b.count, b[i] == UInt8(ascii: "[") {
                let start = i + 1
                var depth = 0
                var j = start
                while j < b.count {
                    if b[j] == UInt8(ascii: "(") { depth += 1 }
                    if b[j] == UInt8(ascii: ")") { depth -= 1 }
                    if b[j] == UInt8(ascii: "]") && depth <= 0 { break }
                    j += 1
                }
                guard j < b.count else { throw Failure(message: "'%[' without ']' in '\(text)'") }
                let expression = String(decoding: b[start..<j], as: UTF8.self)
                do {
                    flush()
                    nodes.append(.sample(try SampleExpression.parse(expression), flags))
                } catch let e as RuleError {
                    throw Failure(message: "in '%[\(expression)]': \(e.message)")
                } catch {
                    throw Failure(message: "in '%[\(expression)]': \(error)")
                }
                i = j + 1
                continue
            }
            var j = i
            while j < b.count, (b[j] | 0x20) >= 0x61, (b[j] | 0x20) <= 0x7a { j += 1 }
            guard j > i else {
                throw Failure(message: "'%' must be followed by a variable, '[' or '%' in '\(text)'; write '%%' for a percent sign")
            }
            let name = String(decoding: b[i..<j], as: UTF8.self)
            i = j
            if name == "o" { global = flags; continue }
            guard let v = LogVariable(rawValue: name) else {
                var hint = ""
                if let near = Similarity.closest(to: name, in: LogVariable.allCases.map(\.rawValue)) { hint = " (did you mean '%\(near)'?)" }
                throw Failure(message: "no such log-format variable '%\(name)'\(hint); write '%%' for a percent sign")
            }
            flush()
            nodes.append(.variable(v, flags))
        }
        flush()
        return nodes
    }
}
