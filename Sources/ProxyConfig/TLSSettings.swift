/// How a TLS listener negotiates: `bind` options over the `ssl-default-bind-*` lines, as
/// HAProxy merges them. Versions are the protocol numbers OpenSSL uses (0x0303: TLS 1.2).
public struct TLSSettings: Sendable, Equatable, Hashable {
    public var ciphers: String?
    public var ciphersuites: String?
    public var curves: String?
    public var minVersion: Int?
    public var maxVersion: Int?
    /// `no-tlsv1x`: versions turned off one by one.
    public var disabledVersions: Set<Int> = []
    public var noTickets = false
    /// `strict-sni`: no certificate for the client's server name, no handshake.
    public var strictSNI = false
    public var preferClientCiphers = false
    /// `alpn`: the protocols offered, in the order given (h2 removed: not offered).
    public var alpn: [String]?

    public init() {}

    /// HAProxy's version names.
    public static let versions: [String: Int] = ["SSLv3": 0x0300, "TLSv1.0": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304]
    static let disableWords: [String: Int] = ["no-sslv3": 0x0300, "no-tlsv10": 0x0301, "no-tlsv11": 0x0302, "no-tlsv12": 0x0303, "no-tlsv13": 0x0304]
    static let forceWords: [String: Int] = ["force-sslv3": 0x0300, "force-tlsv10": 0x0301, "force-tlsv11": 0x0302, "force-tlsv12": 0x0303, "force-tlsv13": 0x0304]

    /// The words `ssl-default-bind-options` and `bind` share; nil when `word` is not one.
    /// `next` gives the value of a word that takes one.
    public mutating func apply(_ word: String, next: () throws -> String) throws -> Bool {
        if let v = Self.disableWords[word] { disabledVersions.insert(v); return true }
        if let v = Self.forceWords[word] { minVersion = v; maxVersion = v; return true }
        switch word {
        case "ssl-min-ver", "ssl-max-ver":
            let name = try next()
            guard let v = Self.versions[name] else {
                throw ConfigError("'\(word)' takes one of \(Self.versions.keys.sorted().joined(separator: ", ")), not '\(name)'")
            }
            if word == "ssl-min-ver" { minVersion = v } else { maxVersion = v }
        case "no-tls-tickets": noTickets = true
        case "strict-sni": strictSNI = true
        case "prefer-client-ciphers": preferClientCiphers = true
        case "ciphers": ciphers = try next()
        case "ciphersuites": ciphersuites = try next()
        case "curves": curves = try next()
        default: return false
        }
        return true
    }

    /// These settings over `defaults` (a bind line's over the global ones).
    public func over(_ defaults: TLSSettings) -> TLSSettings {
        var r = defaults
        if let v = ciphers { r.ciphers = v }
        if let v = ciphersuites { r.ciphersuites = v }
        if let v = curves { r.curves = v }
        if let v = minVersion { r.minVersion = v }
        if let v = maxVersion { r.maxVersion = v }
        r.disabledVersions.formUnion(disabledVersions)
        r.noTickets = r.noTickets || noTickets
        r.strictSNI = r.strictSNI || strictSNI
        r.preferClientCiphers = r.preferClientCiphers || preferClientCiphers
        if let v = alpn { r.alpn = v }
        return r
    }

    /// The range offered: from `ssl-min-ver` (TLS 1.2 by default: older ones only when asked)
    /// to `ssl-max-ver`, without the versions turned off at either end. Nil when none is left.
    public var effectiveRange: ClosedRange<Int>? {
        var low = minVersion ?? 0x0303
        var high = maxVersion ?? 0x0304
        while low <= high && disabledVersions.contains(low) { low += 1 }
        while high >= low && disabledVersions.contains(high) { high -= 1 }
        return low <= high ? low...high : nil
    }
}
