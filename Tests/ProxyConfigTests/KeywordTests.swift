import Testing
import ProxyRules
@testable import ProxyConfig

@Suite struct GlobalKeywords {
    /// `option redispatch [interval]`: -1 (the default) is the last retry, N every Nth, -N
    /// the Nth from the end, 0 never; HAProxy 2.6's reading, bare `balance` included.
    @Test func redispatchIntervalAndBareBalance() throws {
        var o = ProxyOptions()
        o.redispatch = true
        #expect((1...3).map { o.redispatches(attempt: $0, of: 3) } == [false, false, true])
        o.redispatchInterval = 2
        #expect((1...4).map { o.redispatches(attempt: $0, of: 4) } == [false, true, false, true])
        o.redispatchInterval = -2
        #expect((1...3).map { o.redispatches(attempt: $0, of: 3) } == [false, true, false])
        o.redispatchInterval = 0
        #expect(!o.redispatches(attempt: 3, of: 3))
        var loader = ConfigLoader(environment: Environment())
        loader.resolvesNames = false
        let r = loader.load(text: "backend b\n    balance\n    option redispatch 2\n    server s 127.0.0.1:1\n")
        #expect(r.errors.isEmpty, "\(r.errors)")
        #expect(r.configuration?.proxies[0].settings.balance == .roundRobin && r.configuration?.proxies[0].settings.options.redispatchInterval == 2)
    }

    @Test func everyGlobalKeyword() throws {
        let c = try model("""
        global
            daemon
            maxconn 9000
            pidfile /run/proxy.pid
            nbthread 2
            log stdout format raw local0 info
            log 127.0.0.1:514 local1 notice err
            log udp@127.0.0.1:5140 len 1024 local2
            stats socket /run/proxy.sock mode 600 level admin expose-fd listeners
            stats timeout 30s
            hard-stop-after 30s
            grace 1s
            close-spread-time 5s
            user nobody
            group nogroup
            uid 65534
            gid 65534
            chroot /var/empty
            ulimit-n 20000
            tune.bufsize 32768
            tune.maxrewrite 2048
            server-state-file /var/lib/proxy/state
            strict-limits
            noreuseport
        """)
        let g = c.global
        #expect(g.daemon && g.maxconn == 9000 && g.pidfile == "/run/proxy.pid" && g.threads == 2)
        #expect(g.logs.count == 3)
        #expect(g.logs[1] == .target(LogDestination(address: .udp(host: "127.0.0.1", address: IPAddress(parsing: "127.0.0.1"), port: 514), facility: "local1", maxLevel: .notice, minLevel: .error)))
        #expect(g.statsSockets.first?.exposeListeners == true && g.statsSockets.first?.level == .admin && g.statsSockets.first?.mode == 0o600)
        #expect(g.statsTimeout == 30000 && g.hardStopAfter == 30000 && g.grace == 1000 && g.closeSpreadTime == 5000)
        #expect(g.user == "nobody" && g.group == "nogroup" && g.uid == 65534 && g.gid == 65534 && g.chroot == "/var/empty")
        #expect(g.ulimitN == 20000 && g.bufferSize == 32768 && g.maxRewrite == 2048)
        #expect(g.serverStateFile == "/var/lib/proxy/state" && g.strictLimits && g.noReusePort)
    }

    @Test func notEnforcedKeywordsWarn() {
        let r = load("global\n    stats socket /tmp/s.sock\n    server-state-file /tmp/x\n")
        #expect(r.warnings.map(\.description) == [
            "t.cfg:3: warning: 'server-state-file' is accepted but not enforced yet",
        ])
    }
}

