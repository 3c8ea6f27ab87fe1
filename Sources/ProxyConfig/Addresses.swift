import ProxyRules
import ProxySystem

/// Parses listening and server addresses in HAProxy's forms.
enum Addresses {
    /// Splits `host:port` at the last colon, honouring `[v6]:port`.
    static func splitHostPort(_ text: String) -> (String, String?) {
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.hasPrefix(":") { return (host, String(rest.dropFirst())) }
            return (host, rest.isEmpty ? nil : String(rest))
        }
        guard let colon = text.lastIndex(of: ":") else { return (text, nil) }
        return (String(text[..<colon]), String(text[text.index(after: colon)...]))
    }

    static func port(_ text: String, in whole: String) throws -> Int {
        guard let p = Int(text) else {
            throw ConfigError("invalid port '\(text)' in '\(whole)'; a port is 1 to 65535")
        }
        guard (1...65535).contains(p) else {
            throw ConfigError("port \(p) in '\(whole)' is out of range; a port is 1 to 65535")
        }
        return p
    }

    /// A `bind` address: `[ipv4@|ipv6@]HOST:PORT[-PORT]`, `*:80`, `:80`, `unix@path`, `/path`,
    /// `abns@name`, `fd@N`. A port range gives one address per port.
    static func listen(_ text: String, resolving: Bool = true, descriptorNames: String? = nil) throws -> [ListenAddress] {
        var rest = Substring(text)
        var forced: AddressFamily?
        if rest.hasPrefix("unix@") { return [.unix(path: try nonEmpty(String(rest.dropFirst(5)), text))] }
        if rest.hasPrefix("/") { return [.unix(path: String(rest))] }
        if rest.hasPrefix("abns@") { return [.abstract(name: try nonEmpty(String(rest.dropFirst(5)), text))] }
        if rest.hasPrefix("fd@") {
            let word = rest.dropFirst(3)
            if let fd = Int32(word), fd >= 0 { return [.inheritedFD(fd)] }
            guard !word.isEmpty else { throw ConfigError("'\(text)': fd@ needs a descriptor number or a name, e.g. fd@3 or fd@web") }
            // systemd's socket activation: FileDescriptorName= of the .socket unit, listed in
            // LISTEN_FDNAMES in the order of the descriptors from 3 on.
            guard let names = descriptorNames else {
                throw ConfigError("'\(text)': no LISTEN_FDNAMES in the environment to find '\(word)' in; names come from systemd's socket activation (run with -W so every reload sees them), or use fd@3")
            }
            let list = names.split(separator: ":", omittingEmptySubsequences: false)
            guard let i = list.firstIndex(where: { $0 == word }) else {
                throw ConfigError("'\(text)': LISTEN_FDNAMES has no '\(word)' (it has \(list.map { "'\($0)'" }.joined(separator: ", "))); set FileDescriptorName= in the .socket unit")
            }
            return [.inheritedFD(Int32(3 + i))]
        }
        if rest.hasPrefix("ipv4@") { forced = .ipv4; rest = rest.dropFirst(5) }
        else if rest.hasPrefix("ipv6@") { forced = .ipv6; rest = rest.dropFirst(5) }
        else if let at = rest.firstIndex(of: "@") {
            throw ConfigError("unknown address prefix '\(rest[..<at])@' in '\(text)'; use ipv4@, ipv6@, unix@, abns@ or fd@")
        }
        let (host, portText) = splitHostPort(String(rest))
        guard let portText, !portText.isEmpty else {
            throw ConfigError("'\(text)' has no port; a bind address is HOST:PORT, e.g. 127.0.0.1:8080 or :80")
        }
        var ports: [Int]
        if let dash = portText.firstIndex(of: "-") {
            let low = try port(String(portText[..<dash]), in: text)
            let high = try port(String(portText[portText.index(after: dash)...]), in: text)
            guard low <= high else { throw ConfigError("port range '\(portText)' in '\(text)' is empty") }
            guard high - low < 4096 else { throw ConfigError("port range '\(portText)' in '\(text)' is too wide (at most 4096 ports)") }
            ports = Array(low...high)
        } else {
            ports = [try port(portText, in: text)]
        }
        var family: AddressFamily
        var address: IPAddress?
        switch host {
        case "", "*", "0.0.0.0":
            family = forced ?? .ipv4
        case "::":
            family = .ipv6
        default:
            if let ip = IPAddress(parsing: host) {
                address = ip
                family = ip.isV4 ? .ipv4 : .ipv6
            } else if !resolving {
                family = forced ?? .ipv4
            } else if let ip = resolve(host, family: forced) {
                address = ip
                family = ip.isV4 ? .ipv4 : .ipv6
            } else {
                throw ConfigError("cannot resolve '\(host)' in '\(text)'; use an IP address or a name the resolver knows")
            }
        }
        if let f = forced, f != family {
            throw ConfigError("'\(text)': the address is not \(f == .ipv4 ? "IPv4" : "IPv6")")
        }
        if address == nil, family == .ipv6 { address = nil }
        return ports.map { .inet(family: family, address: address, port: $0) }
    }

    /// A `server` address: `HOST[:PORT]`, `HOST:+N`, `[v6]:PORT`, `unix@path`, `/path`.
    static func server(_ text: String, resolving: Bool = true) throws -> ServerAddress {
        if text.hasPrefix("unix@") { return ServerAddress(host: .unix(try nonEmpty(String(text.dropFirst(5)), text)), port: nil) }
        if text.hasPrefix("/") { return ServerAddress(host: .unix(text), port: nil) }
        var rest = Substring(text)
        if rest.hasPrefix("ipv4@") || rest.hasPrefix("ipv6@") { rest = rest.dropFirst(5) }
        var (host, portText) = splitHostPort(String(rest))
        // A bare IPv6 address without brackets and without a port ("::1") reads as a host.
        if portText != nil, IPAddress(parsing: String(rest)) != nil, !rest.hasPrefix("["), rest.filter({ $0 == ":" }).count > 1 {
            host = String(rest)
            portText = nil
        }
        guard !host.isEmpty else { throw ConfigError("server address '\(text)' has no host") }
        var port: Int?
        var offset: Int?
        if let p = portText, !p.isEmpty {
            if p.hasPrefix("+") || p.hasPrefix("-") {
                guard let n = Int(p), abs(n) < 65536 else { throw ConfigError("invalid port offset '\(p)' in '\(text)'") }
                offset = n
            } else if p == "0" {
                port = nil
            } else {
                port = try self.port(p, in: text)
            }
        }
        if let ip = IPAddress(parsing: host) { return ServerAddress(host: .ip(ip), port: port, portOffset: offset) }
        let valid = host.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_" }
        guard valid else { throw ConfigError("invalid server address '\(text)'") }
        // Resolved now, once: nothing resolves names after load.
        let ip = resolving ? resolve(host, family: nil) : nil
        return ServerAddress(host: .name(host), port: port, portOffset: offset, resolved: ip)
    }

    private static func nonEmpty(_ s: String, _ whole: String) throws -> String {
        if s.isEmpty { throw ConfigError("'\(whole)' needs a path or name after '@'") }
        return s
    }

    /// Resolves a host name at load (getaddrinfo), as HAProxy does for addresses.
    static func resolve(_ host: String, family: AddressFamily?) -> IPAddress? {
        let bytes = NameResolver.firstAddress(of: host, family: family == .ipv4 ? .ipv4 : family == .ipv6 ? .ipv6 : nil)
        switch bytes?.count {
        case 4?: return IPAddress(v4: UInt32(bytes![0]) << 24 | UInt32(bytes![1]) << 16 | UInt32(bytes![2]) << 8 | UInt32(bytes![3]))
        case 16?: return IPAddress(bytes16: bytes!)
        default: return nil
        }
    }
}
