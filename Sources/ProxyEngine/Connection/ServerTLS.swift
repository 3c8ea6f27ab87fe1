import CProxyTLS
import ProxyConfig
import ProxyRules

/// A `server ... ssl` line's TLS client side: OpenSSL's client context (authorities,
/// revocation lists, our certificate, the settings over `ssl-default-server-*`), the slot that
/// keeps the server's last session for reuse, and what each connection sends (SNI) and
/// checks (the name the certificate must hold). Loaded before the point of no return.
public final class ServerTLS: @unchecked Sendable {
    let context: UnsafeMutableRawPointer
    /// The server's last resumable session; nil with `no-ssl-reuse`.
    let reuse: UnsafeMutableRawPointer?
    /// `sni EXPR`, evaluated when a connection opens.
    let serverName: SampleExpression?
    /// Whether it has one (read on the request path without copying the expression).
    let sendsServerName: Bool
    /// `verifyhost`: the name checked when no SNI is sent.
    let verifyHost: String?
    /// `check-sni`: the name TLS health checks send.
    let checkServerName: String?
    /// `check-alpn` in ALPN wire format; empty: the context's `alpn`.
    let checkALPN: [UInt8]
    /// Connections to the server are TLS (`ssl`); false when only the checks are (`check-ssl`).
    let forTraffic: Bool
    let forChecks: Bool

    /// Every TLS server of `configuration`, by `backend/server`, loaded and checked now (before
    /// any chroot: the files are read where the configuration names them).
    public static func loadAll(_ configuration: Configuration) throws -> [String: ServerTLS] {
        var all: [String: ServerTLS] = [:]
        for p in configuration.proxies where p.isBackend {
            for s in p.servers where s.options.ssl || s.options.checksUseTLS {
                all["\(p.name)/\(s.name)"] = try load(s, backend: p.name, global: configuration.global)
            }
        }
        return all
    }

    static func load(_ server: ServerDefinition, backend: String, global: GlobalSettings) throws -> ServerTLS {
        let o = server.options.serverTLS
        let where_ = "server '\(backend)/\(server.name)'"
        let tls = o.settings.over(global.defaultServerTLS)
        guard let range = tls.effectiveRange else {
            throw TLSContext.LoadError(location: server.location, message: "\(where_): no TLS version is left between ssl-min-ver, ssl-max-ver and the no-tlsv1x options")
        }
        let alpn = wire(tls.alpn ?? [])
        let verify = o.verify ?? global.serverVerify
        var error = [CChar](repeating: 0, count: 512)
        let caFile = TLSContext.path(o.caFile, under: global.authorityBase)
        let crlFile = TLSContext.path(o.crlFile, under: global.authorityBase)
        let certificate = TLSContext.path(o.certificate, under: global.certificateBase)
        let handle: UnsafeMutableRawPointer? = tls.ciphers.withOptionalCString { ciphers in
            tls.ciphersuites.withOptionalCString { suites in
                tls.curves.withOptionalCString { curves in
                    caFile.withOptionalCString { ca in
                        crlFile.withOptionalCString { crl in
                            certificate.withOptionalCString { crt in
                                alpn.withUnsafeBufferPointer { a in
                                    var settings = cproxy_tls_client_settings(
                                        ciphers: ciphers, ciphersuites: suites, curves: curves,
                                        min_version: Int32(range.lowerBound), max_version: Int32(range.upperBound),
                                        no_tickets: tls.noTickets ? 1 : 0, verify: verify ? 1 : 0,
                                        ca_file: ca, crl_file: crl, certificate: crt,
                                        alpn: alpn.isEmpty ? nil : a.baseAddress, alpn_length: alpn.count)
                                    return cproxy_tls_client_context(&settings, &error, error.count)
                                }
                            }
                        }
                    }
                }
            }
        }
        guard let handle else {
            let text = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw TLSContext.LoadError(location: server.location, message: "\(where_): \(text)")
        }
        return ServerTLS(context: handle, reuse: o.reuse ? cproxy_tls_reuse_slot_new() : nil, serverName: o.sni,
                         verifyHost: o.verifyHost, checkServerName: o.checkSNI, checkALPN: wire(o.checkALPN ?? []),
                         forTraffic: server.options.ssl, forChecks: server.options.checksUseTLS)
    }

    private init(context: UnsafeMutableRawPointer, reuse: UnsafeMutableRawPointer?, serverName: SampleExpression?,
                 verifyHost: String?, checkServerName: String?, checkALPN: [UInt8], forTraffic: Bool, forChecks: Bool) {
        self.context = context
        self.reuse = reuse
        self.serverName = serverName
        sendsServerName = serverName != nil
        self.verifyHost = verifyHost
        self.checkServerName = checkServerName
        self.checkALPN = checkALPN
        self.forTraffic = forTraffic
        self.forChecks = forChecks
    }

    deinit {
        cproxy_tls_context_free(context)
        if let reuse { cproxy_tls_reuse_slot_free(reuse) }
    }

    /// Protocols in ALPN wire format: each one's length, then its name.
    static func wire(_ protocols: [String]) -> [UInt8] {
        var out: [UInt8] = []
        for p in protocols where !p.isEmpty && p.utf8.count < 256 { out.append(UInt8(p.utf8.count)); out += p.utf8 }
        return out
    }

    /// The name a connection sends as SNI, from `sni EXPR` in `samples`; nil: none.
    func serverName(in samples: some SampleContext) -> String? {
        guard let e = serverName else { return nil }
        var name: String?
        _ = samples.visitSamples(of: e.fetch) { raw in
            guard let (v, fold) = e.convert(raw) else { return false }
            name = String(decoding: SampleValue(v, fold: fold).text, as: UTF8.self)
            return true
        }
        // A Host header's port is not part of a server name (RFC 6066): left out.
        if let n = name, !n.hasPrefix("["), let colon = n.lastIndex(of: ":") { name = String(n[..<colon]) }
        return name.flatMap { $0.isEmpty ? nil : $0 }
    }
}
