import ProxyConfig
import ProxyRules
import ProxySystem
import Glibc

/// The PROXY protocol, versions 1 (text) and 2 (binary), as HAProxy's `proxy-protocol.txt`
/// specifies them: parsing what a trusted front (stunnel, a load balancer, HAProxy) sends
/// before the client's bytes, and writing what we send to a server.
enum ProxyProtocol {
    /// What a header said. No addresses: `LOCAL` (v2) or `UNKNOWN` (v1), a health check or
    /// the front's own connection, which keeps the connection's real addresses.
    struct Header: Equatable {
        var source: SocketAddress?
        var destination: SocketAddress?
        /// Bytes the header takes on the wire, TLVs included.
        var length: Int

        static func == (a: Header, b: Header) -> Bool {
            a.length == b.length && a.source?.description == b.source?.description
                && a.destination?.description == b.destination?.description
                && a.source?.port == b.source?.port && a.destination?.port == b.destination?.port
        }
    }

    enum Parse: Equatable {
        /// The bytes so far are a valid beginning: wait for more.
        case incomplete
        case invalid(String)
        case complete(Header)
    }

    /// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// A v1 line is at most 107 bytes, CRLF included.
    static let maxV1Length = 107
    /// A v2 header's address block and TLVs are read up to this many bytes (the protocol
    /// allows 65,535; real fronts send a few dozen). Longer is refused, never cut.
    static let maxV2Payload = 2048
    /// The most bytes a header can take: what the receiver peeks at.
    static let maxLength = 16 + maxV2Payload

    /// Parses the start of a connection's bytes.
    static func parse(_ p: UnsafeRawBufferPointer) -> Parse {
        if p.isEmpty { return .incomplete }
        if p[0] == UInt8(ascii: "P") { return parseV1(p) }
        if p[0] == signature[0] { return parseV2(p) }
        return .invalid("Received something which does not look like a PROXY protocol header")
    }

    static func parseV1(_ p: UnsafeRawBufferPointer) -> Parse {
        let prefix = Array("PROXY ".utf8)
        for i in 0..<min(prefix.count, p.count) where p[i] != prefix[i] {
            return .invalid("Received something which does not look like a PROXY protocol header")
        }
        // The line ends with CRLF within 107 bytes.
        var end = -1
        var i = 0
        while i < min(p.count, maxV1Length) {
            if p[i] == 0x0A { end = i; break }
            i += 1
        }
        if end < 0 {
            return p.count >= maxV1Length ? .invalid("PROXY protocol v1 line longer than 107 bytes") : .incomplete
        }
        guard end >= 1, p[end - 1] == 0x0D else { return .invalid("PROXY protocol v1 line not ended by CRLF") }
        let line = String(decoding: UnsafeRawBufferPointer(rebasing: p[6..<(end - 1)]), as: UTF8.self)
        let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        guard let proto = fields.first else { return .invalid("PROXY protocol v1 line without a protocol") }
        if proto == "UNKNOWN" { return .complete(Header(source: nil, destination: nil, length: end + 1)) }
        guard proto == "TCP4" || proto == "TCP6" else { return .invalid("PROXY protocol v1: unknown protocol '\(proto)'") }
        guard fields.count == 5 else { return .invalid("PROXY protocol v1: expected 4 fields after \(proto)") }
        // TCP4 takes dotted IPv4 only; TCP6 any IPv6 form (an IPv4-mapped one included).
        let v4 = proto == "TCP4"
        guard let src = IPAddress(parsing: fields[1]), let dst = IPAddress(parsing: fields[2]),
              v4 == !fields[1].contains(":"), v4 == !fields[2].contains(":") else {
            return .invalid("PROXY protocol v1: bad \(proto) address")
        }
        guard let sport = port(fields[3]), let dport = port(fields[4]) else {
            return .invalid("PROXY protocol v1: bad port")
        }
        if v4 { return .complete(Header(source: address(src, sport), destination: address(dst, dport), length: end + 1)) }
        return .complete(Header(source: SocketAddress(ipv6: src.bytes16, port: sport),
                                destination: SocketAddress(ipv6: dst.bytes16, port: dport), length: end + 1))
    }

