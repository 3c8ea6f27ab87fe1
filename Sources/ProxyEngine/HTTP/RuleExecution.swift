import ProxyConfig
import ProxyHTTP
import ProxyRules
import Glibc

/// What sets or clears a variable: an expression, a format, or nothing (unset).
enum VariableAssignment {
    case expression(SampleExpression, VariableConditions)
    case format(LogFormat, VariableConditions)
    case unset
}

/// An `http-request` rule ready to run: formats compiled, static responses pre-built.
struct CompiledRequestRule {
    enum Action {
        case allow
        /// `deny` and `return`: a response built at load, or one rendered each time.
        case respond([UInt8], status: Int, deny: Bool)
        case respondDynamic(DynamicResponse, deny: Bool)
        case tarpit(DynamicResponse)
        case redirect(Redirect, LogFormat)
        case header(HeaderEdit)
        case setPath(LogFormat)
        case replacePath(RegexReplacement)
        case setURI(LogFormat)
        case replaceURI(RegexReplacement)
        case variable(VariableScope, String, VariableAssignment)
        case service(LocalServiceName)
    }
    let guardState: RuleGuard
    let action: Action

    init(_ rule: Rule<HTTPRequestAction>, errorPages: [Int: [UInt8]]) {
        guardState = rule.guardState
        switch rule.action {
        case .allow: action = .allow
        case .tarpit(let r): action = .tarpit(DynamicResponse(r))
        case .deny(let r), .returnResponse(let r):
            let deny: Bool = { if case .deny = rule.action { return true }; return false }()
            action = Self.isStatic(r) ? .respond(Self.build(r, errorPages: errorPages), status: r.status, deny: deny) : .respondDynamic(DynamicResponse(r), deny: deny)
        case .redirect(let r): action = .redirect(r, LogFormat(r.target))
        case .setHeader(let h): action = .header(.set(Array(h.name.utf8), LogFormat(h.value)))
        case .addHeader(let h): action = .header(.add(Array(h.name.utf8), LogFormat(h.value)))
        case .deleteHeader(let m): action = .header(.delete(m))
        case .replaceHeader(let n, let r): action = .header(.replace(n.lowercased(), r, wholeValue: true))
        case .replaceValue(let n, let r): action = .header(.replace(n.lowercased(), r, wholeValue: false))
        case .setPath(let f): action = .setPath(LogFormat(f))
        case .replacePath(let r): action = .replacePath(r)
        case .setURI(let f): action = .setURI(LogFormat(f))
        case .replaceURI(let r): action = .replaceURI(r)
        case .setVariable(let scope, let name, let e, let c): action = .variable(scope, name, .expression(e, c))
        case .setVariableFormat(let scope, let name, let f, let c): action = .variable(scope, name, .format(LogFormat(f), c))
        case .unsetVariable(let scope, let name): action = .variable(scope, name, .unset)
        case .useService(let name): action = .service(name)
        }
    }

    /// A response with nothing rendered per request is built once, at load.
    static func isStatic(_ r: LocalResponse) -> Bool {
        guard r.headers.allSatisfy({ LogFormat($0.value).isConstant }) else { return false }
        switch r.body {
        case .format(let f), .formatFile(_, let f): return LogFormat(f).isConstant
        default: return true
        }
    }

