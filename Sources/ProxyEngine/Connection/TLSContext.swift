import CProxyTLS
import ProxyConfig

/// A `bind ... ssl crt FILE` line's TLS server context (OpenSSL's SSL_CTX): its certificate,
/// chain and key, loaded and checked before the point of no return, shared by every loop
/// (OpenSSL makes sessions from one context on any thread).
public final class TLSContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    /// A certificate that cannot serve: the message says which file and why.
    public struct LoadError: Error, CustomStringConvertible {
        public let location: SourceLocation
        public let message: String
        public var description: String { "\(location): error: \(message)" }
    }

    /// Loads `options.certificates` (one PEM file with the key today).
    public static func load(_ options: BindOptions, at location: SourceLocation) throws -> TLSContext {
        guard let pem = options.certificates.first else {
            throw LoadError(location: location, message: "bind: 'ssl' needs a certificate: add 'crt /path/to/cert.pem' (certificate, chain and key in one PEM file)")
        }
        guard options.certificates.count == 1 else {
            throw LoadError(location: location, message: "bind: several 'crt' (SNI) are not supported yet; keep one")
        }
        var error = [CChar](repeating: 0, count: 512)
        guard let handle = cproxy_tls_server_context(pem, &error, error.count) else {
            let text = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw LoadError(location: location, message: "bind: \(text)")
        }
        return TLSContext(handle: handle)
    }

    private init(handle: UnsafeMutableRawPointer) { self.handle = handle }

    deinit { cproxy_tls_context_free(handle) }
}