@Suite struct ProxyKeywords {
    @Test func defaultsInheritance() throws {
        let c = try model("""
        defaults base
            mode http
            timeout client 5s
            timeout connect 1s
            timeout server 2s
            option httplog
        defaults
            mode tcp
            timeout client 7s
        frontend plain
            bind :8001
        frontend derived from base
            bind :8002
            default_backend app
        backend app from base
            server s 127.0.0.1:80
        """)
        #expect(c.proxies[0].mode == .tcp && c.proxies[0].settings.timeouts.client == 7000)
        #expect(!c.proxies[0].settings.options.httpLog)
        #expect(c.proxies[1].mode == .http && c.proxies[1].settings.timeouts.client == 5000 && c.proxies[1].settings.options.httpLog)
        #expect(c.proxies[2].settings.timeouts.server == 2000)
    }

    @Test func defaultsWithoutModeIsTCP() throws {
        #expect(try model("defaults\n    timeout client 1s\nbackend b\n").proxies[0].mode == .tcp)
    }

    @Test func bindForms() throws {
        let c = try model("""
        frontend f
            timeout client 1s
            bind :80,127.0.0.1:81 name web maxconn 100 backlog 512
            bind [::1]:8443 v6only
            bind :::9000 v4v6
            bind 127.0.0.1:9100-9102
            bind unix@/run/p.sock mode 660
            bind /run/q.sock
            bind abns@proxy
            bind fd@3
            bind ipv4@*:9200
        """)
        let b = c.proxies[0].binds
        #expect(b[0].addresses == [.inet(family: .ipv4, address: nil, port: 80), .inet(family: .ipv4, address: IPAddress(parsing: "127.0.0.1"), port: 81)])
        #expect(b[0].options.name == "web" && b[0].options.maxconn == 100 && b[0].options.backlog == 512)
        #expect(b[1].addresses == [.inet(family: .ipv6, address: IPAddress(parsing: "::1"), port: 8443)] && b[1].options.v6only)
        #expect(b[2].addresses == [.inet(family: .ipv6, address: nil, port: 9000)])
        #expect(b[3].addresses.count == 3)
        #expect(b[4].addresses == [.unix(path: "/run/p.sock")] && b[4].options.mode == 0o660)
        #expect(b[5].addresses == [.unix(path: "/run/q.sock")])
        #expect(b[6].addresses == [.abstract(name: "proxy")])
        #expect(b[7].addresses == [.inheritedFD(3)])
        #expect(b[8].addresses == [.inet(family: .ipv4, address: nil, port: 9200)])
    }

    @Test func listenerKeysIncludeSocketOptions() throws {
        let c = try model("frontend f\n    timeout client 1s\n    bind :80\n    bind :::80 v6only\n")
        let keys = c.proxies[0].binds.flatMap(\.listenerKeys)
        #expect(keys.count == 2 && keys[0] != keys[1] && keys[1].v6only)
    }

    /// `accept-proxy`, `ssl`, `crt` and the TLS options are enforced; `h2` is left out of
    /// `alpn` with a warning (HTTP/2 is not offered), and `alpn` may come before `ssl`.
    @Test func acceptProxyTLSAndALPN() throws {
        let r = load("frontend f\n    timeout client 1s\n    bind :80 accept-proxy alpn h2,http/1.1 ssl crt /x.pem ssl-min-ver TLSv1.2 no-tlsv13 ciphers HIGH\n")
        #expect(r.warnings.map(\.message) == ["bind: HTTP/2 is not offered yet: 'h2' is left out of alpn, and http/1.1 is negotiated"])
        let options = r.configuration!.proxies[0].binds[0].options
        #expect(options.acceptProxy && options.ssl && options.certificates == ["/x.pem"])
        #expect(options.tls.alpn == ["http/1.1"] && options.tls.ciphers == "HIGH" && options.tls.effectiveRange == 0x0303...0x0303)
        #expect(r.configuration!.unenforcedKeywords.isEmpty)
        let h2 = load("frontend f\n    timeout client 1s\n    bind :80 ssl crt /x.pem alpn h2\n")
        #expect(h2.errors.first?.message.contains("HTTP/2 is not offered") == true)
        let none = load("frontend f\n    timeout client 1s\n    bind :80 ssl crt /x.pem force-tlsv12 no-tlsv12\n")
        #expect(none.errors.first?.message.contains("no TLS version is left") == true)
    }