    /// A complete response for `return`, `deny` and `tarpit`.
    static func build(_ r: LocalResponse, errorPages: [Int: [UInt8]], render: (String) -> [UInt8] = { Array($0.utf8) }) -> [UInt8] {
        switch r.body {
        case .rawResponse(_, let bytes): return bytes
        case .defaultErrorFile: return errorPages[r.status] ?? HTTPStatusText.errorPage(r.status)
        case .none where r.contentType == nil && r.headers.isEmpty && r.status >= 400:
            return errorPages[r.status] ?? HTTPStatusText.errorPage(r.status)
        default: break
        }
        var body: [UInt8] = []
        switch r.body {
        case .text(let t): body = Array(t.utf8)
        case .format(let f), .formatFile(_, let f): body = render(f)
        case .file(_, let bytes): body = bytes
        default: break
        }
        var head = "HTTP/1.1 \(r.status) \(HTTPStatusText.reason(r.status))\r\n"
        if let ct = r.contentType { head += "content-type: \(ct)\r\n" }
        for h in r.headers { head += "\(h.name): \(String(decoding: render(h.value), as: UTF8.self))\r\n" }
        if r.status >= 200 && r.status != 204 && r.status != 304 { head += "content-length: \(body.count)\r\n" }
        if r.status >= 400 { head += "cache-control: no-cache\r\n" }
        head += "\r\n"
        return Array(head.utf8) + body
    }
}

/// A `return`, `deny` or `tarpit` response with log-format parts: its formats compiled once,
/// with the rules (where the map files they name are at hand), and rendered per request.
final class DynamicResponse: @unchecked Sendable {
    let response: LocalResponse
    /// Each format text of the response (header values, the body) and its compiled form.
    let formats: [String: LogFormat]

    init(_ r: LocalResponse) {
        var f: [String: LogFormat] = [:]
        for h in r.headers { f[h.value] = LogFormat(h.value) }
        switch r.body {
        case .format(let t), .formatFile(_, let t): f[t] = LogFormat(t)
        default: break
        }
        response = r
        formats = f
    }
}

/// An `http-response` rule ready to run.
struct CompiledResponseRule {
    enum Action {
        case allow
        /// `deny`, `return`: a response built at load, or one rendered each time.
        case respond([UInt8], status: Int, deny: Bool)
        case respondDynamic(DynamicResponse, deny: Bool)
        case header(HeaderEdit)
        case setStatus(Int, String?)
        case variable(VariableScope, String, VariableAssignment)
    }
    let guardState: RuleGuard
    let action: Action

    init(_ rule: Rule<HTTPResponseAction>, errorPages: [Int: [UInt8]]) {
        guardState = rule.guardState
        switch rule.action {
        case .allow: action = .allow
        case .deny(let r), .returnResponse(let r):
            let deny: Bool = { if case .deny = rule.action { return true }; return false }()
            action = CompiledRequestRule.isStatic(r) ? .respond(CompiledRequestRule.build(r, errorPages: errorPages), status: r.status, deny: deny)
                : .respondDynamic(DynamicResponse(r), deny: deny)
        case .setHeader(let h): action = .header(.set(Array(h.name.utf8), LogFormat(h.value)))
        case .addHeader(let h): action = .header(.add(Array(h.name.utf8), LogFormat(h.value)))
        case .deleteHeader(let m): action = .header(.delete(m))
        case .replaceHeader(let n, let r): action = .header(.replace(n.lowercased(), r, wholeValue: true))
        case .replaceValue(let n, let r): action = .header(.replace(n.lowercased(), r, wholeValue: false))
        case .setStatus(let c, let reason): action = .setStatus(c, reason)
        case .setVariable(let scope, let name, let e, let c): action = .variable(scope, name, .expression(e, c))
        case .setVariableFormat(let scope, let name, let f, let c): action = .variable(scope, name, .format(LogFormat(f), c))
        case .unsetVariable(let scope, let name): action = .variable(scope, name, .unset)
        }
    }
}

/// A header edit shared by `http-request` and `http-response`, applied to a header list.
enum HeaderEdit {
    case set([UInt8], LogFormat)
    case add([UInt8], LogFormat)
    case delete(HeaderNameMatch)
    case replace(String, RegexReplacement, wholeValue: Bool)

    typealias Headers = [(name: [UInt8], value: [UInt8])]

    /// A header name compared with a lower-case name, on bytes.
    @inline(__always)
    static func isNamed(_ name: [UInt8], _ lower: String) -> Bool {
        guard name.count == lower.utf8.count else { return false }
        for (a, b) in zip(name, lower.utf8) where (a >= 0x41 && a <= 0x5a ? a | 0x20 : a) != b { return false }
        return true
    }

