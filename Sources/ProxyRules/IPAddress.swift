import Glibc

/// An IPv4 or IPv6 address, held as 128 bits (IPv4 as its IPv4-mapped IPv6 form).
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64
    public var isV4: Bool

    public init(v4 value: UInt32) {
        high = 0
        low = 0x0000_ffff_0000_0000 | UInt64(value)
        isV4 = true
    }

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
        isV4 = false
    }

    /// Parses dotted IPv4 or any IPv6 text form (inet_pton).
    public init?(parsing text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(v4: UInt32(bigEndian: v4.s_addr))
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        var bytes = [UInt8](repeating: 0, count: 16)
        withUnsafeBytes(of: &v6) { raw in for i in 0..<16 { bytes[i] = raw[i] } }
        self.init(bytes16: bytes)
    }

    /// From 16 network-order bytes; an IPv4-mapped address counts as IPv4.
    public init(bytes16 b: [UInt8]) {
        var h: UInt64 = 0, l: UInt64 = 0
        for i in 0..<8 { h = h << 8 | UInt64(b[i]) }
        for i in 8..<16 { l = l << 8 | UInt64(b[i]) }
        high = h
        low = l
        isV4 = h == 0 && (l >> 32) == 0xffff
    }

    public var v4Value: UInt32 { UInt32(truncatingIfNeeded: low) }

    /// The 16 network-order bytes of the IPv6 form (IPv4 as IPv4-mapped).
    public var bytes16: [UInt8] {
        var b = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 { b[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(i))) }
        for i in 0..<8 { b[8 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(i))) }
        return b
    }

    public var description: String {
        if isV4 {
            let v = v4Value
            return "\(v >> 24).\((v >> 16) & 255).\((v >> 8) & 255).\(v & 255)"
        }
        var addr = in6_addr()
        withUnsafeMutableBytes(of: &addr) { raw in
            for i in 0..<8 { raw[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(i))) }
            for i in 0..<8 { raw[8 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(i))) }
        }
        var buffer = [CChar](repeating: 0, count: 64)
        inet_ntop(AF_INET6, &addr, &buffer, 64)
        return String(cChars: buffer)
    }
}

/// An address with a prefix length: `10.0.0.0/8`, `192.168.1.1`, `::1/128`, `10.0.0.0/255.0.0.0`.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    /// Prefix length in the address's own family (0...32 for IPv4, 0...128 for IPv6).
    public var prefix: Int

    public init(address: IPAddress, prefix: Int) {
        self.address = address
        self.prefix = prefix
    }

    public init?(parsing text: String) {
        var addressText = Substring(text)
        var prefixText: Substring?
        if let slash = text.firstIndex(of: "/") {
            addressText = text[..<slash]
            prefixText = text[text.index(after: slash)...]
        }
        guard let address = IPAddress(parsing: String(addressText)) else { return nil }
        let maxPrefix = address.isV4 ? 32 : 128
        var prefix = maxPrefix
        if let p = prefixText {
            if let n = Int(p), n >= 0, n <= maxPrefix {
                prefix = n
            } else if address.isV4, let mask = IPAddress(parsing: String(p)), mask.isV4 {
                let m = mask.v4Value
                let ones = m.leadingZeroBitCount == 0 ? (~m).leadingZeroBitCount : 0
                guard m == (ones == 0 ? 0 : UInt32.max << (32 - ones)) else { return nil }
                prefix = ones
            } else {
                return nil
            }
        }
        self.address = address
        self.prefix = prefix
    }

    /// True when `ip` is inside this network; IPv4 networks also match IPv4-mapped IPv6.
    @inlinable
    public func contains(_ ip: IPAddress) -> Bool {
        if address.isV4 != ip.isV4 { return false }
        let bits = address.isV4 ? 96 + prefix : prefix
        if bits == 0 { return true }
        if bits <= 64 {
            let mask: UInt64 = bits == 64 ? .max : ~(UInt64.max >> UInt64(bits))
            return (address.high & mask) == (ip.high & mask)
        }
        let lowBits = bits - 64
        let mask: UInt64 = lowBits == 64 ? .max : ~(UInt64.max >> UInt64(lowBits))
        return address.high == ip.high && (address.low & mask) == (ip.low & mask)
    }

    public var description: String {
        prefix == (address.isV4 ? 32 : 128) ? address.description : "\(address)/\(prefix)"
    }
}
