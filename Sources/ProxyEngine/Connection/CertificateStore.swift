import CProxyTLS
import ProxySystem

/// The certificates `bind ... ssl` lines serve, by file name, and the one runtime-API
/// transaction that replaces one of them without a reload (`set`, `commit`, `abort`, `new`,
/// `del`, `show ssl cert`). A commit builds every affected listener's context first and
/// publishes them only when all built, so a bad certificate changes nothing.
public final class CertificateStore: @unchecked Sendable {
    let bindings: [TLSBinding]
    private struct State {
        /// The file a transaction is open on, and what it holds so far (nil: nothing yet).
        var transaction: (file: String, bytes: [UInt8]?)?
        /// `new ssl cert` stores: held, served by no listener.
        var unused: [String: [UInt8]?] = [:]
    }
    private let state = Locked(State())

    init(listeners: [Listener]) {
        var seen = Set<ObjectIdentifier>()
        bindings = listeners.compactMap(\.tls).filter { seen.insert(ObjectIdentifier($0)).inserted }
    }

    private func users(of file: String) -> [TLSBinding] { bindings.filter { $0.files.contains(file) } }

    private func committed(_ file: String) -> [UInt8]? {
        users(of: file).first.flatMap { $0.certificates[file] }
    }

    /// `show ssl cert`: the open transaction, then every file in name order.
    public func list() -> String {
        let s = state.withLock { $0 }
        var text = ""
        if let t = s.transaction { text += "# transaction\n*\(t.file)\n" }
        let files = Set(bindings.flatMap(\.files)).union(s.unused.keys).sorted()
        text += "# filename\n" + files.map { $0 + "\n" }.joined()
        return text + "\n"
    }

    /// `show ssl cert [*]FILE`: what the certificate holds, as HAProxy prints it.
    public func describe(_ name: String) -> String {
        let pending = name.hasPrefix("*")
        let file = pending ? String(name.dropFirst()) : name
        let s = state.withLock { $0 }
        let bytes: [UInt8]?
        let used: Bool
        if pending {
            guard let t = s.transaction, t.file == file else { return "Can't display the certificate: Not found or the certificate is a bundle!\n\n" }
            bytes = t.bytes
            used = false
        } else if let b = committed(file) {
            bytes = b
            used = true
        } else if let held = s.unused[file] {
            bytes = held
            used = false
        } else {
            return "Can't display the certificate: Not found or the certificate is a bundle!\n\n"
        }
        var text = "Filename: \(name)\nStatus: \(used ? "Used" : "Unused")\n"
        if let bytes, let details = Self.details(bytes) { text += details.text }
        return text + "OCSP Response Key: \n\n"
    }

    /// The certificate's lines, and whether a matching key is there (1), a key that does not
    /// match (-1) or none (0); nil when the bytes hold no certificate.
    static func details(_ bytes: [UInt8]) -> (text: String, key: Int32)? {
        var out = [CChar](repeating: 0, count: 16384)
        var key: Int32 = 0
        let ok = bytes.withUnsafeBytes { cproxy_tls_describe_pem($0.baseAddress, $0.count, &out, out.count, &key) }
        guard ok == 1 else { return nil }
        return (String(decoding: out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self), key)
    }

    /// `set ssl cert FILE <<` PEM: opens (or updates) the transaction on FILE.
    public func set(_ file: String, _ payload: String) -> String {
        let bytes = Array(payload.utf8)
        return state.withLock { s in
            if let t = s.transaction, t.file != file {
                return "The ongoing transaction is about '\(t.file)' but you are trying to set '\(file)'\nCan't update \(file)!\n\n"
            }
            guard committed(file) != nil || s.unused[file] != nil else {
                return "Can't replace a certificate which is not referenced by the configuration!\nCan't update \(file)!\n\n"
            }
            guard Self.details(bytes) != nil else {
                return "unable to load certificate from file '\(file)'.\nCan't load the payload\nCan't update \(file)!\n\n"
            }
            let created = s.transaction == nil
            s.transaction = (file, bytes)
            return "Transaction \(created ? "created" : "updated") for certificate \(file)!\n\n"
        }
    }

    /// `abort ssl cert FILE`.
    public func abort(_ file: String) -> String {
        state.withLock { s in
            guard let t = s.transaction, t.file == file else { return "No ongoing transaction!\n\n" }
            s.transaction = nil
            return "Transaction aborted for certificate '\(file)'!\n\n"
        }
    }

    /// `commit ssl cert FILE`: every listener serving FILE gets a context built with the new
    /// bytes; when one cannot be built, none changes and the transaction stays open.
    public func commit(_ file: String) -> String {
        state.withLock { s in
            guard let t = s.transaction, t.file == file else { return "No ongoing transaction! !\nCan't commit \(file)!\n\n" }
            guard let bytes = t.bytes, let (_, key) = Self.details(bytes), key != 0 else {
                return "The transaction must contain at least a certificate and a private key!\nCan't commit \(file)!\n\n"
            }
            guard key == 1 else {
                return "inconsistencies between private key and certificate loaded '\(file)'.\nCan't commit \(file)!\n\n"
            }
            if s.unused[file] != nil {
                s.unused[file] = bytes
                s.transaction = nil
                return "Committing \(file).\nSuccess!\n\n"
            }
            var built: [(TLSBinding, TLSContext)] = []
            for b in users(of: file) {
                do { built.append((b, try b.prepare(file, bytes))) } catch let e as TLSContext.LoadError {
                    return "\(e.message)\nCan't commit \(file)!\n\n"
                } catch {
                    return "\(error)\nCan't commit \(file)!\n\n"
                }
            }
            for (b, context) in built { b.publish(context, file, bytes) }
            s.transaction = nil
            return "Committing \(file).\nSuccess!\n\n"
        }
    }

    /// `new ssl cert FILE`: an empty store, served by no listener (`add ssl crt-list` is not
    /// built: it stays unused until a reload names it).
    public func create(_ file: String) -> String {
        state.withLock { s in
            if committed(file) != nil || s.unused[file] != nil { return "Certificate '\(file)' already exists!\n\n" }
            s.unused[file] = .some(nil)
            return "New empty certificate store '\(file)'!\n\n"
        }
    }

    /// `del ssl cert FILE`: only an unused store.
    public func delete(_ file: String) -> String {
        state.withLock { s in
            if let t = s.transaction, t.file == file {
                return "Can't remove the certificate: ongoing transaction for the certificate '\(file)'\n\n"
            }
            if committed(file) != nil { return "Can't remove the certificate: certificate '\(file)' in use, can't be deleted!\n\n\n" }
            guard s.unused.removeValue(forKey: file) != nil else { return "certificate '\(file)' doesn't exist!\n\n" }
            return "Certificate '\(file)' deleted!\n\n"
        }
    }
}
