import ProxyConfig
import ProxyEngine
import ProxySystem
import Glibc

/// The stats page (`stats uri` and friends): the HTML dashboard in HAProxy's table layout,
/// the `;csv` export that monitoring agents read, basic auth, and the `stats admin` form.
public final class StatsPage: LocalService, @unchecked Sendable {
    let commands: RuntimeCommands
    /// One checker per proxy with `stats auth` (its cache of accepted headers lives there).
    private let auth = Locked<[String: BasicAuth]>([:])

    public init(commands: RuntimeCommands) {
        self.commands = commands
    }

    /// What follows the `stats uri` prefix: HAProxy's `;csv`, `;norefresh`, `;up`, ...
    struct Modifiers {
        var csv = false, norefresh = false, up = false, noMaint = false, json = false, typed = false
        var status: String?

        init(_ rest: Substring) {
            for part in rest.split(separator: ";").dropFirst(rest.hasPrefix(";") ? 0 : 1) {
                let p = part.split(separator: "?").first ?? part
                switch p {
                case "csv": csv = true
                case "norefresh": norefresh = true
                case "up": up = true
                case "no-maint": noMaint = true
                case "json", "json-schema": json = true
                case "typed": typed = true
                default: if p.hasPrefix("st=") { status = String(p.dropFirst(3)) }
                }
            }
        }
    }

    public func respond(to request: ServiceRequest) -> ServiceResponse {
        guard let settings = request.stats, let proxyName = request.proxyName else { return ServiceResponse(status: 500) }
        if !settings.credentials.isEmpty {
            let checker = auth.withLock { table in
                if let c = table[proxyName] { return c }
                let c = BasicAuth(settings.credentials)
                table[proxyName] = c
                return c
            }
            if !checker.allows(request.header("authorization")) {
                let realm = String((settings.realm ?? "HAProxy Statistics").filter { $0 != "\"" })
                return ServiceResponse(status: 401, headers: [("content-type", "text/html"), ("cache-control", "no-cache"),
                                                              ("www-authenticate", "Basic realm=\"\(realm)\"")],
                                       body: Array("<html><body><h1>401 Unauthorized</h1>\nYou need a valid user and password to access this content.\n</body></html>\n".utf8))
            }
        }
        let rest = request.target.dropFirst(settings.uri.utf8.count)
        let modifiers = Modifiers(rest)
        // The page's own address, without its modifiers: where a form posts and redirects.
        let base = settings.uri
        if request.method == "POST" {
            let code = request.adminAllowed ? act(on: request.body) : "DENY"
            return ServiceResponse(status: 303, headers: [("location", base + ";st=" + code), ("cache-control", "no-cache"),
                                                          ("content-type", "text/plain")])
        }
        let proxies = scope(settings, proxyName)
        let level: AccessLevel = settings.showLegends || request.adminAllowed ? .operator : .user
        let rows = commands.statRows(level: level, onlyUp: modifiers.up, noMaint: modifiers.noMaint, proxies: proxies)
        if modifiers.json {
            return ServiceResponse(status: 200, headers: [("content-type", "application/json"), ("cache-control", "no-cache")],
                                   body: Array(commands.statJSON(rows).utf8))
        }
        if modifiers.typed {
            return ServiceResponse(status: 200, headers: [("content-type", "text/plain"), ("cache-control", "no-cache")],
                                   body: Array(commands.statTyped(rows).utf8))
        }
        if modifiers.csv {
            var text = RuntimeCommands.statHeader
            for row in rows { text += commands.statRow(row.kind, row.values) }
            return ServiceResponse(status: 200, headers: [("content-type", "text/plain"), ("cache-control", "no-cache")],
                                   body: Array(text.utf8))
        }
        var headers = [("content-type", "text/html"), ("cache-control", "no-cache")]
        if let r = settings.refresh, !modifiers.norefresh { headers.append(("refresh", "\(max(1, r / 1000))")) }
        let html = page(settings, rows: rows, modifiers: modifiers, base: base, admin: request.adminAllowed)
        return ServiceResponse(status: 200, headers: headers, body: Array(html.utf8))
    }

