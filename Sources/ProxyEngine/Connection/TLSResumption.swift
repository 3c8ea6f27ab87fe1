import CProxyTLS
import ProxyConfig
import ProxyRules

/// TLS resumption across reloads: the process's ticket keys (rotated every
/// `tune.ssl.lifetime`) and its session-ID cache (`tune.ssl.cachesize`), written as handover
/// lines by the old process and adopted by the new one before it serves, so a client that
/// saved a session resumes after a reload, by ticket or by session ID.
public enum TLSResumption {
    /// Raw bytes of sessions handed over at most (the handover frame holds 16 MB of text).
    static let sessionBudget = 4 << 20

    /// Sizes the cache and the rotation; before any context is made.
    public static func configure(_ global: GlobalSettings) {
        cproxy_tls_configure_resumption(global.tlsCacheSize, global.tlsLifetime)
    }

    /// `tls-ticket-keys HEX` and `tls-sessions COUNT HEX`: this process's state.
    public static func stateLines() -> [String] {
        var lines: [String] = []
        var keys = [UInt8](repeating: 0, count: 88 * 4)
        let k = cproxy_tls_export_ticket_keys(&keys, keys.count)
        if k > 0 { lines.append("tls-ticket-keys " + hex(keys[0..<k])) }
        // No buffer for a process that cached nothing (most have no TLS at all).
        guard cproxy_tls_cached_sessions() > 0 else { return lines }
        var sessions = [UInt8](repeating: 0, count: sessionBudget)
        var count = 0
        let n = cproxy_tls_export_sessions(&sessions, sessions.count, &count)
        if n > 0 { lines.append("tls-sessions \(count) " + hex(sessions[0..<n])) }
        return lines
    }

    /// Takes an old process's lines: its ticket keys replace ours, its sessions join the
    /// cache. Returns what was adopted, for the start-up's message.
    @discardableResult
    public static func adopt(_ lines: [String]) -> (keys: Int, sessions: Int) {
        var keys = 0, sessions = 0
        for line in lines {
            let w = line.split(separator: " ")
            if w.count == 2, w[0] == "tls-ticket-keys", let bytes = unhex(w[1]) {
                if cproxy_tls_import_ticket_keys(bytes, bytes.count) == 1 { keys = bytes.count / 88 }
            } else if w.count == 3, w[0] == "tls-sessions", let bytes = unhex(w[2]) {
                let n = cproxy_tls_import_sessions(bytes, bytes.count)
                if n > 0 { sessions += n }
            }
        }
        return (keys, sessions)
    }

    static func hex(_ bytes: ArraySlice<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    static func unhex(_ text: Substring) -> [UInt8]? { Hexadecimal.bytes(text.utf8) }
}
