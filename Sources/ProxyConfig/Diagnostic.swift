/// A place in a config file: the path as given, and a 1-based line.
public struct SourceLocation: Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int

    public init(file: String, line: Int) {
        self.file = file
        self.line = line
    }

    public var description: String { line > 0 ? "\(file):\(line)" : file }
}

/// One finding of the loader, printed as `FILE:LINE: error: message`.
public struct Diagnostic: Equatable, Sendable, CustomStringConvertible {
    public enum Severity: String, Sendable, Comparable {
        case notice, warning, error

        public static func < (a: Severity, b: Severity) -> Bool {
            let order: [Severity] = [.notice, .warning, .error]
            return order.firstIndex(of: a)! < order.firstIndex(of: b)!
        }
    }

    public var location: SourceLocation?
    public var severity: Severity
    public var message: String

    public init(_ severity: Severity, _ message: String, at location: SourceLocation?) {
        self.severity = severity
        self.message = message
        self.location = location
    }

    public var description: String {
        if let l = location { return "\(l): \(severity.rawValue): \(message)" }
        return "\(severity.rawValue): \(message)"
    }
}

/// An error raised while parsing one line; the loader records it and goes on.
public struct ConfigError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
