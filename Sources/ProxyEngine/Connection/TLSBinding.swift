import ProxyConfig
import ProxySystem

/// A `bind ... ssl` line's certificates as loaded (their PEM bytes kept in memory) and the
/// TLS context its listeners accept with now. `commit ssl cert` builds a new context from
/// the same plan with the committed bytes and publishes it: no file is read again (a
/// chroot may hide them), and connections keep the context they started with.
public final class TLSBinding: @unchecked Sendable {
    let plan: TLSContext.Plan
    /// Each certificate file's bytes, as served now.
    private(set) var certificates: [String: [UInt8]]
    /// The context new connections get.
    let current: Published<TLSContext>

    /// What loads but deserves a word (an expired certificate), as `file:line: warning: ...`.
    public var warnings: [String] { current.value.warnings }
    /// The certificate files it serves, in order.
    public var files: [String] { plan.entries.map(\.file) }

    /// Reads and checks a `bind ... ssl` line's certificates: before the point of no return.
    public static func load(_ bind: BindLine, global: GlobalSettings) throws -> TLSBinding {
        let plan = try TLSContext.plan(bind, global: global)
        let pems = try TLSContext.readCertificates(plan)
        return TLSBinding(plan: plan, certificates: pems, context: try TLSContext.build(plan, pems: pems))
    }

    private init(plan: TLSContext.Plan, certificates: [String: [UInt8]], context: TLSContext) {
        self.plan = plan
        self.certificates = certificates
        current = Published(context)
    }

    /// The context with `file` holding `bytes` instead, built but not yet in use.
    func prepare(_ file: String, _ bytes: [UInt8]) throws -> TLSContext {
        var pems = certificates
        pems[file] = bytes
        return try TLSContext.build(plan, pems: pems)
    }

    /// Puts a context from `prepare` in use: the next connection accepted gets it.
    func publish(_ context: TLSContext, _ file: String, _ bytes: [UInt8]) {
        certificates[file] = bytes
        current.publish(context)
    }
}