    func apply(to list: inout Headers, _ samples: HTTPSamples) {
        switch self {
        case .set(let name, let format):
            let lower = String(decoding: name, as: UTF8.self).lowercased()
            list.removeAll { Self.isNamed($0.name, lower) }
            list.append((name, format.isConstant ? format.constant : format.render(samples)))
        case .add(let name, let format):
            list.append((name, format.isConstant ? format.constant : format.render(samples)))
        case .delete(let match):
            list.removeAll { match.matches($0.name) }
        case .replace(let lower, let r, let whole):
            list = list.map { h in
                guard Self.isNamed(h.name, lower) else { return h }
                let value = String(decoding: h.value, as: UTF8.self)
                if whole { return (h.name, r.regex.substitute(in: value, template: r.template).map { Array($0.utf8) } ?? h.value) }
                let parts = value.split(separator: ",", omittingEmptySubsequences: false).map { part -> String in
                    let trimmed = String(part).trimmingBlanks()
                    return r.regex.substitute(in: trimmed, template: r.template) ?? trimmed
                }
                return (h.name, Array(parts.joined(separator: ", ").utf8))
            }
        }
    }
}

extension RuleGuard {
    @inline(__always)
    func allows<C: SampleContext>(_ samples: C) -> Bool {
        switch self {
        case .always: return true
        case .never: return false
        case .when(let c): return c.evaluate(samples)
        }
    }
}

extension HTTPTransaction {
    /// The request's headers as an editable list (made on the first edit).
    func editableRequestHeaders() -> [(name: [UInt8], value: [UInt8])] {
        if let list = rewrittenHeaders { return list }
        let p = requestBytes
        return request.headers.map { h in
            (Array(UnsafeRawBufferPointer(rebasing: p[Int(h.name.start)..<Int(h.name.end)])),
             Array(UnsafeRawBufferPointer(rebasing: p[Int(h.value.start)..<Int(h.value.end)])))
        }
    }

    func currentTarget() -> [UInt8] {
        if let t = rewrittenTarget { return t }
        let p = requestBytes
        return Array(UnsafeRawBufferPointer(rebasing: p[Int(request.target.start)..<Int(request.target.end)]))
    }

    /// Runs `http-request` rules and then 1.x `req*` rules. Returns true when the request was
    /// answered here (deny, return, redirect) or is held (tarpit).
    func applyRequestRules(_ rules: [CompiledRequestRule], legacy: [(RuleGuard, LegacyRewrite)]) -> Bool {
        let samples = HTTPSamples(session: self, phase: .request)
        for rule in rules where rule.guardState.allows(samples) {
            switch rule.action {
            case .allow:
                return applyLegacyRequestRules(legacy)
            // HAProxy's termination states: P for a deny, L for an answer of our own.
            case .respond(let bytes, let status, let deny):
                terminationState = deny ? "PR" : "LR"
                sendLocal(bytes, status: status)
                return true
            case .respondDynamic(let r, let deny):
                terminationState = deny ? "PR" : "LR"
                sendLocal(render(r, samples), status: r.response.status)
                return true
            case .tarpit(let r):
                tarpit(render(r, samples), status: r.response.status)
                return true
            case .redirect(let r, let format):
                terminationState = "LR"
                sendLocal(redirectResponse(r, target: format.render(samples)), status: r.code)
                return true
            case .header(let edit):
                var list = editableRequestHeaders()
                edit.apply(to: &list, samples)
                rewrittenHeaders = list
            case .setPath(let format):
                let t = currentTarget()
                let q = t.firstIndex(of: UInt8(ascii: "?")).map { Array(t[$0...]) } ?? []
                rewrittenTarget = format.render(samples) + q
            case .replacePath(let r):
                let t = currentTarget()
                let qi = t.firstIndex(of: UInt8(ascii: "?")) ?? t.count
                if let replaced = r.regex.substitute(in: String(decoding: t[..<qi], as: UTF8.self), template: r.template) {
                    rewrittenTarget = Array(replaced.utf8) + Array(t[qi...])
                }
            case .setURI(let format):
                rewrittenTarget = format.render(samples)
            case .replaceURI(let r):
                if let replaced = r.regex.substitute(in: String(decoding: currentTarget(), as: UTF8.self), template: r.template) {
                    rewrittenTarget = Array(replaced.utf8)
                }
            case .variable(let scope, let name, let assignment):
                assign(scope, name, assignment, samples)
            case .service(let name):
                switch name {
                case .prometheusExporter: startService(.prometheus)
                }
                return true
            }
        }
        return applyLegacyRequestRules(legacy)
    }

