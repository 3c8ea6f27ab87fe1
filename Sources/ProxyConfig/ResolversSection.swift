import ProxyRules
import ProxySystem

/// A `resolvers` section: the name servers that re-resolve servers' names at run time, and
/// how long each kind of answer holds.
public struct ResolversDefinition: Sendable, Equatable {
    public var name: String
    public var location: SourceLocation
    public var nameservers: [Nameserver] = []
    /// `accepted_payload_size`: the EDNS0 size announced (512 when unset: no EDNS0 record).
    public var acceptedPayloadSize = 512
    /// `resolve_retries`: queries sent for one resolution before it counts as failed.
    public var retries = 3
    /// `timeout resolve`: how often a name is asked again; `timeout retry`: the wait for an answer.
    public var resolveInterval: Milliseconds = 1000
    public var retryInterval: Milliseconds = 1000
    /// `hold`: how long the last valid answer stays in use once answers are missing or in error
    /// (`valid` also spaces resolutions of a name that answers well).
    public var holdValid: Milliseconds = 10_000
    public var holdNX: Milliseconds = 30_000
    public var holdRefused: Milliseconds = 30_000
    public var holdTimeout: Milliseconds = 30_000
    public var holdOther: Milliseconds = 30_000
    /// `hold obsolete`: how long an address no longer in the answers stays a server's.
    public var holdObsolete: Milliseconds = 0

    /// One `nameserver` line (or one from `parse-resolv-conf`).
    public struct Nameserver: Sendable, Equatable {
        public var name: String
        public var address: IPAddress
        public var port: Int
        /// `tcp@`: asked over TCP (each query and answer after its two-byte length).
        public var stream = false
    }

    public init(name: String, location: SourceLocation) {
        self.name = name
        self.location = location
    }
}

extension ConfigParser {
    /// `resolvers NAME`.
    func beginResolvers(_ words: [String], at location: SourceLocation) {
        section = .resolvers
        guard words.count >= 2 else {
            error("'resolvers' needs a name, e.g. 'resolvers dns'", at: location)
            sectionName = "resolvers"
            resolversIndex = nil
            return
        }
        let name = words[1]
        sectionName = "resolvers '\(name)'"
        if let other = config.resolvers.first(where: { $0.name == name }) {
            error("resolvers '\(name)' is already declared at \(other.location); rename one of them", at: location)
        }
        if words.count > 2 { error("unexpected '\(words[2])' after the section name; the form is 'resolvers NAME'", at: location) }
        config.resolvers.append(ResolversDefinition(name: name, location: location))
        resolversIndex = config.resolvers.count - 1
    }

    static let resolversKeywords = ["nameserver", "parse-resolv-conf", "accepted_payload_size", "hold", "resolve_retries", "timeout"]

