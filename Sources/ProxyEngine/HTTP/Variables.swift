import ProxyRules

extension RuntimeModel {
    /// Sets `proc.NAME` for every loop (nil: unsets it), when `conditions` hold; a `proc.`
    /// variable exists from the load on, as HAProxy makes it then.
    func setProcessVariable(_ name: String, _ value: SampleValue?, if conditions: VariableConditions = []) {
        processVariables.withLock { table in
            // A `proc.` variable exists from the load on.
            if let v = value, !conditions.isEmpty, !conditions.allow(current: table[name], exists: true, new: v) { return }
            table[name] = value
        }
    }
}

/// The variables an HTTP connection holds, by scope: `sess.` for the connection's life,
/// `txn.` for one transaction, `req.` while its request is processed and `res.` while its
/// response is (as HAProxy's scopes live; the loader refuses a `req.` variable in a response
/// rule, so one is never read there). `proc.` ones are the model's, shared by every loop.
/// Each table is made on its first use, so a connection without variables pays nothing.
/// The request's method travels with them: copied before the request head leaves the
/// buffer, for response rules that read `method`.
struct SessionVariables {
    var capturedMethod: [UInt8] = []
    private var session: VariableTable?
    private var transaction: VariableTable?
    private var request: VariableTable?
    private var response: VariableTable?

    @inline(__always)
    func value(_ scope: VariableScope, _ name: String) -> SampleValue? {
        switch scope {
        case .sess: return session?[name]
        case .txn: return transaction?[name]
        case .req: return request?[name]
        case .res: return response?[name]
        case .proc, .check: return nil
        }
    }

    mutating func set(_ scope: VariableScope, _ name: String, _ value: SampleValue?) {
        switch scope {
        case .sess: session = Self.updated(session, name, value)
        case .txn: transaction = Self.updated(transaction, name, value)
        case .req: request = Self.updated(request, name, value)
        case .res: response = Self.updated(response, name, value)
        case .proc, .check: break
        }
    }

    /// `set-var(NAME,COND...)`, `unset-var(NAME)` (nil) of any scope: `proc.` ones go to
    /// the model; the others are set only when the conditions hold (a variable exists here
    /// while it has a value).
    mutating func assign(_ scope: VariableScope, _ name: String, _ value: SampleValue?, if conditions: VariableConditions = [], model: RuntimeModel) {
        if scope == .proc { model.setProcessVariable(name, value, if: conditions); return }
        if conditions.isEmpty || conditions.allow(current: self.value(scope, name), new: value) { set(scope, name, value) }
    }

    private static func updated(_ table: VariableTable?, _ name: String, _ value: SampleValue?) -> VariableTable? {
        var t = table ?? [:]
        t[name] = value
        return t
    }

    /// The transaction is over: its `txn.`, `req.` and `res.` variables end.
    mutating func transactionDone() {
        if !capturedMethod.isEmpty { capturedMethod = [] }
        if transaction != nil { transaction = nil }
        if request != nil { request = nil }
        if response != nil { response = nil }
    }
}
