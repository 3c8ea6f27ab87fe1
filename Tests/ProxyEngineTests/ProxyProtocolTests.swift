import Glibc
import Testing
@testable import ProxyConfig
@testable import ProxyEngine
import ProxyRules
import ProxySystem

/// The PROXY protocol codec: v1 and v2 parsed from any split, hostile headers refused with
/// a reason, and what we send parsed back to the same addresses.
@Suite struct ProxyProtocolCodec {
    func parse(_ bytes: [UInt8]) -> ProxyProtocol.Parse {
        bytes.withUnsafeBytes { ProxyProtocol.parse($0) }
    }

    func parse(_ text: String) -> ProxyProtocol.Parse { parse(Array(text.utf8)) }

    func addresses(_ r: ProxyProtocol.Parse) -> String? {
        guard case .complete(let h) = r else { return nil }
        guard let s = h.source, let d = h.destination else { return "local \(h.length)" }
        return "\(ProxyProtocol.text(s)):\(s.port) \(ProxyProtocol.text(d)):\(d.port) \(h.length)"
    }

    @Test func version1() {
        let line = "PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n"
        #expect(addresses(parse(line + "GET / HTTP/1.1\r\n")) == "192.0.2.7:56324 10.0.0.1:443 \(line.utf8.count)")
        #expect(addresses(parse("PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n")) == "2001:db8::7:1 2001:db8::1:65535 44")
        #expect(addresses(parse("PROXY UNKNOWN\r\n")) == "local 15")
        #expect(addresses(parse("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")) == "local 35")
        // Every proper prefix of a valid line is incomplete, never invalid.
        let bytes = Array(line.utf8)
        for n in 0..<bytes.count { #expect(parse(Array(bytes[0..<n])) == .incomplete, "prefix \(n)") }
    }

    @Test func version1Refusals() {
        for bad in ["PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\n", "PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
                    "PROXY TCP6 192.0.2.7 10.0.0.1 1 2\r\n", "PROXY TCP4 192.0.2.7 10.0.0.1 65536 2\r\n",
                    "PROXY TCP4 192.0.2.7 10.0.0.1 01 2\r\n", "PROXY TCP4 192.0.2.7 10.0.0.1 1\r\n",
                    "PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n", "PROXY TCP4 192.0.2.7  10.0.0.1 1 2\r\n",
                    "GET / HTTP/1.1\r\n", "PROXZ", "PROXY TCP4 " + String(repeating: "1", count: 120)] {
            guard case .invalid = parse(bad) else { Issue.record("accepted: \(bad.debugDescription)"); continue }
        }
    }

    @Test func version2() {
        var v4 = ProxyProtocol.signature + [0x21, 0x11, 0x00, 12, 192, 0, 2, 7, 10, 0, 0, 1, 0xDC, 0x04, 0x01, 0xBB]
        #expect(addresses(parse(v4)) == "192.0.2.7:56324 10.0.0.1:443 28")
        for n in 0..<v4.count { #expect(parse(Array(v4[0..<n])) == .incomplete, "prefix \(n)") }
        // TLVs after the addresses are skipped, counted in the length.
        v4[15] = 12 + 7
        v4 += [0x01, 0x00, 0x02, 0x68, 0x32, 0x04, 0x00]
        #expect(addresses(parse(v4 + [0x47])) == "192.0.2.7:56324 10.0.0.1:443 35")
        // LOCAL: the front's own connection (its health checks).
        #expect(addresses(parse(ProxyProtocol.signature + [0x20, 0x00, 0x00, 0x00])) == "local 16")
        let v6 = ProxyProtocol.signature + [0x21, 0x21, 0x00, 36] + [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [7]
            + [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1] + [0, 1, 0xFF, 0xFF]
        #expect(addresses(parse(v6)) == "2001:db8::7:1 2001:db8::1:65535 52")
    }

    @Test func version2Refusals() {
        let s = ProxyProtocol.signature
        for (bad, why) in [(s + [0x11, 0x11, 0, 12] + Array(repeating: 0, count: 12), "version"),
                           (s + [0x22, 0x11, 0, 12] + Array(repeating: 0, count: 12), "command"),
                           (s + [0x21, 0x11, 0, 4] + Array(repeating: 0, count: 4), "short IPv4 block"),
                           (s + [0x21, 0x21, 0, 12] + Array(repeating: 0, count: 12), "short IPv6 block"),
                           (s + [0x21, 0x11, 0xFF, 0xFF], "bogus length"),
                           (s + [0x21, 0x41, 0, 0], "family"),
                           ([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x00], "signature")] {
            guard case .invalid = parse(bad) else { Issue.record("accepted (\(why))"); continue }
        }
    }

    @Test func whatWeSendParsesBack() {
        let pairs: [(SocketAddress, SocketAddress)] = [
            (SocketAddress(ipv4: 0xC000_0207, port: 56324), SocketAddress(ipv4: 0x0A00_0001, port: 443)),
            (SocketAddress(ipv6: [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [7], port: 1),
             SocketAddress(ipv6: [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1], port: 65535)),
        ]
        for version in [ProxyProtocolVersion.v1, .v2] {
            for (s, d) in pairs {
                let bytes = ProxyProtocol.encode(version, source: s, destination: d)
                #expect(addresses(parse(bytes)) == "\(ProxyProtocol.text(s)):\(s.port) \(ProxyProtocol.text(d)):\(d.port) \(bytes.count)")
            }
            #expect(addresses(parse(ProxyProtocol.encode(version, source: nil, destination: nil))) != nil)
        }
        #expect(ProxyProtocol.encode(.v1, source: nil, destination: nil) == Array("PROXY UNKNOWN\r\n".utf8))
        // Mixed families go as IPv6, the IPv4 address mapped.
        let mixed = ProxyProtocol.encode(.v1, source: SocketAddress(ipv4: 0x7F00_0001, port: 1), destination: pairs[1].1)
        #expect(String(decoding: mixed, as: UTF8.self).hasPrefix("PROXY TCP6 "))
        #expect(addresses(parse(mixed)) != nil)
    }
}
