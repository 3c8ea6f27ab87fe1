import ProxyRules

/// DNS messages as the resolvers use them: one question out, its answers read back with every
/// offset checked (a name server's bytes are untrusted input).
enum DNSMessage {
    static let typeA: UInt16 = 1
    static let typeCNAME: UInt16 = 5
    static let typeAAAA: UInt16 = 28
    static let typeSRV: UInt16 = 33
    static let typeOPT: UInt16 = 41

    /// The wire form of `name` (labels of 1 to 63 bytes, 255 in all), or nil when it cannot be one.
    static func encodeName(_ name: String) -> [UInt8]? {
        let trimmed = name.hasSuffix(".") ? String(name.dropLast()) : name
        var out: [UInt8] = []
        for label in trimmed.split(separator: ".", omittingEmptySubsequences: false) {
            let bytes = Array(label.lowercased().utf8)
            guard (1...63).contains(bytes.count) else { return nil }
            out.append(UInt8(bytes.count))
            out += bytes
        }
        out.append(0)
        return out.count <= 255 ? out : nil
    }

    /// A recursive query for `name` (its wire form) of `type`; an EDNS0 record announces
    /// `payloadSize` when it is above 512.
    static func query(id: UInt16, name: [UInt8], type: UInt16, payloadSize: Int) -> [UInt8] {
        let edns = payloadSize > 512
        var out: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xff), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, edns ? 1 : 0]
        out += name
        out += [UInt8(type >> 8), UInt8(type & 0xff), 0, 1]
        if edns { out += [0, UInt8(typeOPT >> 8), UInt8(typeOPT & 0xff), UInt8(payloadSize >> 8), UInt8(payloadSize & 0xff), 0, 0, 0, 0, 0, 0] }
        return out
    }

    /// An SRV record and, when the additional section gave it, its target's address.
    struct Service: Equatable {
        var target: String
        var port: Int
        var priority: Int
        var weight: Int
        var address: IPAddress?
        /// Who gave the address when the target was asked for by name (`dns/ns1`); nil when
        /// it came with the SRV answer.
        var learntFrom: String?
    }

    /// What a response said.
    struct Response {
        /// The response code: 0 no error, 3 no such name, 5 refused...
        var rcode: Int
        var truncated: Bool
        /// A or AAAA records of the name asked (through CNAMEs), in answer order.
        var addresses: [IPAddress] = []
        var services: [Service] = []
    }

    /// Reads a response to the query `id` for `name` of `type`; nil when the bytes are not
    /// one (another ID, another question, not a response, or malformed anywhere).
    static func parse(_ b: [UInt8], id: UInt16, name: [UInt8], type: UInt16) -> Response? {
        guard b.count >= 12, UInt16(b[0]) << 8 | UInt16(b[1]) == id else { return nil }
        guard b[2] & 0x80 != 0, (b[2] >> 3) & 0x0f == 0 else { return nil }   // QR set, opcode QUERY
        let qd = Int(b[4]) << 8 | Int(b[5]), an = Int(b[6]) << 8 | Int(b[7])
        let ns = Int(b[8]) << 8 | Int(b[9]), ar = Int(b[10]) << 8 | Int(b[11])
        guard qd == 1 else { return nil }
        var response = Response(rcode: Int(b[3] & 0x0f), truncated: b[2] & 0x02 != 0)
        var at = 12
        guard let (qname, afterName) = readName(b, at), afterName + 4 <= b.count else { return nil }
        guard let asked = decodeWire(name), qname == asked else { return nil }
        guard UInt16(b[afterName]) << 8 | UInt16(b[afterName + 1]) == type, b[afterName + 2] == 0, b[afterName + 3] == 1 else { return nil }
        at = afterName + 4
        var aliases: Set<String> = [asked]
        var additional: [String: IPAddress] = [:]
        for section in 0..<3 {
            let count = section == 0 ? an : section == 1 ? ns : ar
            for _ in 0..<count {
                // The usual owner is a pointer to the question's name (offset 12), checked
                // above to be the name asked: no need to read it again.
                let owner: String, next: Int
                if at + 1 < b.count, b[at] == 0xc0, b[at + 1] == 12 {
                    owner = asked
                    next = at + 2
                } else {
                    guard let (o, n) = readName(b, at) else { return nil }
                    owner = o
                    next = n
                }
                guard next + 10 <= b.count else { return nil }
                let rtype = UInt16(b[next]) << 8 | UInt16(b[next + 1])
                let rclass = UInt16(b[next + 2]) << 8 | UInt16(b[next + 3])
                let length = Int(b[next + 8]) << 8 | Int(b[next + 9])
                let data = next + 10
                guard data + length <= b.count else { return nil }
                at = data + length
                guard rclass == 1 || rtype == typeOPT else { continue }
                switch (section, rtype) {
                case (0, typeCNAME) where aliases.contains(owner):
                    guard let (target, _) = readName(b, data) else { return nil }
                    aliases.insert(target)
                case (0, typeA) where (owner == asked || aliases.contains(owner)) && type == typeA && length == 4:
                    response.addresses.append(IPAddress(v4: UInt32(b[data]) << 24 | UInt32(b[data + 1]) << 16 | UInt32(b[data + 2]) << 8 | UInt32(b[data + 3])))
                case (0, typeAAAA) where (owner == asked || aliases.contains(owner)) && type == typeAAAA && length == 16:
                    response.addresses.append(IPAddress(bytes16: Array(b[data..<data + 16])))
                case (0, typeSRV) where owner == asked && type == typeSRV && length >= 7:
                    guard let (target, _) = readName(b, data + 6) else { return nil }
                    response.services.append(Service(target: target, port: Int(b[data + 4]) << 8 | Int(b[data + 5]),
                                                     priority: Int(b[data]) << 8 | Int(b[data + 1]),
                                                     weight: Int(b[data + 2]) << 8 | Int(b[data + 3]), address: nil))
                case (2, typeA) where length == 4:
                    additional[owner] = IPAddress(v4: UInt32(b[data]) << 24 | UInt32(b[data + 1]) << 16 | UInt32(b[data + 2]) << 8 | UInt32(b[data + 3]))
                case (2, typeAAAA) where length == 16:
                    additional[owner] = additional[owner] ?? IPAddress(bytes16: Array(b[data..<data + 16]))
                default:
                    break
                }
            }
        }
        for i in response.services.indices { response.services[i].address = additional[response.services[i].target] }
        return response
    }

    /// The name at `start` (lowercased, dotted, without the final dot) and the offset after it
    /// there; compression pointers are followed at most 32 times and only backwards.
    static func readName(_ b: [UInt8], _ start: Int) -> (String, Int)? {
        var labels: [String] = []
        var at = start
        var end: Int?
        var jumps = 0
        var total = 0
        while true {
            guard at < b.count else { return nil }
            let len = Int(b[at])
            if len == 0 {
                return (labels.joined(separator: "."), end ?? at + 1)
            }
            if len & 0xc0 == 0xc0 {
                guard at + 1 < b.count else { return nil }
                let target = (len & 0x3f) << 8 | Int(b[at + 1])
                guard target < at, jumps < 32 else { return nil }
                if end == nil { end = at + 2 }
                jumps += 1
                at = target
                continue
            }
            guard len <= 63, at + 1 + len <= b.count else { return nil }
            total += len + 1
            guard total <= 255 else { return nil }
            labels.append(String(decoding: b[(at + 1)..<(at + 1 + len)], as: UTF8.self).lowercased())
            at += 1 + len
        }
    }

    /// Our own wire name back to its dotted form.
    static func decodeWire(_ name: [UInt8]) -> String? { readName(name, 0)?.0 }
}