    /// `server ... ssl` and its options over `ssl-default-server-*`; checks follow `ssl`
    /// unless `port` or `addr` sends them elsewhere (HAProxy's rule), or `check-ssl` says so.
    @Test func serverTLSOptions() throws {
        let r = load("""
        global
            ssl-default-server-options no-tls-tickets ssl-min-ver TLSv1.3
            ssl-default-server-ciphers HIGH
            ca-base /etc/ssl/certs
        backend b
            mode http
            timeout connect 1s
            timeout server 1s
            default-server verify none
            server a 10.0.0.1:443 ssl sni req.hdr(host) alpn h2,http/1.1 no-ssl-reuse check
            server b 10.0.0.2:443 ssl verify required ca-file ca.pem check port 8080
            server c 10.0.0.3:80 check-ssl check check-sni c.example

        """)
        #expect(r.errors.isEmpty, "\(r.errors)")
        #expect(r.warnings.map(\.message) == ["server: HTTP/2 is not spoken to servers yet: 'h2' is left out of alpn"])
        let c = r.configuration!
        let servers = c.proxies[0].servers.map(\.options)
        #expect(servers[0].ssl && servers[0].serverTLS.verify == false && servers[0].serverTLS.sni?.description == "req.hdr(host)")
        #expect(servers[0].serverTLS.settings.alpn == ["http/1.1"] && !servers[0].serverTLS.reuse && servers[0].checksUseTLS)
        #expect(servers[1].serverTLS.verify == true && servers[1].serverTLS.caFile == "ca.pem" && !servers[1].checksUseTLS)
        #expect(!servers[2].ssl && servers[2].checksUseTLS && servers[2].serverTLS.checkSNI == "c.example")
        #expect(c.global.defaultServerTLS.noTickets && c.global.defaultServerTLS.ciphers == "HIGH"
                && c.global.defaultServerTLS.effectiveRange == 0x0304...0x0304)
        // What parses but would change nothing is said.
        let idle = load("backend b\n    timeout connect 1s\n    timeout server 1s\n    server a 10.0.0.1:443 verify none check-alpn http/1.1\n")
        #expect(idle.warnings.map(\.message) == ["server: TLS options without 'ssl' (or 'check-ssl') on the line change nothing; add 'ssl'"])
        let delay = load("frontend f\n    mode tcp\n    timeout client 1s\n    bind :1\n    tcp-request inspect-delay 5s\n")
        #expect(delay.warnings.contains { $0.message.contains("'tcp-request inspect-delay' changes nothing here") && $0.location?.line == 5 })
        let unchecked = load("backend b\n    timeout connect 1s\n    timeout server 1s\n    server a 10.0.0.1:443 ssl verify none verifyhost a.example\n")
        #expect(unchecked.warnings.map(\.message) == ["server 'b/a': 'verifyhost' changes nothing with 'verify none': the server's certificate is not checked"])
        let strict = load("backend b\n    server a 10.0.0.1:443 ssl strict-sni\n")
        #expect(strict.errors.first?.message.contains("is a 'bind' option") == true)
    }

    /// Proxy-level `redirect` runs after every `http-request` rule, whatever the line order.
    @Test func proxyRedirectComesAfterHTTPRequestRules() throws {
        let r = load("frontend f\n    mode http\n    timeout client 1s\n    bind :80\n    redirect scheme https code 301 if !{ ssl_fc }\n    http-request deny if { path /x }\n")
        #expect(r.errors.isEmpty, "\(r.errors)")
        let rules = r.configuration!.proxies[0].httpRequestRules.map(\.summary)
        #expect(rules == ["http-request deny", "redirect"], "\(rules)")
    }

    /// `tcp-request connection expect-proxy layer4`: only at the connection layer, with `layer4`.
    @Test func expectProxyRule() throws {
        let ok = load("frontend f\n    timeout client 1s\n    bind :80\n    tcp-request connection expect-proxy layer4 if { src 10.0.0.0/8 }\n")
        #expect(ok.errors.isEmpty && ok.configuration!.proxies[0].tcpRequestRules[0].action.verdict == .expectProxy)
        let content = load("frontend f\n    timeout client 1s\n    bind :80\n    tcp-request content expect-proxy layer4\n")
        #expect(content.errors.first?.message.contains("use 'tcp-request connection expect-proxy layer4") == true)
        let noLayer = load("frontend f\n    timeout client 1s\n    bind :80\n    tcp-request connection expect-proxy\n")
        #expect(noLayer.errors.first?.message.contains("'expect-proxy layer4") == true)
    }

    @Test func serversAndDefaultServer() throws {
        let c = try model("""
        backend app
            timeout connect 1s
            timeout server 1s
            default-server inter 3s fall 5 rise 3 maxconn 50
            server a 10.0.0.1:8080 check weight 10 cookie A slowstart 30s fastinter 1s downinter 10s
            server b 10.0.0.2 backup disabled port 9000 addr 10.0.0.9 maxqueue 7
            server c [2001:db8::1]:443
            server d localhost:+1000
            server e /run/app.sock
            server f 10.0.0.6:80 send-proxy
            server g 10.0.0.7:80 send-proxy-v2 check-send-proxy
            server h 10.0.0.8:80 send-proxy-v2-ssl no-send-proxy-v2
        """)
        let s = c.proxies[0].servers
        #expect(s[0].options.check && s[0].options.weight == 10 && s[0].options.cookie == "A" && s[0].options.inter == 3000)
        #expect(s[0].options.fall == 5 && s[0].options.rise == 3 && s[0].options.maxconn == 50 && s[0].options.slowStart == 30000)
        #expect(s[0].options.fastInter == 1000 && s[0].options.downInter == 10000)
        #expect(s[1].address.port == nil && s[1].options.backup && s[1].options.disabled && s[1].options.checkPort == 9000)
        #expect(s[1].options.checkAddress == IPAddress(parsing: "10.0.0.9") && s[1].options.maxqueue == 7)
        #expect(s[2].address.port == 443)
        #expect(s[3].address.portOffset == 1000)
        #expect(s[4].address.host == .unix("/run/app.sock"))
        #expect(s[5].options.sendProxy == .v1 && !s[5].options.checkSendProxy)
        #expect(s[6].options.sendProxy == .v2 && s[6].options.checkSendProxy)
        #expect(s[7].options.sendProxy == nil)
    }

    @Test func timeoutsAndUnits() throws {
        let c = try model("""
        defaults
            timeout client 120000
            timeout server 2m
            timeout connect 500us
            timeout http-request 10s
            timeout http-keep-alive 1s
            timeout queue 1h
            timeout tunnel 1d
            timeout check 100ms
            timeout client-fin 3s
            timeout server-fin 4s
            timeout tarpit 5s
        backend b
        """)
        let t = c.proxies[0].settings.timeouts
        #expect(t.client == 120000 && t.server == 120000 && t.connect == 1 && t.httpRequest == 10000)
        #expect(t.httpKeepAlive == 1000 && t.queue == 3_600_000 && t.tunnel == 86_400_000 && t.check == 100)
        #expect(t.clientFin == 3000 && t.serverFin == 4000 && t.tarpit == 5000)
    }

    @Test(arguments: [
        ("roundrobin", BalanceAlgorithm.roundRobin), ("static-rr", .staticRoundRobin), ("leastconn", .leastConnections),
        ("first", .first), ("source", .source), ("uri", .uri(length: nil, depth: nil, whole: false, pathOnly: false)),
        ("uri len 10 depth 2 whole", .uri(length: 10, depth: 2, whole: true, pathOnly: false)), ("random", .random(draws: 2)),
        ("random(3)", .random(draws: 3)),
    ])
    func balance(text: String, expected: BalanceAlgorithm) throws {
        #expect(try model("backend b\n    balance \(text)\n").proxies[0].settings.balance == expected)
    }

    @Test func cookie() throws {
        let c = try model("backend b\n    cookie SRV insert indirect nocache postonly httponly secure domain .a.com domain .b.com maxidle 30m maxlife 8h\n")
        let k = c.proxies[0].settings.cookie!
        #expect(k.name == "SRV" && k.mode == .insert && k.indirect && k.noCache && k.postOnly && k.httpOnly && k.secure)
        #expect(k.domains == [".a.com", ".b.com"] && k.maxIdle == 1_800_000 && k.maxLife == 28_800_000)
        #expect(try model("backend b\n    cookie SERVERID indirect\n").proxies[0].settings.cookie!.mode == .passive)
        #expect(try model("backend b\n    cookie S prefix\n").proxies[0].settings.cookie!.mode == .prefix)
        #expect(load("backend b\n    cookie S rewrite nocache\n").warnings.map(\.description) == ["t.cfg:2: warning: cookie: 'nocache', 'postonly', 'maxidle' and 'maxlife' only take effect with 'insert'"])
    }

    @Test func options() throws {
        let c = try model("""
        defaults
            mode http
            option httplog
            option dontlognull
            option logasap
            option forwardfor except 127.0.0.0/8 header X-Real-IP if-none
            option http-server-close
            option redispatch
            option allbackups
            option abortonclose
            option tcpka
            option idle-close-on-response
            option splice-auto
            option httpchk GET /health HTTP/1.1
            no option logasap
        backend b
            option httpclose
        backend c
            option forceclose
        backend d
            no option http-server-close
        """)
        let o = c.proxies[0].settings.options
        #expect(o.httpLog && o.dontLogNull && !o.logASAP && o.redispatch && o.allBackups && o.abortOnClose)
        #expect(o.clientKeepAlive && o.serverKeepAlive)
        #expect(o.forwardFor == ForwardFor(except: IPNetwork(parsing: "127.0.0.0/8"), header: "X-Real-IP", ifNone: true))
        #expect(o.httpConnectionMode == .close)
        #expect(c.proxies[1].settings.options.httpConnectionMode == .close)
        #expect(c.proxies[2].settings.options.httpConnectionMode == .keepAlive)
        #expect(c.proxies[0].settings.httpCheck == HTTPCheck(method: "GET", uri: "/health", version: "HTTP/1.1"))
    }

    @Test func httpCheck() throws {
        let c = try model("""
        backend b
            option httpchk
            http-check send meth HEAD uri /check ver HTTP/1.1 hdr Host example.com body ping
            http-check expect status 200
            http-check expect ! rstring ^error
        """)
        let h = c.proxies[0].settings.httpCheck!
        #expect(h.method == "HEAD" && h.uri == "/check" && h.version == "HTTP/1.1" && h.body == "ping")
        #expect(h.headers == [HeaderField(name: "Host", value: "example.com")])
        #expect(h.expectations == [.init(kind: .status, negated: false, pattern: "200"), .init(kind: .rstring, negated: true, pattern: "^error")])
    }

    @Test func httpRulesAllActions() throws {
        let dir = packageRoot + "/etc"
        let c = try model("""
        frontend f
            mode http
            bind :80
            timeout client 1s
            acl api path_beg /api
            http-request allow if api
            http-request deny deny_status 429 if { path_beg /slow }
            http-request tarpit if { path_beg /trap }
            http-request return status 503 content-type text/html file \(dir)/maintenance.html hdr Retry-After 60 if { path /m }
            http-request redirect scheme https code 301 if !{ path_beg /.well-known }
            http-request redirect location /new drop-query if { path /old }
            http-request redirect prefix /v2 append-slash if { path_beg /v1 }
            http-request set-header X-Client %[src]
            http-request add-header X-Via proxy
            http-request del-header X-Forwarded-Proto
            http-request replace-header Host (.*):80 \\1
            http-request replace-value Accept (.*) \\1
            http-request set-path /x%[path]
            http-request replace-path ^/old/(.*) /new/\\1
            http-request set-uri /u
            http-request replace-uri ^http://(.*) https://\\1
            http-request set-var(txn.host) hdr(host),lower
            http-response set-header X-Frame-Options DENY
            http-response add-header X-A b
            http-response del-header Server
            http-response replace-header Location ^http://(.*) https://\\1
            http-response replace-value Cache-Control (.*) \\1
            http-response set-status 503 reason "Maintenance"
            tcp-request connection reject if { src 192.0.2.0/24 }
            tcp-request content accept if HTTP
            default_backend b
        backend b
            mode http
        """)
        let f = c.proxies[0]
        #expect(f.httpRequestRules.count == 17)
        #expect(f.httpResponseRules.count == 6)
        #expect(f.tcpRequestRules.count == 2)
        guard case .deny(let deny) = f.httpRequestRules[1].action else { Issue.record("deny"); return }
        #expect(deny.status == 429)
        guard case .returnResponse(let ret) = f.httpRequestRules[3].action else { Issue.record("return"); return }
        #expect(ret.status == 503 && ret.contentType == "text/html" && ret.headers == [HeaderField(name: "Retry-After", value: "60")])
        guard case .redirect(let r) = f.httpRequestRules[4].action else { Issue.record("redirect"); return }
        #expect(r == Redirect(kind: .scheme, target: "https", code: 301))
        guard case .setVariable(let scope, let name, let expr, _) = f.httpRequestRules[16].action else { Issue.record("set-var"); return }
        #expect(scope == .txn && name == "host" && expr.converters == [.lower])
        guard case .setStatus(503, let reason) = f.httpResponseRules[5].action else { Issue.record("set-status"); return }
        #expect(reason == "Maintenance")
    }

    @Test func statsAndMisc() throws {
        let c = try model("""
        listen stats
            mode http
            bind 127.0.0.1:9000
            timeout client 1s
            stats enable
            stats uri /stats
            stats realm Proxy
            stats auth admin:secret
            stats refresh 10s
            stats admin if LOCALHOST
            stats hide-version
            monitor-uri /healthz
            maxconn 100
            backlog 50
            retries 5
            http-reuse always
            hash-type consistent sdbm avalanche
            log global
            errorfile 503 \(packageRoot)/etc/errors/503-maintenance.http
        """)
        let s = c.proxies[0].settings
        #expect(s.stats.enabled && s.stats.uri == "/stats" && s.stats.realm == "Proxy" && s.stats.credentials.first?.user == "admin")
        #expect(s.stats.refresh == 10000 && s.stats.admin != nil && s.stats.hideVersion)
        #expect(s.monitorURI == "/healthz" && s.maxconn == 100 && s.backlog == 50 && s.retries == 5 && s.httpReuse == .always)
        #expect(s.hashType == "consistent sdbm avalanche" && s.logs == [.global] && s.errorPages[503]?.status == 503)
    }

    @Test func legacyKeywordsWarnWithModernForm() throws {
        let r = load("""
        frontend f
            mode http
            bind :80
            timeout client 1s
            clitimeout 5000
            reqadd X-Proto:\\ https
            reqdel ^X-Forwarded-For:
            reqrep ^Host:\\ (.*) Host:\\ \\1
            rspidel ^Server:
            reqdeny ^GET\\ /admin
            reqallow ^GET
            option forceclose
            default_backend b
        backend b
            mode http
            srvtimeout 5000
            contimeout 500
            rsprep ^Location:\\ http://(.*) Location:\\ https://\\1
            rspadd X-A:\\ 1
        """)
        #expect(r.errors.isEmpty, "\(r.errors)")
        let w = r.warnings.map(\.description)
        #expect(w.contains("t.cfg:5: warning: 'clitimeout' is a 1.x keyword; write 'timeout client 5000'"))
        #expect(w.contains("t.cfg:6: warning: 'reqadd' is a 1.x keyword (HAProxy 2.1 and later reject it); the modern form is: http-request add-header X-Proto 'https'"))
        #expect(w.contains("t.cfg:7: warning: 'reqdel' is a 1.x keyword (HAProxy 2.1 and later reject it); the modern form is: http-request del-header X-Forwarded-For"))
        #expect(w.contains("t.cfg:12: warning: 'option forceclose' is a 1.x keyword; write 'option httpclose'"))
        #expect(r.configuration!.proxies[0].legacyRewrites.count == 6)
        #expect(r.configuration!.proxies[1].settings.timeouts.server == 5000 && r.configuration!.proxies[1].settings.timeouts.connect == 500)
    }

    @Test func wrongCapabilityWarnsLikeHAProxy() {
        let r = load("backend b\n    bind :80\n    option httplog\nfrontend f\n    bind :81\n    timeout client 1s\n    server s 127.0.0.1:80\n")
        #expect(r.errors.isEmpty)
        #expect(r.warnings.map(\.description).prefix(3) == [
            "t.cfg:2: warning: 'bind' is ignored in backend 'b': it needs a frontend or listen section",
            "t.cfg:3: warning: 'option httplog' is ignored in backend 'b': it needs a frontend or listen section",
            "t.cfg:7: warning: 'server' is ignored in frontend 'f': it needs a backend or listen section",
        ])
    }

    @Test func tcpFrontendMayUseHTTPBackend() throws {
        _ = try model("frontend f\n    mode tcp\n    bind :80\n    timeout client 1s\n    default_backend b\nbackend b\n    mode http\n")
    }

    @Test func aclDeclaredAfterUseStillCountsWhenRepeated() throws {
        let c = try model("""
        frontend f
            mode http
            bind :80
            timeout client 1s
            acl st path_beg /img
            use_backend b if st
            acl st path_end .css
        backend b
            mode http
        """)
        let acl = c.proxies[0].acls["st"]!
        #expect(acl.terms.count == 2)
    }
}

