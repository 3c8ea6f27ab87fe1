import ProxyConfig
import ProxySystem

/// A `crt-list` file, HAProxy's format: one certificate per line, `FILE [[OPTIONS]]
/// [SNI ...]`, `#` comments; the options in brackets (`alpn`, `ca-file`, `crl-file`,
/// `verify`, versions, ciphers, curves) are the certificate's own, over the `bind` line's; the SNI filters are the names
/// it serves (`*.` wildcards one label deep; `!name` excludes a name; only exclusions: its
/// own names less those). Read before the point of no return.
enum CertificateList {
    static func read(_ path: String, over line: TLSContext.Entry, global: GlobalSettings, at location: SourceLocation) throws -> [TLSContext.Entry] {
        func fail(_ n: Int, _ message: String) -> TLSContext.LoadError {
            TLSContext.LoadError(location: location, message: "bind: crt-list '\(path)' line \(n): \(message)")
        }
        let full = TLSContext.path(path, under: global.certificateBase)!
        let bytes: [UInt8]
        do { bytes = try FileSystem.readFile(full, limit: 16 << 20) } catch let e as SystemError {
            throw TLSContext.LoadError(location: location, message: "bind: crt-list: cannot read '\(full)': \(e.reason)")
        }
        var entries: [TLSContext.Entry] = []
        for (i, raw) in String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let n = i + 1
            let text = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            var words = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)[...]
            guard let file = words.popFirst() else { continue }
            var e = line
            e.file = TLSContext.path(file, under: global.certificateBase)!
            // `[option ...]`: the brackets may touch the words or stand alone.
            if let first = words.first, first.hasPrefix("[") {
                var options: [String] = []
                var closed = false
                while let w = words.popFirst() {
                    var word = Substring(w)
                    if word.hasPrefix("[") { word = word.dropFirst() }
                    if word.hasSuffix("]") { word = word.dropLast(); closed = true }
                    if !word.isEmpty { options.append(String(word)) }
                    if closed { break }
                }
                guard closed else { throw fail(n, "the options' '[' has no ']'") }
                var o = options[...]
                var own = TLSSettings()
                while let opt = o.popFirst() {
                    func value() throws -> String {
                        guard let v = o.popFirst() else { throw fail(n, "'\(opt)' needs a value") }
                        return v
                    }
                    switch opt {
                    case "alpn":
                        let kept = try value().split(separator: ",").map(String.init).filter { $0 != "h2" }
                        guard !kept.isEmpty else { throw fail(n, "alpn: HTTP/2 is not offered; add http/1.1") }
                        own.alpn = kept
                    case "ca-file": e.caFile = TLSContext.path(try value(), under: global.authorityBase)
                    case "crl-file": e.crlFile = TLSContext.path(try value(), under: global.authorityBase)
                    case "verify":
                        switch try value() {
                        case "none": e.verify = 0
                        case "optional": e.verify = 1
                        case "required": e.verify = 2
                        case let v: throw fail(n, "verify: none, optional or required, not '\(v)'")
                        }
                    case "strict-sni":
                        throw fail(n, "strict-sni belongs to the bind line: it is about names no certificate serves")
                    default:
                        // Versions, ciphers, curves, tickets: applied when SNI picks this
                        // certificate, before the version and the cipher are settled.
                        do {
                            guard try own.apply(opt, next: value) else {
                                throw fail(n, "unknown option '\(opt)'; a crt-list line takes alpn, ca-file, crl-file, verify, ciphers, ciphersuites, curves, ssl-min-ver, ssl-max-ver, no-tlsv1x, force-tlsv1x, no-tls-tickets and prefer-client-ciphers")
                            }
                        } catch let e as ConfigError {
                            throw fail(n, e.message)
                        }
                    }
                }
                e.tls = own.over(line.tls)
                if e.verify > 0 && e.caFile == nil { throw fail(n, "verify needs a ca-file") }
            }
            for filter in words {
                guard filter != "!" else { throw fail(n, "a negative SNI filter needs a name after '!'") }
                e.names.append(filter)
            }
            entries.append(e)
        }
        return entries
    }
}
