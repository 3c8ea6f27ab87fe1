/// Standard base64 (RFC 4648, `=` padding), decoded without Foundation: what
/// `tls-ticket-keys` files hold.
enum Base64 {
    /// The bytes, or nil when `text` is not base64.
    static func decode<S: Collection>(_ text: S) -> [UInt8]? where S.Element == UInt8 {
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case 65...90: return c - 65
            case 97...122: return c - 71
            case 48...57: return c + 4
            case 43: return 62
            case 47: return 63
            default: return nil
            }
        }
        var chars = Array(text)
        guard chars.count % 4 == 0 else { return nil }
        var padding = 0
        while padding < 2, chars.last == 61 { chars.removeLast(); padding += 1 }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count * 3 / 4)
        var buffer: UInt32 = 0, bits = 0
        for c in chars {
            guard let v = value(c) else { return nil }
            buffer = buffer << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        return out
    }
}
