/// Hexadecimal text and bytes: `bin(...)`, `send-binary`, `expect binary`, session IDs.
public enum Hexadecimal {
    /// One digit's value (either case); nil for any other byte.
    @inline(__always)
    public static func digit(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }

    /// The bytes an even count of hexadecimal digits spell; nil for anything else.
    public static func bytes<C: Collection>(_ digits: C) -> [UInt8]? where C.Element == UInt8 {
        guard digits.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(digits.count / 2)
        var i = digits.startIndex
        while i != digits.endIndex {
            let j = digits.index(after: i)
            guard let h = digit(digits[i]), let l = digit(digits[j]) else { return nil }
            out.append(h << 4 | l)
            i = digits.index(after: j)
        }
        return out
    }
}
