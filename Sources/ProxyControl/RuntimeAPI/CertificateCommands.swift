import ProxyEngine

/// `show/set/commit/abort/new/del ssl cert`: a `bind ... ssl` certificate replaced with no
/// reload, in HAProxy's transaction form and wording, so its tools (client-native, OPNsense,
/// haproxy-ingress) work unchanged. The payload is a PEM with the certificate, its chain and
/// its key.
extension RuntimeCommands {
    func runCertificateCommand(_ words: [String]) -> String {
        let (plain, payload) = Self.payload(words)
        let store = engine.certificates
        let file = plain.count > 3 ? plain[3] : nil
        switch plain[0] {
        case "show":
            guard let file else { return store.list() }
            return store.describe(file)
        case "set":
            guard let file, let payload, !payload.isEmpty else { return "'set ssl cert expects a filename and a certificate as a payload\n\n" }
            return store.set(file, payload)
        case "commit":
            guard let file else { return "'commit ssl cert' expects a filename\n\n" }
            return store.commit(file)
        case "abort":
            guard let file else { return "'abort ssl cert' expects a filename\n\n" }
            return store.abort(file)
        case "new":
            guard let file else { return "'new ssl cert' expects a filename\n\n" }
            return store.create(file)
        default:
            guard let file else { return "'del ssl cert' expects a certificate name\n\n" }
            return store.delete(file)
        }
    }
}
