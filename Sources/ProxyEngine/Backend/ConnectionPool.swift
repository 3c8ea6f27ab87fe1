import Synchronization

/// One loop's idle server connections, by server: a response that leaves its connection
/// reusable puts it here, and the next request to that server takes it (`http-reuse`).
final class ConnectionPool {
    let model: RuntimeModel
    private var idle: [ObjectIdentifier: [Connection]] = [:]
    let maxIdlePerServer = 64

    init(model: RuntimeModel) {
        self.model = model
    }

    /// An idle connection to `server`, if one is pooled (a TLS one opened with `serverName`).
    @inline(__always)
    func take(_ server: Server, serverName: String? = nil) -> Connection? {
        let key = ObjectIdentifier(server)
        if let tls = server.tls, tls.sendsServerName {
            guard let i = idle[key]?.lastIndex(where: { $0.serverName == serverName }) else { return nil }
            let c = idle[key]!.remove(at: i)
            if c.eof || c.closed || c.hangup { c.close(); return nil }
            return c
        }
        // Popped in place: copying the list out of the dictionary would copy its storage.
        while let c = idle[key]?.popLast() {
            if c.eof || c.closed || c.hangup { c.close(); continue }
            return c
        }
        return nil
    }

    /// Pools a connection for reuse, or closes it when the pool is full. It sits between
    /// two messages, so a full pool closes it with a reset, as HAProxy does: the server is
    /// spared a lingering close and a TIME_WAIT.
    func release(_ c: Connection) {
        c.owner = nil
        guard let server = c.server else { c.close(); return }
        let key = ObjectIdentifier(server)
        // A server reached on the client's port is not pooled: the next client's port may differ.
        // Nor is one opened with a PROXY header: it names its client, so it is private to it
        // (HAProxy makes such connections private too).
        if c.eof || c.closed || server.followsClientPort || server.definition.options.sendProxy != nil { c.close(); return }
        if !Self.mayReuse(c, server) { c.close(abort: true); return }
        if model.stopping.load(ordering: .relaxed) || (idle[key]?.count ?? 0) >= maxIdlePerServer {
            c.close(abort: true)
            return
        }
        idle[key, default: []].append(c)
    }

    /// `max-reuse`: whether connection `c` to `server` may carry one more request.
    @inline(__always)
    static func mayReuse(_ c: Connection, _ server: Server) -> Bool {
        let limit = server.definition.options.maxReuse
        return limit < 0 || c.requests <= limit
    }

    /// Takes a connection out of the pool and closes it.
    func discard(_ c: Connection) {
        if let server = c.server { idle[ObjectIdentifier(server)]?.removeAll { $0 === c } }
        c.close()
    }

    /// Closes every pooled connection (a stop).
    func closeAll() {
        for (_, list) in idle { for c in list { c.close() } }
        idle.removeAll()
    }
}
