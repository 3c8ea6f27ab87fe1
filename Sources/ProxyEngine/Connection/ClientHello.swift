/// What `req.ssl_hello_type` and `req.ssl_sni` read from a client's first bytes: a TLS
/// handshake record not terminated here (SNI routing in TCP mode). Every read is bounds-
/// checked against the bytes that arrived; a record that is not whole says so.
struct ClientHello {
    /// The handshake message type (1: ClientHello), once the record's first 6 bytes came.
    var helloType: Int?
    /// Where the server name is in the bytes, when a whole ClientHello carried one.
    var serverName: Range<Int>?
    /// `req.ssl_ver`: major × 65536 + minor, of the ClientHello (else of the record).
    var version: Int?
    /// The whole first record arrived (or it is no TLS at all): nothing more to wait for.
    var complete: Bool

    init(_ bytes: UnsafeRawBufferPointer) {
        helloType = nil
        serverName = nil
        version = nil
        complete = false
        guard bytes.count >= 1 else { return }
        // A TLS handshake record starts with 22; anything else is not TLS: decided now.
        guard bytes[0] == 22 else { complete = true; return }
        guard bytes.count >= 5 else { return }
        let recordLength = Int(bytes[3]) << 8 | Int(bytes[4])
        if bytes.count >= 6 { helloType = Int(bytes[5]) }
        if helloType == 1, bytes.count >= 11 {
            version = Int(bytes[9]) << 16 | Int(bytes[10])
        } else if bytes.count >= 3 {
            version = Int(bytes[1]) << 16 | Int(bytes[2])
        }
        let end = 5 + recordLength
        guard bytes.count >= end else { return }
        complete = true
        guard helloType == 1 else { return }
        // Handshake header (4), version (2), random (32), then the variable parts.
        var at = 5 + 4 + 2 + 32
        func u8() -> Int? { guard at + 1 <= end else { return nil }; defer { at += 1 }; return Int(bytes[at]) }
        func u16() -> Int? { guard at + 2 <= end else { return nil }; defer { at += 2 }; return Int(bytes[at]) << 8 | Int(bytes[at + 1]) }
        func skip(_ n: Int) -> Bool { guard n >= 0, at + n <= end else { return false }; at += n; return true }
        guard let sessionID = u8(), skip(sessionID), let suites = u16(), skip(suites), let compression = u8(), skip(compression),
              let extensionsLength = u16() else { return }
        let extensionsEnd = min(end, at + extensionsLength)
        while at + 4 <= extensionsEnd {
            guard let type = u16(), let length = u16() else { return }
            let next = at + length
            guard next <= extensionsEnd else { return }
            if type == 0 {
                // server_name: the list's length, then (type 0: host_name, length, name).
                guard let _ = u16(), let nameType = u8(), nameType == 0, let nameLength = u16(), at + nameLength <= next, nameLength > 0 else { return }
                serverName = at..<(at + nameLength)
                return
            }
            at = next
        }
    }
}