    /// A line inside a `resolvers` section.
    func parseResolversKeyword(_ words: [String], at location: SourceLocation) throws {
        guard let index = resolversIndex else { return }
        var r = config.resolvers[index]
        defer { config.resolvers[index] = r }
        let args = words.dropFirst()
        switch words[0] {
        case "nameserver":
            try Values.expect(args, 2, usage: "nameserver <name> <address>[:port]")
            let name = args.first!
            if r.nameservers.contains(where: { $0.name == name }) {
                throw ConfigError("nameserver '\(name)' is already declared in this section")
            }
            var text = args[args.startIndex + 1]
            for prefix in ["udp@", "udp4@", "udp6@", "ipv4@", "ipv6@"] where text.hasPrefix(prefix) { text = String(text.dropFirst(prefix.count)) }
            var stream = false
            for prefix in ["tcp@", "tcp4@", "tcp6@"] where text.hasPrefix(prefix) {
                text = String(text.dropFirst(prefix.count))
                stream = true
            }
            let (host, portText) = Addresses.splitHostPort(text)
            guard let ip = IPAddress(parsing: host) else {
                throw ConfigError("nameserver '\(name)': '\(host)' is not an IP address; a name server is IP[:PORT], e.g. 10.0.0.2:53")
            }
            let port = try portText.map { try Addresses.port($0, in: text) } ?? 53
            var n = ResolversDefinition.Nameserver(name: name, address: ip, port: port)
            n.stream = stream
            r.nameservers.append(n)
        case "parse-resolv-conf":
            try Values.expect(args, 0, usage: "parse-resolv-conf")
            r.nameservers += try Self.resolvConfNameservers(existing: r.nameservers.map(\.name))
        case "accepted_payload_size":
            try Values.expect(args, 1, usage: "accepted_payload_size <bytes>")
            r.acceptedPayloadSize = try Values.integer(args.first!, for: "accepted_payload_size", in: 512...65535)
        case "resolve_retries":
            try Values.expect(args, 1, usage: "resolve_retries <count>")
            r.retries = try Values.integer(args.first!, for: "resolve_retries", in: 1...1000)
        case "hold":
            try Values.expect(args, 2, usage: "hold <nx|other|refused|timeout|valid|obsolete> <time>")
            let t = try Values.time(args[args.startIndex + 1], for: "hold \(args.first!)")
            switch args.first! {
            case "valid": r.holdValid = t
            case "nx": r.holdNX = t
            case "refused": r.holdRefused = t
            case "timeout": r.holdTimeout = t
            case "other": r.holdOther = t
            case "obsolete": r.holdObsolete = t
            default: throw ConfigError("hold: unknown status '\(args.first!)'; use nx, other, refused, timeout, valid or obsolete")
            }
        case "timeout":
            try Values.expect(args, 2, usage: "timeout <resolve|retry> <time>")
            let t = try Values.time(args[args.startIndex + 1], for: "timeout \(args.first!)")
            guard t > 0 else { throw ConfigError("timeout \(args.first!): the time must be above 0") }
            switch args.first! {
            case "resolve": r.resolveInterval = t
            case "retry": r.retryInterval = t
            default: throw ConfigError("timeout: unknown event '\(args.first!)'; use resolve or retry")
            }
        default:
            var hint = ""
            if let near = Similarity.closest(to: words[0], in: Self.resolversKeywords) { hint = "; did you mean '\(near)'?" }
            throw ConfigError("unknown keyword '\(words[0])' in a resolvers section\(hint)")
        }
    }

    /// `parse-resolv-conf`: the `nameserver` lines of /etc/resolv.conf, named as HAProxy
    /// names them (`resolv.conf.N`).
    static func resolvConfNameservers(existing: [String], path: String = "/etc/resolv.conf") throws -> [ResolversDefinition.Nameserver] {
        let bytes: [UInt8]
        do { bytes = try FileSystem.readFile(path) } catch {
            throw ConfigError("parse-resolv-conf: cannot read \(path); declare the name servers with 'nameserver NAME IP:53'")
        }
        var out: [ResolversDefinition.Nameserver] = []
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let w = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard w.count >= 2, w[0] == "nameserver", let ip = IPAddress(parsing: String(w[1])) else { continue }
            out.append(.init(name: "resolv.conf.\(out.count + 1)", address: ip, port: 53))
        }
        return out.filter { n in !existing.contains(n.name) }
    }

    /// After the files: every section has a name server, and every server's `resolvers` names one.
    func checkResolvers() {
        for r in config.resolvers where r.nameservers.isEmpty {
            error("resolvers '\(r.name)' has no name server; add 'nameserver dns1 IP:53' or 'parse-resolv-conf'", at: r.location)
        }
        for i in config.proxies.indices {
            for s in config.proxies[i].servers {
                guard let name = s.options.resolvers else { continue }
                if config.resolvers.contains(where: { $0.name == name }) { continue }
                // HAProxy makes a 'default' section from /etc/resolv.conf when none is declared.
                if name == "default", let found = try? Self.resolvConfNameservers(existing: []), !found.isEmpty {
                    var d = ResolversDefinition(name: "default", location: s.location)
                    d.nameservers = found
                    config.resolvers.append(d)
                    continue
                }
                var hint = ""
                if let near = Similarity.closest(to: name, in: config.resolvers.map(\.name)) { hint = "; did you mean '\(near)'?" }
                error("server '\(config.proxies[i].name)/\(s.name)': no resolvers section named '\(name)'\(hint)", at: s.location)
            }
        }
    }
}