    /// A decimal port, 0 to 65535, without sign or leading zeros (as the protocol requires).
    static func port(_ s: String) -> UInt16? {
        guard !s.isEmpty, s.count <= 5, s.allSatisfy({ $0.isASCII && $0.isNumber }), s == "0" || !s.hasPrefix("0"),
              let v = Int(s), v <= 65535 else { return nil }
        return UInt16(v)
    }

    static func address(_ ip: IPAddress, _ port: UInt16) -> SocketAddress {
        ip.isV4 ? SocketAddress(ipv4: ip.v4Value, port: port) : SocketAddress(ipv6: ip.bytes16, port: port)
    }

    static func parseV2(_ p: UnsafeRawBufferPointer) -> Parse {
        for i in 0..<min(signature.count, p.count) where p[i] != signature[i] {
            return .invalid("Received something which does not look like a PROXY protocol header")
        }
        guard p.count >= 16 else { return .incomplete }
        let versionCommand = p[12]
        guard versionCommand >> 4 == 2 else { return .invalid("PROXY protocol v2: unsupported version \(versionCommand >> 4)") }
        let command = versionCommand & 0x0F
        guard command <= 1 else { return .invalid("PROXY protocol v2: unknown command \(command)") }
        let familyProtocol = p[13]
        let payload = Int(p[14]) << 8 | Int(p[15])
        guard payload <= maxV2Payload else {
            return .invalid("PROXY protocol v2: header of \(16 + payload) bytes is larger than the \(16 + maxV2Payload) accepted")
        }
        guard p.count >= 16 + payload else { return .incomplete }
        let length = 16 + payload
        // LOCAL: the front's own connection (a health check); addresses are ignored.
        if command == 0 { return .complete(Header(source: nil, destination: nil, length: length)) }
        func be16(_ at: Int) -> UInt16 { UInt16(p[at]) << 8 | UInt16(p[at + 1]) }
        switch familyProtocol {
        case 0x11, 0x12:  // TCP or UDP over IPv4
            guard payload >= 12 else { return .invalid("PROXY protocol v2: length \(payload) too short for IPv4 addresses") }
            func v4(_ at: Int) -> UInt32 { UInt32(p[at]) << 24 | UInt32(p[at + 1]) << 16 | UInt32(p[at + 2]) << 8 | UInt32(p[at + 3]) }
            return .complete(Header(source: SocketAddress(ipv4: v4(16), port: be16(24)),
                                    destination: SocketAddress(ipv4: v4(20), port: be16(26)), length: length))
        case 0x21, 0x22:  // over IPv6
            guard payload >= 36 else { return .invalid("PROXY protocol v2: length \(payload) too short for IPv6 addresses") }
            let src = Array(UnsafeRawBufferPointer(rebasing: p[16..<32]))
            let dst = Array(UnsafeRawBufferPointer(rebasing: p[32..<48]))
            return .complete(Header(source: SocketAddress(ipv6: src, port: be16(48)),
                                    destination: SocketAddress(ipv6: dst, port: be16(50)), length: length))
        case 0x00, 0x31, 0x32:  // unspecified, or UNIX sockets: keep the real addresses
            return .complete(Header(source: nil, destination: nil, length: length))
        default:
            return .invalid("PROXY protocol v2: unknown address family 0x\(String(familyProtocol, radix: 16))")
        }
    }

    /// The header we send a server: the client's address and the address it reached. With no
    /// addresses (a health check, a UNIX client), v1 says `UNKNOWN` and v2 `LOCAL`.
    static func encode(_ version: ProxyProtocolVersion, source: SocketAddress?, destination: SocketAddress?,
                       ssl: ProxyV2SSL = ProxyV2SSL(), client tls: TLSTransport? = nil) -> [UInt8] {
        var out = encodeAddresses(version, source: source, destination: destination)
        guard version == .v2, ssl.enabled else { return out }
        out += sslTLV(ssl, tls)
        let length = out.count - 16
        out[14] = UInt8(length >> 8)
        out[15] = UInt8(length & 0xFF)
        return out
    }