    /// `stats scope`: the proxies shown (nil: all); `.` is the proxy serving the page.
    func scope(_ settings: StatsSettings, _ proxyName: String) -> Set<String>? {
        guard !settings.scopes.isEmpty else { return nil }
        return Set(settings.scopes.map { $0 == "." ? proxyName : $0 })
    }

    // MARK: the admin form

    /// Runs a posted `b=BACKEND&s=SERVER...&action=ACTION` and says how it went, as the
    /// `;st=` code HAProxy redirects to.
    func act(on body: [UInt8]) -> String {
        var backendName: String?, servers: [String] = [], action: String?
        for pair in String(decoding: body, as: UTF8.self).split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard kv.count == 2 else { continue }
            let value = Self.formDecode(kv[1])
            switch kv[0] {
            case "b": backendName = value
            case "s": servers.append(value)
            case "action": action = value
            default: break
            }
        }
        guard var backendName, let action, !servers.isEmpty else { return "ERRP" }
        // The form names a backend by `#ID` or by name.
        if backendName.hasPrefix("#"), let id = Int(backendName.dropFirst()),
           let name = commands.proxyIDs.first(where: { $0.id == id })?.name {
            backendName = name
        }
        guard commands.engine.model.backends[backendName] != nil else { return "ERRP" }
        let words: (String) -> [String]?
        switch action {
        case "ready", "enable": words = { ["set", "server", $0, "state", "ready"] }
        case "drain": words = { ["set", "server", $0, "state", "drain"] }
        case "maint", "disable": words = { ["set", "server", $0, "state", "maint"] }
        case "dhlth": words = { ["disable", "health", $0] }
        case "ehlth": words = { ["enable", "health", $0] }
        case "hrunn": words = { ["set", "server", $0, "health", "up"] }
        case "hnolb": words = { ["set", "server", $0, "health", "stopping"] }
        case "hdown": words = { ["set", "server", $0, "health", "down"] }
        case "shutdown": words = { ["shutdown", "sessions", "server", $0] }
        default: return "UNKN"
        }
        var done = 0
        for s in servers {
            guard let w = words("\(backendName)/\(s)") else { continue }
            if commands.run(w, level: .admin) == "\n" { done += 1 }
        }
        return done == servers.count ? "DONE" : done == 0 ? "NONE" : "PART"
    }

    /// `application/x-www-form-urlencoded` value: `+` is a space, `%XX` a byte.
    static func formDecode(_ s: Substring) -> String {
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let c = bytes.popFirst() {
            if c == UInt8(ascii: "+") { out.append(0x20); continue }
            if c == UInt8(ascii: "%"), bytes.count >= 2,
               let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) {
                out.append(v)
                bytes = bytes.dropFirst(2)
                continue
            }
            out.append(c)
        }
        return String(decoding: out, as: UTF8.self)
    }

    // MARK: the HTML page

    static let statusMessages: [String: (ok: Bool, text: String)] = [
        "DONE": (true, "Action processed successfully."),
        "NONE": (true, "Nothing has changed."),
        "PART": (false, "Action not processed for every server."),
        "ERRP": (false, "Action not processed: invalid parameters."),
        "EXCD": (false, "Action not processed: the request was too large."),
        "DENY": (false, "Action denied."),
        "IVAL": (false, "Invalid request."),
        "UNKN": (false, "Unknown action."),
    ]

    func page(_ settings: StatsSettings, rows: [RuntimeCommands.StatRow], modifiers: Modifiers, base: String, admin: Bool) -> String {
        let now = Clock.wallClock().seconds
        let uptime = max(0, now - commands.startedAt)
        let days = uptime / 86_400, hours = uptime / 3600 % 24, minutes = uptime / 60 % 60, seconds = uptime % 60
        let model = commands.engine.model
        var h = """
        <!DOCTYPE html>
        <html><head><title>Statistics Report for proxy\(settings.showNode.map { " on " + Self.escape($0.isEmpty ? ProcessCalls.hostname : $0) } ?? "")</title>
        <meta http-equiv="content-type" content="text/html; charset=utf-8">
        <style type="text/css"><!--
        body { font-family: arial, helvetica, sans-serif; font-size: 12px; font-weight: normal; color: black; background: white; }
        th, td { font-size: 10px; }
        h1 { font-size: x-large; margin-bottom: 0.5em; }
        h2 { font-family: helvetica, arial; font-size: x-large; font-weight: bold; font-style: italic; color: #6020a0; margin-top: 0em; margin-bottom: 0em; }
        table.tbl { border-collapse: collapse; border-style: none; }
        table.tbl td { text-align: right; border-width: 1px 1px 1px 1px; border-style: solid solid solid solid; padding: 2px 3px; border-color: gray; white-space: nowrap; }
        table.tbl td.ac { text-align: center; }
        table.tbl th { border-width: 1px; border-style: solid solid solid solid; border-color: gray; }
        table.tbl th.pxname { background: #b00040; color: #ffff40; font-weight: bold; border-style: solid solid none solid; padding: 2px 3px; white-space: nowrap; }
        table.tbl th.empty { border-style: none; empty-cells: hide; background: white; }
        table.tbl th.desc { background: white; border-style: solid solid none solid; text-align: left; padding: 2px 3px; }
        table.lgd { border-collapse: collapse; border-width: 1px; border-style: none none none solid; border-color: black; }
        table.lgd td { border-width: 1px; border-style: solid solid solid solid; border-color: gray; padding: 2px; }
        .titre { background: #20D0D0; color: #000000; font-weight: bold; text-align: center; }
        .total { background: #20D0D0; color: #ffff80; }
        .frontend { background: #e8e8d0; }
        .socket { background: #d0d0d0; }
        .backend { background: #e8e8d0; }
        .active_down { background: #ff9090; }
        .active_going_up { background: #ffd020; }
        .active_going_down { background: #ffffa0; }
        .active_up { background: #c0ffc0; }
        .active_nolb { background: #20b0ff; }
        .active_draining { background: #20a0FF; }
        .active_no_check { background: #e0e0e0; }
        .backup_down { background: #ff9090; }
        .backup_going_up { background: #ff80ff; }
        .backup_going_down { background: #c060ff; }
        .backup_up { background: #b0d0ff; }
        .backup_nolb { background: #90b0e0; }
        .backup_draining { background: #cc9900; }
        .backup_no_check { background: #e0e0e0; }
        .maintain { background: #c07820; }
        .rls { letter-spacing: 0.2em; margin-right: 1px; }
        a.px:link { color: #ffff40; text-decoration: none; }
        a.px:visited { color: #ffff40; text-decoration: none; }
        a.px:hover { color: #ffffff; text-decoration: none; }
        div.tips { display: block; visibility: hidden; z-index: 2147483647; position: absolute; padding: 2px 4px 3px; background: #f0f060; color: #000000; border: 1px solid #7040c0; white-space: nowrap; font-style: normal; font-size: 10px; font-weight: normal; border-radius: 3px; }
        u:hover div.tips { visibility: visible; }
        --></style></head>
        <body><h1><a href="https://github.com/" style="text-decoration: none;">\(settings.hideVersion ? "proxy" : "HAProxy version \(ProductVersion.compatible), released \(ProductVersion.releaseDate)")</a></h1>
        <h2>Statistics Report for pid \(ProcessCalls.pid)\(settings.showNode.map { " on " + Self.escape($0.isEmpty ? ProcessCalls.hostname : $0) } ?? "")</h2>
        <hr width="100%" class="hr">
        <h3>&gt; General process information</h3>
        <table border=0><tr><td align="left" nowrap width="1%">
        <p><b>pid = </b> \(ProcessCalls.pid) (process #1, nbproc = 1, nbthread = \(commands.threads))<br>
        <b>uptime = </b> \(days)d \(hours)h\(String(minutes).leftPadded(2))m\(String(seconds).leftPadded(2))s<br>
        <b>system limits:</b> maxconn = \(model.maxConnections)<br>
        <b>current conns = </b> \(model.activeConnections.load(ordering: .relaxed)); <b>generation = </b> \(model.generation.load(ordering: .relaxed))<br>
        </td><td align="center" nowrap>
        <table class="lgd"><tr>
        <td class="active_up">&nbsp;</td><td class="noborder">active UP </td><td class="backup_up">&nbsp;</td><td class="noborder">backup UP </td></tr><tr>
        <td class="active_down">&nbsp;</td><td class="noborder">active or backup DOWN &nbsp;</td><td class="active_no_check">&nbsp;</td><td class="noborder">not checked </td></tr><tr>
        <td class="active_draining">&nbsp;</td><td class="noborder">active or backup DRAIN &nbsp;</td><td class="maintain">&nbsp;</td><td class="noborder">active or backup MAINT </td></tr>
        </table></td><td align="left" valign="top" nowrap width="1%">
        <b>Display option:</b><ul style="margin-top: 0.25em;">
        <li><a href="\(Self.escape(base));csv">CSV export</a><br>
        <li><a href="\(Self.escape(base))\(modifiers.norefresh ? "" : ";norefresh")">\(modifiers.norefresh ? "Enable" : "Disable") refresh</a><br>
        <li><a href="\(Self.escape(base))\(modifiers.up ? "" : ";up")">\(modifiers.up ? "Show all servers" : "Hide 'DOWN' servers")</a><br>
        </ul></td></tr></table>
        \(settings.showDescription.map { "<p>\(Self.escape($0))</p>\n" } ?? "")
        """
        if let code = modifiers.status, let message = Self.statusMessages[code] {
            h += "<p><div class=\(message.ok ? "active_up" : "active_down")><b>\(message.ok ? "[ DONE ]" : "[ FAIL ]")</b> \(message.text)</div></p>\n"
        }
        // One table per proxy, its rows in `show stat`'s order: frontend, servers, backend.
        var groups: [(name: String, rows: [RuntimeCommands.StatRow])] = []
        for row in rows {
            let name = row.values["pxname"] ?? ""
            if groups.last?.name == name { groups[groups.count - 1].rows.append(row) } else { groups.append((name, [row])) }
        }
        for group in groups { h += table(group.name, group.rows, admin: admin, base: base) }
        return h + "</body></html>\n"
    }

    static let columns = """
    <tr class="titre"><th rowspan=2></th><th colspan=3>Queue</th><th colspan=5>Sessions</th><th colspan=2>Bytes</th>\
    <th colspan=2>Errors</th><th colspan=5>Responses</th><th colspan=7>Server</th></tr>
    <tr class="titre"><th>Cur</th><th>Max</th><th>Limit</th><th>Cur</th><th>Max</th><th>Limit</th><th>Total</th><th>LbTot</th>\
    <th>In</th><th>Out</th><th>Conn</th><th>Resp</th><th>1xx</th><th>2xx</th><th>3xx</th><th>4xx</th><th>5xx</th>\
    <th>Status</th><th>LastChk</th><th>Wght</th><th>Act</th><th>Bck</th><th>Chk</th><th>Dwn</th></tr>

    """

    func table(_ name: String, _ rows: [RuntimeCommands.StatRow], admin: Bool, base: String) -> String {
        let n = Self.escape(name)
        let hasServers = rows.contains { !$0.isFrontend && !$0.isBackend }
        let form = admin && hasServers
        var h = form ? "<form method=\"post\" action=\"\(Self.escape(base))\">\n" : ""
        h += "<table class=\"tbl\" width=\"100%\">\n<tr class=\"titre\"><th class=\"pxname\" width=\"10%\"><a name=\"\(n)\"></a><a class=px href=\"#\(n)\">\(n)</a></th><th class=\"empty\" width=\"90%\"></th></tr>\n</table>\n"
        h += "<table class=\"tbl\" width=\"100%\">\n" + Self.columns
        for row in rows {
            let v = row.values
            func f(_ k: String) -> String { Self.escape(v[k] ?? "") }
            let status = v["status"] ?? ""
            let label: String
            let css: String
            if row.isFrontend { label = "Frontend"; css = "frontend" } else if row.isBackend { label = "Backend"; css = "backend" } else {
                label = form ? "<input type=\"checkbox\" name=\"s\" value=\"\(f("svname"))\"> \(f("svname"))" : f("svname")
                css = Self.rowClass(status, backup: v["bck"] == "1")
            }
            // `stats show-legends` (or an admin): the server's address as a tooltip.
            let legend = (v["addr"] ?? "").isEmpty || row.isFrontend || row.isBackend ? "" : " title=\"\(f("addr"))\""
            h += "<tr class=\"\(css)\"><td class=ac\(legend)>\(label)</td>"
            for k in ["qcur", "qmax", "qlimit", "scur", "smax", "slim", "stot", "lbtot", "bin", "bout", "econ", "eresp",
                      "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx"] {
                h += "<td>\(f(k))</td>"
            }
            let lastChange = Int(v["lastchg"] ?? "").map(Self.duration) ?? ""
            let check = v["check_status"].map { "\(Self.escape($0))\(v["check_code"].map { $0.isEmpty ? "" : "/" + Self.escape($0) } ?? "")" } ?? ""
            h += "<td class=ac>\(row.isFrontend ? f("status") : "\(lastChange) \(f("status"))")</td><td class=ac>\(check)</td>"
            h += "<td class=ac>\(f("weight"))</td><td class=ac>\(row.isFrontend ? "" : row.isBackend ? f("act") : v["act"] == "1" ? "Y" : "-")</td>"
            h += "<td class=ac>\(row.isFrontend ? "" : row.isBackend ? f("bck") : v["bck"] == "1" ? "Y" : "-")</td>"
            h += "<td>\(f("chkfail"))</td><td>\(f("chkdown"))</td></tr>\n"
        }
        h += "</table>\n"
        if form {
            h += """
            Choose the action to perform on the checked servers : <select name=action>
            <option value="">Actions...</option>
            <option value="ready">Set state to READY</option>
            <option value="drain">Set state to DRAIN</option>
            <option value="maint">Set state to MAINT</option>
            <option value="dhlth">Health: disable checks</option>
            <option value="ehlth">Health: enable checks</option>
            <option value="hrunn">Health: force UP</option>
            <option value="hnolb">Health: force NOLB</option>
            <option value="hdown">Health: force DOWN</option>
            <option value="shutdown">Kill Sessions</option>
            </select><input type="hidden" name="b" value="\(n)"><input type="submit" value="Apply"></form>

            """
        }
        return h + "<p>\n"
    }

    /// The row colour for a server's status, as HAProxy's page paints it.
    static func rowClass(_ status: String, backup: Bool) -> String {
        let side = backup ? "backup" : "active"
        if status.hasPrefix("MAINT") { return "maintain" }
        if status.hasPrefix("DRAIN") { return "\(side)_draining" }
        if status.hasPrefix("NOLB") { return "\(side)_nolb" }
        if status.hasPrefix("DOWN ") && !status.hasPrefix("DOWN (") { return "\(side)_going_up" }
        if status.hasPrefix("DOWN") { return "\(side)_down" }
        if status.hasPrefix("UP ") { return "\(side)_going_down" }
        if status == "no check" { return "\(side)_no_check" }
        return "\(side)_up"
    }

    /// `1d2h`, `3h4m`, `5m6s`, `7s`: HAProxy's short duration.
    static func duration(_ s: Int) -> String {
        if s >= 86_400 { return "\(s / 86_400)d\(s / 3600 % 24)h" }
        if s >= 3600 { return "\(s / 3600)h\(s / 60 % 60)m" }
        if s >= 60 { return "\(s / 60)m\(s % 60)s" }
        return "\(s)s"
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "&": out += "&amp;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}
