import CProxySys
import ProxySystem

/// `stats auth USER:PASSWORD` checked against an `Authorization: Basic` header. A password
/// written as a crypt(3) hash (`$5$...`, `$6$...`, `$y$...`, `$2b$...`) is checked with the
/// system's libcrypt; any other is compared as written, as HAProxy does. A header that
/// passed once is remembered, so a dashboard refreshing every few seconds costs one hash.
final class BasicAuth: @unchecked Sendable {
    let credentials: [(user: String, password: String)]
    private let accepted = Locked<Set<String>>([])

    init(_ credentials: [(user: String, password: String)]) {
        self.credentials = credentials
    }

    /// True when the password is a crypt(3) hash of a method libcrypt knows.
    static func isHash(_ password: String) -> Bool {
        ["$1$", "$5$", "$6$", "$y$", "$gy$", "$7$", "$2b$", "$2y$", "$2a$"].contains { password.hasPrefix($0) }
    }

    /// True when the `Authorization` header names one of the users with its password.
    func allows(_ header: String?) -> Bool {
        guard let header else { return false }
        if accepted.withLock({ $0.contains(header) }) { return true }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "basic", let decoded = Self.base64(parts[1]),
              let colon = decoded.firstIndex(of: UInt8(ascii: ":")) else { return false }
        let user = String(decoding: decoded[..<colon], as: UTF8.self)
        let password = String(decoding: decoded[(colon + 1)...], as: UTF8.self)
        for c in credentials where c.user == user {
            let ok = Self.isHash(c.password) ? cproxy_crypt_matches(password, c.password) == 1 : c.password == password
            if ok {
                accepted.withLock { if $0.count < 64 { $0.insert(header) } }
                return true
            }
        }
        return false
    }

    /// Standard base64 (RFC 4648), padding optional; nil on any other character.
    static func base64(_ text: Substring) -> [UInt8]? {
        var out: [UInt8] = []
        var acc = 0, bits = 0
        for c in text.utf8 {
            let v: Int
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = Int(c - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): v = Int(c - UInt8(ascii: "a")) + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = Int(c - UInt8(ascii: "0")) + 52
            case UInt8(ascii: "+"): v = 62
            case UInt8(ascii: "/"): v = 63
            case UInt8(ascii: "="): continue
            default: return nil
            }
            acc = (acc << 6) | v
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8((acc >> bits) & 0xff))
            }
        }
        return out
    }
}
