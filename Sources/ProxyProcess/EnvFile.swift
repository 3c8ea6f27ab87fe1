import ProxyConfig
import ProxySystem

/// `-e FILE` / `--env-file FILE` (ours): variables read before the configuration is parsed,
/// at every start and so at every reload, overriding the inherited environment; the seed's
/// switch under a service manager that freezes the environment (`echo HAPROXY_MAINT=1 >>
/// /etc/proxy/env`, then reload). Its grammar (DECISIONS): `NAME=value` lines, `#` comments,
/// blank lines, an optional leading `export `, the value optionally in single or double
/// quotes; any other line is an error with `FILE:LINE`.
enum EnvFile {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// The assignments in `text`, in order.
    static func parse(_ text: String, name: String) throws -> [(name: String, value: String)] {
        var out: [(String, String)] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(raw)
            if line.hasSuffix("\r") { line = line.dropLast() }
            line = line.drop { $0 == " " || $0 == "\t" }
            if line.isEmpty || line.hasPrefix("#") { continue }
            let at = "\(name):\(i + 1)"
            if line.hasPrefix("export ") || line.hasPrefix("export\t") {
                line = line.dropFirst(7).drop { $0 == " " || $0 == "\t" }
            }
            guard let eq = line.firstIndex(of: "=") else {
                throw Failure(description: "\(at): error: '\(line)' is not NAME=value; write NAME=value, or '#' for a comment")
            }
            let key = String(line[..<eq])
            guard let first = key.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic),
                  key.unicodeScalars.allSatisfy({ $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }) else {
                throw Failure(description: "\(at): error: '\(key)' is not a variable name (letters, digits and '_', not starting with a digit)")
            }
            var value = line[line.index(after: eq)...]
            // Trailing blanks go, unless quoted.
            while value.last == " " || value.last == "\t" { value = value.dropLast() }
            if let q = value.first, q == "\"" || q == "'" {
                guard value.count >= 2, value.last == q else {
                    throw Failure(description: "\(at): error: the value of \(key) opens a \(q == "\"" ? "double" : "single") quote it does not close")
                }
                value = value.dropFirst().dropLast()
            }
            out.append((key, String(value)))
        }
        return out
    }

    /// Reads and applies `path` to this process's environment (before any thread starts).
    static func apply(_ path: String) throws -> [(name: String, value: String)] {
        let bytes: [UInt8]
        do { bytes = try FileSystem.readFile(path) } catch let e as SystemError {
            throw Failure(description: "\(path): error: cannot read the environment file: \(e.reason)")
        }
        let assignments = try parse(String(decoding: bytes, as: UTF8.self), name: path)
        for (k, v) in assignments { ProcessEnvironment.set(k, v) }
        return assignments
    }
}