    /// A local response rendered for this request (`deny`, `return`, `tarpit` with formats).
    func render(_ r: DynamicResponse, _ samples: HTTPSamples) -> [UInt8] {
        CompiledRequestRule.build(r.response, errorPages: backend?.errorPages ?? frontend.errorPages) { text in
            r.formats[text]?.render(samples) ?? Array(text.utf8)
        }
    }

    /// `set-var`, `set-var-fmt`, `unset-var`: the value is copied out of the message.
    func assign(_ scope: VariableScope, _ name: String, _ assignment: VariableAssignment, _ samples: HTTPSamples) {
        var value: SampleValue?
        var conditions: VariableConditions = []
        switch assignment {
        case .unset:
            value = nil
        case .format(let f, let c):
            value = .string(f.render(samples))
            conditions = c
        case .expression(let e, let c):
            conditions = c
            var got = false
            _ = samples.visitSamples(of: e.fetch) { raw in
                guard let (v, fold) = e.convert(raw) else { return false }
                value = SampleValue(v, fold: fold)
                got = true
                return true
            }
            // A fetch that gives nothing leaves the variable as it was, as in HAProxy.
            if !got { return }
        }
        variables.assign(scope, name, value, if: conditions, model: context.model)
    }

    /// The 1.x rules, applied line by line to the request line and each header line.
    func applyLegacyRequestRules(_ rules: [(RuleGuard, LegacyRewrite)]) -> Bool {
        guard !rules.isEmpty else { return false }
        let samples = HTTPSamples(session: self, phase: .request)
        let p = requestBytes
        var requestLine = String(decoding: p[Int(request.method.start)..<Int(request.method.end)], as: UTF8.self) + " "
            + String(decoding: currentTarget(), as: UTF8.self) + (request.minorVersion == 0 ? " HTTP/1.0" : " HTTP/1.1")
        var lines = editableRequestHeaders().map { String(decoding: $0.name, as: UTF8.self) + ": " + String(decoding: $0.value, as: UTF8.self) }
        var allowed = false
        for (guardState, rule) in rules where guardState.allows(samples) {
            switch rule.operation {
            case .replace(let regex, let template):
                if let r = regex.substitute(in: requestLine, template: template) { requestLine = r }
                lines = lines.map { regex.substitute(in: $0, template: template) ?? $0 }
            case .delete(let regex):
                lines.removeAll { regex.matches($0) }
            case .add(let line):
                lines.append(line)
            case .deny(let regex):
                if !allowed && (regex.matches(requestLine) || lines.contains { regex.matches($0) }) {
                    terminationState = "PR"
                    sendLocal(frontend.errorPages[403] ?? HTTPStatusText.errorPage(403), status: 403)
                    return true
                }
            case .allow(let regex):
                if regex.matches(requestLine) || lines.contains(where: { regex.matches($0) }) { allowed = true }
            }
        }
        // Write the lines back: the target from the request line, the headers as a list.
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: true)
        if parts.count >= 2 { rewrittenTarget = Array(parts[1].utf8) }
        rewrittenHeaders = lines.compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (Array(line[..<colon].utf8), Array(String(line[line.index(after: colon)...]).trimmingBlanks().utf8))
        }
        return false
    }

    /// The response's headers as an editable list.
    func editableResponseHeaders() -> [(name: [UInt8], value: [UInt8])] {
        if let list = responseEdits { return list }
        let p = responseBytes
        return response.headers.map { h in
            (Array(UnsafeRawBufferPointer(rebasing: p[Int(h.name.start)..<Int(h.name.end)])),
             Array(UnsafeRawBufferPointer(rebasing: p[Int(h.value.start)..<Int(h.value.end)])))
        }
    }

    /// Runs `http-response` rules and then 1.x `rsp*` rules. Returns true when a `deny` or
    /// `return` answered in the server's place (no more rules run, in any section).
    func applyResponseRules(_ rules: [CompiledResponseRule], legacy: [(RuleGuard, LegacyRewrite)]) -> Bool {
        let samples = HTTPSamples(session: self, phase: .response)
        rules: for rule in rules where rule.guardState.allows(samples) {
            switch rule.action {
            case .allow:
                break rules
            case .respond(let bytes, let status, let deny):
                replaceResponse(bytes, status: status, state: deny ? "PH" : "LH")
                return true
            case .respondDynamic(let r, let deny):
                replaceResponse(render(r, samples), status: r.response.status, state: deny ? "PH" : "LH")
                return true
            case .header(let edit):
                var list = editableResponseHeaders()
                edit.apply(to: &list, samples)
                responseEdits = list
            case .setStatus(let code, let reason):
                statusOverride = (code, reason)
            case .variable(let scope, let name, let assignment):
                assign(scope, name, assignment, samples)
            }
        }
        let active = legacy.filter { $0.0.allows(samples) }
        guard !active.isEmpty else { return false }
        var lines = editableResponseHeaders().map { String(decoding: $0.name, as: UTF8.self) + ": " + String(decoding: $0.value, as: UTF8.self) }
        for (_, rule) in active {
            switch rule.operation {
            case .replace(let regex, let template): lines = lines.map { regex.substitute(in: $0, template: template) ?? $0 }
            case .delete(let regex): lines.removeAll { regex.matches($0) }
            case .add(let line): lines.append(line)
            case .deny, .allow: break
            }
        }
        responseEdits = lines.compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (Array(line[..<colon].utf8), Array(String(line[line.index(after: colon)...]).trimmingBlanks().utf8))
        }
        return false
    }

    /// A redirect response for `http-request redirect`.
    func redirectResponse(_ r: Redirect, target: [UInt8]) -> [UInt8] {
        var location = target
        var uri = currentTarget()
        if r.dropQuery, let q = uri.firstIndex(of: UInt8(ascii: "?")) { uri = Array(uri[..<q]) }
        switch r.kind {
        case .location:
            break
        case .prefix:
            if r.appendSlash, uri.last != UInt8(ascii: "/") { uri.append(UInt8(ascii: "/")) }
            location = (target == [UInt8(ascii: "/")] ? [] : target) + uri
        case .scheme:
            let p = requestBytes
            let host = request.host.map { Array(UnsafeRawBufferPointer(rebasing: p[Int($0.start)..<Int($0.end)])) } ?? []
            if r.appendSlash, uri.last != UInt8(ascii: "/") { uri.append(UInt8(ascii: "/")) }
            location = target + Array("://".utf8) + host + uri
        }
        var head = "HTTP/1.1 \(r.code) \(HTTPStatusText.reason(r.code))\r\ncontent-length: 0\r\nlocation: "
        head += String(decoding: location, as: UTF8.self) + "\r\n"
        if let c = r.setCookie { head += "set-cookie: \(c)\r\n" }
        if let c = r.clearCookie { head += "set-cookie: \(c.hasSuffix("=") ? c : c + "=") ; Expires=Thu, 01-Jan-1970 00:00:01 GMT\r\n" }
        head += "cache-control: no-cache\r\n\r\n"
        return Array(head.utf8)
    }
}
