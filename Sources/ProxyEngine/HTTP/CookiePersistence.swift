import ProxyConfig
import ProxyHTTP
import ProxyRules
import ProxySystem
import Glibc

/// Cookie persistence (`cookie` in a backend): reading the client's cookie, and writing,
/// rewriting or prefixing the server's.
extension HTTPTransaction {
    /// Reads the persistence cookie: picks its server, and for `indirect` or `prefix`,
    /// takes it (or its prefix) out of the request before the server sees it.
    func applyPersistence(_ cookie: CookieSettings, _ backend: Backend) {
        var value: String?
        _ = MessageView(bytes: requestBytes, head: request).visitCookie(cookie.name, inResponse: false) { sample in
            if case .bytes(let p) = sample { value = String(decoding: p, as: UTF8.self) }
            return true
        }
        cookieFirstSeen = nil
        guard var v = value else { return }
        if cookie.mode == .prefix, let tilde = v.firstIndex(of: "~") { v = String(v[..<tilde]) }
        if cookie.maxIdle != nil || cookie.maxLife != nil {
            // SERVER|last-seen|first-seen (wall seconds): an idle or too old cookie is ignored.
            let parts = v.split(separator: "|", omittingEmptySubsequences: false)
            v = String(parts[0])
            let now = Clock.wallClock().seconds
            let last = parts.count > 1 ? Int(parts[1]) : nil
            let first = parts.count > 2 ? Int(parts[2]) : nil
            if let maxIdle = cookie.maxIdle, let last, now - last > maxIdle / 1000 { v = "" }
            if let maxLife = cookie.maxLife, let first, now - first > maxLife / 1000 { v = "" }
            if !v.isEmpty { cookieFirstSeen = first }
        }
        if let s = backend.servers.first(where: { $0.definition.options.cookie == v }) {
            persistServer = s
            cookieMatched = true
        }
        let strip = (cookie.indirect && cookie.mode == .insert) || cookie.mode == .prefix
        guard strip else { return }
        var list = editableRequestHeaders()
        list = list.compactMap { h in
            guard String(decoding: h.name, as: UTF8.self).lowercased() == "cookie" else { return h }
            let items = String(decoding: h.value, as: UTF8.self).split(separator: ";").map { String($0).trimmingBlanks() }
            let kept = items.compactMap { item -> String? in
                guard item.hasPrefix(cookie.name + "=") else { return item }
                if cookie.mode == .prefix, let tilde = item.firstIndex(of: "~") {
                    return cookie.name + "=" + String(item[item.index(after: tilde)...])
                }
                return nil
            }
            return kept.isEmpty ? nil : (h.name, Array(kept.joined(separator: "; ").utf8))
        }
        rewrittenHeaders = list
    }

    /// `rewrite` replaces the value of the server's Set-Cookie; `prefix` prefixes it.
    func rewriteServerCookie(_ cookie: CookieSettings, _ serverValue: String) {
        var list = editableResponseHeaders()
        var changed = false
        list = list.map { h in
            guard String(decoding: h.name, as: UTF8.self).lowercased() == "set-cookie" else { return h }
            let text = String(decoding: h.value, as: UTF8.self)
            guard text.hasPrefix(cookie.name + "=") else { return h }
            changed = true
            let rest = text.dropFirst(cookie.name.count + 1)
            let valueEnd = rest.firstIndex(of: ";") ?? rest.endIndex
            let original = rest[..<valueEnd]
            let newValue = cookie.mode == .rewrite ? serverValue : serverValue + "~" + original
            return (h.name, Array((cookie.name + "=" + newValue + rest[valueEnd...]).utf8))
        }
        if changed { responseEdits = list }
    }
}

extension HTTPTransaction {
    /// Whether `insert` sets the cookie on this response: not when the client already has
    /// the right one (unless it is dated and needs refreshing), with `postonly` only after a
    /// POST, and with `preserve` not when the server set the cookie itself.
    func shouldInsertCookie(_ cookie: CookieSettings, _ server: Server, _ p: UnsafeRawBufferPointer) -> Bool {
        let dated = cookie.maxIdle != nil || cookie.maxLife != nil
        // Only `indirect` spares a client that already has the right cookie; without it the
        // cookie goes out on every response, as in HAProxy.
        if cookie.indirect && cookieMatched && persistServer === server && !dated { return false }
        if cookie.postOnly && !requestWasPOST { return false }
        if cookie.preserve {
            let prefix = Array((cookie.name + "=").utf8)
            for h in response.headers where HTTPParser.equalsLower(p, h.name, "set-cookie") {
                let v = p[Int(h.value.start)..<Int(h.value.end)]
                if v.starts(with: prefix) { return false }
            }
        }
        return true
    }
}