    /// PP2_TYPE_SSL (0x20): client flags (1: over TLS, 2: a certificate on this connection,
    /// 4: one in the session), the certificate's verify result, then the version (0x21), and
    /// on demand the certificate's CN (0x22) and the cipher (0x23).
    static func sslTLV(_ ssl: ProxyV2SSL, _ tls: TLSTransport?) -> [UInt8] {
        var body: [UInt8] = [0, 0, 0, 0, 0]
        func sub(_ type: UInt8, _ value: UnsafeRawBufferPointer) {
            body += [type, UInt8(value.count >> 8), UInt8(value.count & 0xFF)]
            body += value
        }
        if let t = tls, t.established {
            body[0] |= 0x01
            sub(0x21, t.protocolText)
            if let cert = t.clientCertificate {
                body[0] |= 0x04
                if cert.thisHandshake { body[0] |= 0x02 }
                let v = UInt32(truncatingIfNeeded: cert.verify)
                body[1] = UInt8(v >> 24); body[2] = UInt8(v >> 16 & 0xFF); body[3] = UInt8(v >> 8 & 0xFF); body[4] = UInt8(v & 0xFF)
                if ssl.commonName, let cn = cert.commonName { cn.withUnsafeBytes { sub(0x22, $0) } }
            }
            if ssl.cipher { sub(0x23, t.cipherText) }
        }
        return [0x20, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
    }

    static func encodeAddresses(_ version: ProxyProtocolVersion, source: SocketAddress?, destination: SocketAddress?) -> [UInt8] {
        let pair: (SocketAddress, SocketAddress)? = {
            guard let s = source, let d = destination else { return nil }
            let sIP = ip(of: s), dIP = ip(of: d)
            guard let sIP, let dIP else { return nil }
            // Mixed families go as IPv6, the v4 one mapped (as HAProxy does).
            if sIP.isV4 == dIP.isV4 { return (address(sIP, s.port), address(dIP, d.port)) }
            return (SocketAddress(ipv6: sIP.bytes16, port: s.port), SocketAddress(ipv6: dIP.bytes16, port: d.port))
        }()
        switch version {
        case .v1:
            guard let (s, d) = pair else { return Array("PROXY UNKNOWN\r\n".utf8) }
            let v4 = s.family == AF_INET
            let line = "PROXY \(v4 ? "TCP4" : "TCP6") \(text(s)) \(text(d)) \(s.port) \(d.port)\r\n"
            return Array(line.utf8)
        case .v2:
            var out = signature
            guard let (s, d) = pair else {
                out += [0x20, 0x00, 0x00, 0x00]
                return out
            }
            if let s4 = s.ipv4, let d4 = d.ipv4 {
                out += [0x21, 0x11, 0x00, 12]
                for v in [s4, d4] { out += [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
            } else {
                out += [0x21, 0x21, 0x00, 36]
                out += s.addressBytes + d.addressBytes
            }
            for port in [s.port, d.port] { out += [UInt8(port >> 8), UInt8(port & 0xFF)] }
            return out
        }
    }

    /// The address of an IPv4 or IPv6 socket address (an IPv4-mapped one as IPv4); nil for UNIX.
    static func ip(of a: SocketAddress) -> IPAddress? {
        if let v4 = a.ipv4 { return IPAddress(v4: v4) }
        guard a.family == AF_INET6 else { return nil }
        return IPAddress(bytes16: a.addressBytes)
    }

    /// The address as the v1 line writes it: dotted IPv4, or IPv6 text.
    static func text(_ a: SocketAddress) -> String {
        if let v4 = a.ipv4 { return IPAddress(v4: v4).description }
        guard a.family == AF_INET6 else { return "" }
        // IPv6 text even for an IPv4-mapped address (`::ffff:192.0.2.7`), which TCP6 needs.
        var bytes = a.addressBytes
        var buffer = [CChar](repeating: 0, count: 64)
        guard inet_ntop(AF_INET6, &bytes, &buffer, 64) != nil else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