@Suite struct FoldReport {
    @Test func foldedRulesAreReported() throws {
        let text = """
        frontend www
            mode http
            bind :80
            timeout client 1s
            acl maintenance_mode env_int(HAPROXY_MAINT) gt 0
            use_backend maintenance if maintenance_mode
            http-request deny if { env(BLOCK) -m str yes } METH_POST
            default_backend app
        backend app
            mode http
        backend maintenance
            mode http
        """
        let on = try model(text, env: [("HAPROXY_MAINT", "1")])
        #expect(on.foldedRules.map(\.description) == ["t.cfg:6: use_backend maintenance: always (env_int(HAPROXY_MAINT)=1 > 0)",
                                                      "t.cfg:7: http-request deny: never (env(BLOCK) unset)"])
        guard case .always = on.proxies[0].useBackendRules[0].guardState else { Issue.record("not folded"); return }
        let off = try model(text, env: [("HAPROXY_MAINT", "0"), ("BLOCK", "yes")])
        #expect(off.foldedRules.map(\.description) == ["t.cfg:6: use_backend maintenance: never (env_int(HAPROXY_MAINT)=0, not > 0)"])
        guard case .when(let c) = off.proxies[0].httpRequestRules[0].guardState else { Issue.record("not partly folded"); return }
        #expect(c.description == "if METH_POST")
    }

    @Test func foldingSeesTheFinalEnvironment() throws {
        let c = try model("""
        global
            setenv HAPROXY_MAINT 0
        frontend f
            mode http
            bind :80
            timeout client 1s
            use_backend m if { env_int(HAPROXY_MAINT) gt 0 }
            default_backend m
        backend m
            mode http
        global
            setenv HAPROXY_MAINT 2
        """)
        #expect(c.foldedRules.first?.applies == true)
    }

    @Test func junkInEnvIntWarnsOnce() {
        let r = load("frontend f\n    mode http\n    bind :80\n    timeout client 1s\n    acl m env_int(M) gt 0\n    use_backend b if m\n    http-request deny if m\nbackend b\n    mode http\n", env: [("M", "1x")])
        #expect(r.warnings.map(\.description) == ["t.cfg:5: warning: env_int(M): value '1x' is not a plain integer; read as 1, as atol() would"])
    }
}
