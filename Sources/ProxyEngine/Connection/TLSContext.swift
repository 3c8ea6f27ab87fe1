import CProxyTLS
import ProxyConfig
import ProxySystem
import Glibc

/// A `bind ... ssl crt FILE` line's TLS server context (OpenSSL's SSL_CTX): its certificate,
/// chain and key, loaded and checked before the point of no return, shared by every loop
/// (OpenSSL makes sessions from one context on any thread).
public final class TLSContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    /// What loads but deserves a word (an expired certificate), as `file:line: warning: ...`.
    public private(set) var warnings: [String] = []

    /// A certificate that cannot serve: the message says which file and why.
    public struct LoadError: Error, CustomStringConvertible {
        public let location: SourceLocation
        public let message: String
        public var description: String { "\(location): error: \(message)" }
    }

    /// What a `bind ... ssl` line loads: its certificates in order (`crt` files, directories
    /// in name order, `crt-list` lines), with the settings each is offered with.
    struct Plan {
        var location: SourceLocation
        var entries: [Entry]
        var sessionContext: String
        var ticketKeys: (Int, [UInt8])?
        var strictSNI: Bool
    }

    /// Reads a `bind ... ssl` line's certificate list (directories, `crt-list` files, the
    /// ticket-key file) with the line's TLS settings over the global `ssl-default-bind-*`.
    /// Its sessions resume on the same addresses only (in this process or the next).
    static func plan(_ bind: BindLine, global: GlobalSettings) throws -> Plan {
        let options = bind.options, location = bind.location
        let sessionContext = bind.listenerKeys.map { "\($0)" }.sorted().joined(separator: " ")
        guard !options.certificates.isEmpty || !options.certificateLists.isEmpty else {
            throw LoadError(location: location, message: "bind: 'ssl' needs a certificate: add 'crt /path/to/cert.pem' (certificate, chain and key in one PEM file)")
        }
        let lineTLS = options.tls.over(global.defaultBindTLS)
        let line = Entry(file: "", tls: lineTLS, verify: options.clientVerify, caFile: path(options.caFile, under: global.authorityBase),
                         crlFile: path(options.crlFile, under: global.authorityBase), names: [])
        // Each `crt` is a PEM file, or a directory whose PEM files all load (HAProxy's
        // companion files, .key .ocsp .issuer .sctl, are skipped), in name order; then each
        // `crt-list` line, with its own options and SNI filters.
        var entries: [Entry] = []
        for path in options.certificates.compactMap({ path($0, under: global.certificateBase) }) {
            if let names = try? FileSystem.listDirectory(path) {
                let skipped = [".key", ".ocsp", ".issuer", ".sctl"]
                let pems = names.filter { n in !n.hasPrefix(".") && !skipped.contains { n.hasSuffix($0) } }.sorted()
                guard !pems.isEmpty else { throw LoadError(location: location, message: "bind: crt '\(path)': the directory holds no certificate") }
                for pem in pems { var e = line; e.file = path + (path.hasSuffix("/") ? "" : "/") + pem; entries.append(e) }
            } else {
                var e = line
                e.file = path
                entries.append(e)
            }
        }
        for list in options.certificateLists {
            entries += try CertificateList.read(list, over: line, global: global, at: location)
        }
        guard !entries.isEmpty else {
            throw LoadError(location: location, message: "bind: the crt-list holds no certificate")
        }
        let ticketKeys = try options.ticketKeysFile.map { try readTicketKeys($0, at: location) }
        return Plan(location: location, entries: entries, sessionContext: sessionContext, ticketKeys: ticketKeys, strictSNI: lineTLS.strictSNI)
    }

    /// Reads each certificate file of `plan` once (a file several entries share is read once).
    static func readCertificates(_ plan: Plan) throws -> [String: [UInt8]] {
        var pems: [String: [UInt8]] = [:]
        for e in plan.entries where pems[e.file] == nil {
            do { pems[e.file] = try FileSystem.readFile(e.file, limit: 1 << 20) } catch let error as SystemError {
                throw LoadError(location: plan.location, message: "bind: cannot load the certificate chain from '\(e.file)': \(error.reason)")
            }
        }
        return pems
    }

    /// Builds the context of `plan` from the certificates' bytes: the first certificate is
    /// the default, the others are chosen by SNI (by their own names, or a crt-list line's
    /// filters). Reads no file.
    static func build(_ plan: Plan, pems: [String: [UInt8]]) throws -> TLSContext {
        let location = plan.location
        var expired: [String] = []
        func make(_ e: Entry) throws -> UnsafeMutableRawPointer {
            let tls = e.tls
            guard let range = tls.effectiveRange else {
                throw LoadError(location: location, message: "bind: no TLS version is left between ssl-min-ver, ssl-max-ver and the no-tlsv1x options (for '\(e.file)')")
            }
            guard let pem = pems[e.file] else {
                throw LoadError(location: location, message: "bind: cannot load the certificate chain from '\(e.file)': not loaded")
            }
            let alpn = ServerTLS.wire(tls.alpn ?? [])
            var error = [CChar](repeating: 0, count: 512)
            let handle: UnsafeMutableRawPointer? = tls.ciphers.withOptionalCString { ciphers in
                tls.ciphersuites.withOptionalCString { suites in
                    tls.curves.withOptionalCString { curves in
                        alpn.withUnsafeBufferPointer { a in
                            plan.sessionContext.withCString { sessions in
                              e.caFile.withOptionalCString { ca in
                                e.crlFile.withOptionalCString { crl in
                                var settings = cproxy_tls_settings(ciphers: ciphers, ciphersuites: suites, curves: curves,
                                                                   min_version: Int32(range.lowerBound), max_version: Int32(range.upperBound),
                                                                   no_tickets: tls.noTickets ? 1 : 0, prefer_client_ciphers: tls.preferClientCiphers ? 1 : 0,
                                                                   alpn: alpn.isEmpty ? nil : a.baseAddress, alpn_length: alpn.count,
                                                                   session_context: sessions, verify: Int32(e.verify),
                                                                   ca_file: ca, crl_file: crl)
                                return pem.withUnsafeBytes { bytes in
                                    cproxy_tls_server_context(e.file, bytes.baseAddress, bytes.count, &settings, &error, error.count)
                                }
                                }
                              }
                            }
                        }
                    }
                }
            }
            guard let handle else {
                let text = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                throw LoadError(location: location, message: "bind: \(text)")
            }
            var when = [CChar](repeating: 0, count: 64)
            if cproxy_tls_expired(handle, &when, when.count) == 1 {
                let date = String(decoding: when.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                expired.append("\(location): warning: bind: the certificate in '\(e.file)' expired on \(date); clients will refuse it")
            }
            if let (length, bytes) = plan.ticketKeys { _ = cproxy_tls_set_ticket_keys(handle, bytes, length, Int32(bytes.count / length)) }
            return handle
        }
        let first = plan.entries[0]
        let context = TLSContext(handle: try make(first))
        if !first.names.isEmpty {
            // Its filters name it too (the default serves every other name anyway).
            let again = try make(first)
            guard addNamed(context.handle, again, first.names) else { throw LoadError(location: location, message: "bind: out of memory for SNI names") }
        }
        for e in plan.entries.dropFirst() {
            let other = try make(e)
            if e.names.isEmpty {
                guard cproxy_tls_add_sni(context.handle, other) == 1 else {
                    throw LoadError(location: location, message: "bind: the certificate in '\(e.file)' names no host (no DNS subjectAltName, no CN) for SNI to choose it by")
                }
            } else if !addNamed(context.handle, other, e.names) {
                throw LoadError(location: location, message: "bind: out of memory for SNI names")
            }
        }
        if plan.strictSNI && cproxy_tls_set_strict_sni(context.handle) != 1 {
            throw LoadError(location: location, message: "bind: strict-sni: the certificate in '\(first.file)' names no host (no DNS subjectAltName, no CN) to match")
        }
        context.warnings = expired
        return context
    }

    /// A relative certificate or authority path under its base (`crt-base`, `ca-base`);
    /// absolute paths and `@system-ca` stay as they are.
    static func path(_ path: String?, under base: String?) -> String? {
        guard var path else { return nil }
        if path != "@system-ca", !path.hasPrefix("/"), let base { path = base + (base.hasSuffix("/") ? "" : "/") + path }
        return path
    }

    /// One certificate and how it is offered: a `crt` (the line's settings) or a `crt-list`
    /// line (its own options over the line's, and the SNI names it serves; empty: its own).
    struct Entry {
        var file: String
        var tls: TLSSettings
        var verify: Int
        var caFile: String?
        var crlFile: String?
        var names: [String]
    }

    static func addNamed(_ context: UnsafeMutableRawPointer, _ other: UnsafeMutableRawPointer, _ names: [String]) -> Bool {
        var pointers = names.map { strdup($0) }
        defer { for p in pointers { free(p) } }
        return pointers.withUnsafeMutableBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: b.count) {
                cproxy_tls_add_sni_named(context, other, $0, Int32(b.count)) == 1
            }
        }
    }

    private init(handle: UnsafeMutableRawPointer) { self.handle = handle }

    /// `tls-ticket-keys FILE`: one base64 key per line (48 bytes: AES-128, 80: AES-256, not
    /// mixed), at least three; the last three are used. Returns the key length and their bytes.
    static func readTicketKeys(_ path: String, at location: SourceLocation) throws -> (Int, [UInt8]) {
        let text: [UInt8]
        do { text = try FileSystem.readFile(path, limit: 1 << 20) } catch let e as SystemError {
            throw LoadError(location: location, message: "bind: tls-ticket-keys: cannot read '\(path)': \(e.reason)")
        }
        var keys: [[UInt8]] = []
        for (n, line) in text.split(separator: 10, omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.filter { $0 != 13 && $0 != 32 && $0 != 9 }
            if trimmed.isEmpty { continue }
            guard let key = Base64.decode(trimmed), key.count == 48 || key.count == 80 else {
                throw LoadError(location: location, message: "bind: tls-ticket-keys: line \(n + 1) of '\(path)' is not a base64 key of 48 or 80 bytes (make one with: openssl rand 80 | openssl base64 -A)")
            }
            if let first = keys.first, first.count != key.count {
                throw LoadError(location: location, message: "bind: tls-ticket-keys: line \(n + 1) of '\(path)' is \(key.count) bytes, the first key \(first.count): AES-128 and AES-256 keys cannot be mixed")
            }
            keys.append(key)
        }
        guard keys.count >= 3 else {
            throw LoadError(location: location, message: "bind: tls-ticket-keys: '\(path)' holds \(keys.count) key\(keys.count == 1 ? "" : "s"); it needs at least 3 (the last three are used, the penultimate one encrypts)")
        }
        return (keys[0].count, keys.suffix(3).flatMap { $0 })
    }

    deinit { cproxy_tls_context_free(handle) }
}

extension Optional where Wrapped == String {
    /// Calls `body` with a C string, or NULL for nil.
    func withOptionalCString<R>(_ body: (UnsafePointer<CChar>?) -> R) -> R {
        switch self {
        case .some(let s): return s.withCString { body($0) }
        case .none: return body(nil)
        }
    }
}
