import Foundation
import Glibc
import Testing

/// `option tcp-check` with `tcp-check` rules, and the protocol checks built on them, against
/// real servers: a Redis master and its replica (only the master passes HAProxy's documented
/// `role:master` sequence; both answer `option redis-check`'s PING).
@Suite(.serialized) struct TCPCheckTests {
    static let redis = Harness.which("redis-server")
    static let mariadb = ["/usr/sbin/mariadbd", "/usr/bin/mariadb-install-db", "/usr/bin/mariadb"].allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }

    /// The `show stat` line of a server, as `backend,server,...`.
    static func stat(_ socket: String, _ backend: String, _ server: String) -> String {
        (cli(socket, "show stat") ?? "").split(separator: "\n").first { $0.hasPrefix("\(backend),\(server),") }.map(String.init) ?? ""
    }

    @Test(.enabled(if: redis != nil, "needs redis-server"))
    func redisMasterAndReplica() throws {
        let bed = try TestBed()
        let master = TestBed.freePort(), replica = TestBed.freePort(), front = TestBed.freePort()
        for (port, extra) in [(master, [String]()), (replica, ["--replicaof", "127.0.0.1", String(master)])] {
            try bed.start(Self.redis!, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                        "--dir", bed.directory, "--dbfilename", "dump-\(port).rdb"] + extra)
            #expect(TestBed.waitForPort(port), "redis on \(port)")
        }
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("tcp"))
        frontend redis
            bind 127.0.0.1:\(front)
            default_backend redis
        backend redis
            option tcp-check
            tcp-check send PING\\r\\n
            tcp-check expect string +PONG
            tcp-check send info\\ replication\\r\\n
            tcp-check expect string role:master
            tcp-check send QUIT\\r\\n
            tcp-check expect string +OK
            server r1 127.0.0.1:\(master) check inter 200 rise 1 fall 1
            server r2 127.0.0.1:\(replica) check inter 200 rise 1 fall 1
        backend ping
            option redis-check
            server r1 127.0.0.1:\(master) check inter 200 rise 1 fall 1
            server r2 127.0.0.1:\(replica) check inter 200 rise 1 fall 1
        backend nothing
            option tcp-check
            tcp-check send QUIT\\r\\n
            tcp-check expect string +PONG
            server r1 127.0.0.1:\(master) check inter 200 rise 1 fall 1

        """, waitFor: front)
        #expect(TestBed.waitUntil { Self.stat(socket, "redis", "r2").contains(",DOWN,") && Self.stat(socket, "redis", "r1").contains(",UP,") },
                "\(Self.stat(socket, "redis", "r1"))\n\(Self.stat(socket, "redis", "r2"))")
        // The replica answers without `role:master` and keeps the connection: a timeout at
        // that step, as HAProxy reports it.
        #expect(Self.stat(socket, "redis", "r2").contains("L7TOUT"), "\(Self.stat(socket, "redis", "r2"))")
        #expect(TestBed.waitUntil { bed.log().contains("Server redis/r2 is DOWN, reason: Layer7 timeout, info: \" at step 4 of tcp-check (expect string 'role:master')\"") },
                "\(bed.log())")
        #expect(TestBed.waitUntil { Self.stat(socket, "ping", "r1").contains(",UP,") && Self.stat(socket, "ping", "r2").contains(",UP,") })
        #expect(Self.stat(socket, "ping", "r2").contains("L7OK"), "\(Self.stat(socket, "ping", "r2"))")
        // The server closes without the pattern: a wrong answer at that step.
        #expect(TestBed.waitUntil { Self.stat(socket, "nothing", "r1").contains(",DOWN,") })
        #expect(Self.stat(socket, "nothing", "r1").contains("L7RSP"), "\(Self.stat(socket, "nothing", "r1"))")
        #expect(TestBed.waitUntil { bed.log().contains("Server nothing/r1 is DOWN, reason: Layer7 invalid response, info: \"TCPCHK did not match content '+PONG' at step 2\"") },
                "\(bed.log())")
        // Writes go to the master only.
        let set = try Harness.run(Harness.which("redis-cli") ?? "/usr/bin/redis-cli", ["-p", String(front), "set", "k", "v"])
        #expect(set.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "OK", "\(set.stdout) \(set.stderr)")
    }

    /// A check's socket is disconnected (a reset) and connected again at the next run: each
    /// run is a new connection from a new port, none is left in TIME_WAIT, the proxy holds
    /// the same descriptors after forty runs, and a server that moves from IPv4 to IPv6 and
    /// back is checked on each.
    @Test(.enabled(if: redis != nil, "needs redis-server"), arguments: [1, 2])
    func checkSocketsAreReused(threads: Int) throws {
        let bed = try TestBed()
        let port = TestBed.freePort(), front = TestBed.freePort()
        try bed.start(Self.redis!, ["--port", String(port), "--bind", "127.0.0.1", "::1", "--save", "", "--appendonly", "no", "--dir", bed.directory])
        #expect(TestBed.waitForPort(port), "redis on \(port)")
        let socket = bed.directory + "/api.sock"
        let proxy = try bed.proxy("""
        global
            nbthread \(threads)
            stats socket \(socket) level admin
        \(TestBed.defaults("tcp"))
        frontend redis
            bind 127.0.0.1:\(front)
            default_backend redis
        backend redis
            option tcp-check
            tcp-check send PING\\r\\n
            tcp-check expect string +PONG
            # Without it an answer would have one 50 ms interval to come (too short under a sanitizer).
            timeout check 2s
            server r 127.0.0.1:\(port) check inter 50 rise 1 fall 1

        """, waitFor: front)
        let redisCLI = Harness.which("redis-cli") ?? "/usr/bin/redis-cli"
        var asked = 0
        /// Connections redis has accepted, less the ones these questions made.
        func connectionsReceived() -> Int {
            asked += 1
            let info = (try? Harness.run(redisCLI, ["-p", String(port), "info", "stats"]).stdout) ?? ""
            let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("total_connections_received:") } ?? ""
            return (Int(line.split(separator: ":").last ?? "") ?? -1) - asked
        }
        func descriptors() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(proxy.processIdentifier)/fd").count) ?? -1 }
        /// Sockets in TIME_WAIT (state 06) whose far end is the server's port.
        func timeWaits() -> Int {
            let hexPort = String(format: ":%04X", port)
            return ["/proc/net/tcp", "/proc/net/tcp6"].reduce(0) { total, file in
                total + ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").split(separator: "\n").filter {
                    let f = $0.split(separator: " ")
                    return f.count > 3 && f[2].hasSuffix(hexPort) && f[3] == "06"
                }.count
            }
        }
        #expect(TestBed.waitUntil { Self.stat(socket, "redis", "r").contains(",UP,") }, "\(Self.stat(socket, "redis", "r"))")
        let (before, fds) = (connectionsReceived(), descriptors())
        #expect(TestBed.waitUntil { connectionsReceived() >= before + 40 }, "\(connectionsReceived()) after \(before)")
        #expect(descriptors() == fds, "\(descriptors()) descriptors, \(fds) before")
        // Each question to redis-cli may leave its own socket in TIME_WAIT; the checks, none.
        #expect(timeWaits() <= asked, "\(timeWaits()) in TIME_WAIT after \(asked) questions")
        #expect(Self.stat(socket, "redis", "r").contains("L7OK"), "\(Self.stat(socket, "redis", "r"))")
        // To IPv6 and back: the socket kept is of the other family, so a new one is made.
        for address in ["::1", "127.0.0.1"] {
            #expect(cli(socket, "set server redis/r addr \(address)")?.contains("IP changed") == true)
            let moved = connectionsReceived()
            #expect(TestBed.waitUntil { connectionsReceived() >= moved + 10 }, "checks at \(address)")
            #expect(Self.stat(socket, "redis", "r").contains(",UP,"), "\(Self.stat(socket, "redis", "r"))")
            #expect(Self.stat(socket, "redis", "r").contains("L7OK"), "\(Self.stat(socket, "redis", "r"))")
        }
        #expect(descriptors() == fds, "\(descriptors()) descriptors, \(fds) before")
        // Not one run failed on the way.
        #expect(statRow(socket, "redis", "r")["chkfail"] == "0", "\(statRow(socket, "redis", "r"))")
    }

    /// The handshake's last ACK rides on a check's first bytes, run after run on the socket
    /// kept between runs (the option is set once and survives the disconnects); a `connect`
    /// whose server speaks first gets its ACK at once (else the server's accept, and so its
    /// banner, would wait 200 ms: past `timeout check`), and the next run's first connection
    /// delays it again.
    @Test(arguments: [1, 2])
    func handshakeACKRidesOnTheFirstBytes(threads: Int) throws {
        let bed = try TestBed()
        let plain = TestBed.freePort(), two = TestBed.freePort(), banner = TestBed.freePort(), front = TestBed.freePort()
        let plainLog = bed.directory + "/plain.log", twoLog = bed.directory + "/two.log"
        let python = Harness.which("python3") ?? "/usr/bin/python3"
        let peer = Harness.root + "/Tests/EndToEndTests/Helpers/segments_peer.py"
        try bed.start(python, [peer, String(plain), plainLog])
        try bed.start(python, [peer, String(two), twoLog])
        try bed.start(python, [Harness.root + "/Tests/EndToEndTests/Helpers/talker.py", String(banner), "220 ready\\r\\n"])
        for p in [plain, two, banner] { #expect(TestBed.waitForPort(p), "peer on \(p)") }
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            nbthread \(threads)
            stats socket \(socket) level admin
        \(TestBed.defaults("tcp"))
        frontend f
            bind 127.0.0.1:\(front)
            default_backend plain
        backend plain
            option tcp-check
            tcp-check send PING\\r\\n
            tcp-check expect string +PONG
            server s 127.0.0.1:\(plain) check inter 50 rise 1 fall 3
        backend two
            option tcp-check
            tcp-check connect
            tcp-check send PING\\r\\n
            tcp-check expect string +PONG
            tcp-check connect port \(banner)
            tcp-check expect string 220
            timeout check 150
            server s 127.0.0.1:\(two) check inter 50 rise 1 fall 3

        """, waitFor: front)
        func counts(_ log: String) -> [Int] { ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int($0) } }
        #expect(TestBed.waitUntil { counts(plainLog).count >= 12 && counts(twoLog).count >= 12 }, "\(counts(plainLog)) \(counts(twoLog))")
        let row = statRow(socket, "two", "s")
        let (once, toggled) = (counts(plainLog), counts(twoLog))
        // A lone ACK may still come if the loop is slower than the kernel's delayed-ACK timer
        // (a sanitizer, a loaded machine); a socket without the setting gives 3 every time.
        #expect(once.filter { $0 == 2 }.count * 2 > once.count, "\(once)")
        #expect(toggled.filter { $0 == 2 }.count * 2 > toggled.count, "\(toggled)")
        // The banner came in time: the second connection's ACK was not held back.
        #expect(row["status"] == "UP", "\(row)")
        let failed = Int(row["chkfail"] ?? "") ?? -1
        #expect(failed >= 0 && failed * 4 < toggled.count, "\(failed) failed checks in \(toggled.count) runs: \(row)")
    }

    /// The expect options, against a real Redis, with HAProxy 2.6's results and words
    /// (compared side by side): `ok-status L7OKC` makes a running server NOLB with the
    /// `on-success` text as its info; `min-recv` waits for more than PONG ever sends, so
    /// `tout-status` says what the timeout was; `error-status` and `on-error` word a
    /// mismatch the server ends.
    @Test(.enabled(if: redis != nil, "needs redis-server"))
    func expectOptions() throws {
        let bed = try TestBed()
        let port = TestBed.freePort(), front = TestBed.freePort()
        try bed.start(Self.redis!, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", bed.directory])
        #expect(TestBed.waitForPort(port), "redis on \(port)")
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("tcp"))
            timeout check 300
        frontend redis
            bind 127.0.0.1:\(front)
            default_backend ok
        backend ok
            option tcp-check
            tcp-check send PING\\r\\n
            tcp-check expect min-recv 5 string +PONG ok-status L7OKC on-success "pong seen"
            server a 127.0.0.1:\(port) check inter 200 rise 1 fall 1
        backend slow
            option tcp-check
            tcp-check send PING\\r\\n
            tcp-check expect min-recv 100 string +PONG tout-status L6TOUT
            server c 127.0.0.1:\(port) check inter 200 rise 1 fall 1
        backend closed
            option tcp-check
            tcp-check send QUIT\\r\\n
            tcp-check expect string +PONG error-status L7STS on-error "no pong before QUIT"
            server d 127.0.0.1:\(port) check inter 200 rise 1 fall 1

        """, waitFor: front)
        func column(_ b: String, _ s: String, _ name: String) -> String { statRow(socket, b, s)[name] ?? "" }
        #expect(TestBed.waitUntil { column("ok", "a", "status") == "NOLB" }, "\(column("ok", "a", "status"))")
        #expect(column("ok", "a", "check_status") == "L7OKC" && column("ok", "a", "check_code") == "0" && column("ok", "a", "last_chk") == "pong seen")
        #expect(bed.log().contains("Server ok/a is stopping, reason: Layer7 check conditionally passed, code: 0, info: \"pong seen\", check duration: "), "\(bed.log())")
        #expect(TestBed.waitUntil { bed.log().contains("Server slow/c is DOWN, reason: Layer6 timeout, info: \" at step 2 of tcp-check (expect string '+PONG')\"") }, "\(bed.log())")
        #expect(column("slow", "c", "check_status") == "L6TOUT", "\(column("slow", "c", "check_status"))")
        #expect(TestBed.waitUntil { bed.log().contains("Server closed/d is DOWN, reason: Layer7 wrong status, code: 0, info: \"no pong before QUIT\"") }, "\(bed.log())")
        #expect(column("closed", "d", "check_status") == "L7STS" && column("closed", "d", "last_chk") == "no pong before QUIT")
    }

    /// `option ldap-check` against real OpenLDAP servers (Debian's slapd): an anonymous bind
    /// that succeeds is `L7OK`; one refused (`disallow bind_anon`: result 48) is `L7STS` with
    /// the code and HAProxy's words; a server that does not answer LDAP times out. Compared
    /// with HAProxy 2.6 on the same file and servers: identical.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/sbin/slapd"), "needs slapd"))
    func ldapCheck() throws {
        let bed = try TestBed()
        let open = TestBed.freePort(), closed = TestBed.freePort(), front = TestBed.freePort()
        for (port, extra) in [(open, ""), (closed, "disallow bind_anon\n")] {
            let conf = bed.directory + "/slapd-\(port).conf"
            try "pidfile \(bed.directory)/slapd-\(port).pid\nargsfile \(bed.directory)/slapd-\(port).args\n\(extra)".write(toFile: conf, atomically: true, encoding: .utf8)
            try bed.start("/usr/sbin/slapd", ["-h", "ldap://127.0.0.1:\(port)/", "-f", conf, "-d", "0"])
            #expect(TestBed.waitForPort(port), "slapd on \(port)")
        }
        let web = try bed.backend(name: "web")
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("tcp"))
            timeout check 300
        frontend ldap
            bind 127.0.0.1:\(front)
            default_backend ok
        backend ok
            option ldap-check
            server a 127.0.0.1:\(open) check inter 200 rise 1 fall 1
        backend refused
            option ldap-check
            server c 127.0.0.1:\(closed) check inter 200 rise 1 fall 1
        backend notldap
            option ldap-check
            server b 127.0.0.1:\(web) check inter 200 rise 1 fall 1

        """, waitFor: front)
        #expect(TestBed.waitUntil { Self.stat(socket, "ok", "a").contains(",UP,") && Self.stat(socket, "ok", "a").contains(",L7OK,0,") },
                "\(Self.stat(socket, "ok", "a"))")
        #expect(TestBed.waitUntil { bed.log().contains("Server refused/c is DOWN, reason: Layer7 wrong status, code: 48, info: \"See RFC: http://tools.ietf.org/html/rfc4511#section-4.1.9\"") },
                "\(bed.log())")
        #expect(Self.stat(socket, "refused", "c").contains(",L7STS,48,"), "\(Self.stat(socket, "refused", "c"))")
        #expect(TestBed.waitUntil { bed.log().contains("Server notldap/b is DOWN, reason: Layer7 timeout") }, "\(bed.log())")
    }

    /// `option ssl-hello-chk`: a TLS listener answers the SSLv3 hello with a handshake or an
    /// alert record (L6OK); an HTTP server waits for the end of a request that never comes
    /// (L6TOUT, a layer-6 timeout).
    @Test func sslHelloCheck() throws {
        let bed = try TestBed()
        let pem = try TLSTerminationTests.certificate(in: bed.directory).pem
        let tlsPort = TestBed.freePort(), front = TestBed.freePort()
        let plain = try bed.backend(name: "plain")
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        frontend tls
            bind 127.0.0.1:\(tlsPort) ssl crt \(pem)
            http-request return status 200
        frontend web
            bind 127.0.0.1:\(front)
            default_backend hello
        backend hello
            option ssl-hello-chk
            server tls 127.0.0.1:\(tlsPort) check inter 200 rise 1 fall 1
            server plain 127.0.0.1:\(plain) check inter 200 rise 1 fall 1

        """, waitFor: front)
        #expect(TestBed.waitUntil { Self.stat(socket, "hello", "tls").contains(",UP,") && Self.stat(socket, "hello", "plain").contains(",DOWN,") },
                "\(Self.stat(socket, "hello", "tls"))\n\(Self.stat(socket, "hello", "plain"))")
        #expect(Self.stat(socket, "hello", "tls").contains("L6OK"), "\(Self.stat(socket, "hello", "tls"))")
        #expect(Self.stat(socket, "hello", "plain").contains("L6TOUT"), "\(Self.stat(socket, "hello", "plain"))")
    }

    /// `option mysql-check` against a real MariaDB: with a user that may log in without a
    /// password (L7OK, code 0), without a user (the greeting alone), the pre-4.1 login, a user
    /// whose password we do not send (L7STS with MariaDB's code and message, as HAProxy logs
    /// it), and a server that is not MySQL at all (L7RSP).
    @Test(.enabled(if: mariadb, "needs mariadb-server"))
    func mysqlCheck() throws {
        let bed = try TestBed()
        let data = bed.directory + "/mysql", sock = bed.directory + "/mysql.sock"
        let install = try Harness.run("/usr/bin/mariadb-install-db", ["--no-defaults", "--datadir=\(data)", "--user=root",
                                                                       "--auth-root-authentication-method=normal"])
        #expect(install.status == 0, "\(install.stderr)")
        let port = TestBed.freePort(), notMySQL = try bed.backend(name: "web", kind: "echo"), front = TestBed.freePort()
        try bed.start("/usr/sbin/mariadbd", ["--no-defaults", "--datadir=\(data)", "--user=root", "--port=\(port)",
                                             "--bind-address=127.0.0.1", "--socket=\(sock)", "--skip-log-bin"], log: bed.directory + "/mysql.log")
        #expect(TestBed.waitForPort(port, timeout: 30), "mariadbd: \(bed.read(bed.directory + "/mysql.log"))")
        let users = try Harness.run("/usr/bin/mariadb", ["--no-defaults", "-S", sock, "-uroot", "-e",
                                                          "CREATE USER 'haproxy'@'127.0.0.1'; CREATE USER 'pw'@'127.0.0.1' IDENTIFIED BY 'secret';"])
        #expect(users.status == 0, "\(users.stderr)")
        let socket = bed.directory + "/api.sock"
        var config = "global\n    stats socket \(socket) level admin\n\(TestBed.defaults("tcp"))\nfrontend db\n    bind 127.0.0.1:\(front)\n    default_backend login\n"
        for (name, option, target) in [("login", "user haproxy", port), ("greeting", "", port), ("pre41", "user haproxy pre-41", port),
                                       ("password", "user pw", port), ("notmysql", "user haproxy", notMySQL)] {
            config += "backend \(name)\n    option mysql-check \(option)\n    server s 127.0.0.1:\(target) check inter 200 rise 1 fall 1\n"
        }
        try bed.proxy(config, waitFor: front)
        #expect(TestBed.waitUntil {
            ["login", "greeting", "pre41"].allSatisfy { Self.stat(socket, $0, "s").contains(",UP,") }
                && ["password", "notmysql"].allSatisfy { Self.stat(socket, $0, "s").contains(",DOWN,") }
        }, "\(["login", "greeting", "pre41", "password", "notmysql"].map { Self.stat(socket, $0, "s") })")
        #expect(Self.stat(socket, "login", "s").contains(",L7OK,0,"), "\(Self.stat(socket, "login", "s"))")
        #expect(Self.stat(socket, "password", "s").contains(",L7STS,1045,"), "\(Self.stat(socket, "password", "s"))")
        #expect(Self.stat(socket, "notmysql", "s").contains(",L7RSP,"), "\(Self.stat(socket, "notmysql", "s"))")
        #expect(bed.log().contains("Server password/s is DOWN, reason: Layer7 wrong status, code: 1045, info: \"#28000Access denied for user 'pw'@'localhost' (using password: NO)\""),
                "\(bed.log())")
        // Through the proxy, the client talks to MariaDB.
        let query = try Harness.run("/usr/bin/mariadb", ["--no-defaults", "-h", "127.0.0.1", "-P", String(front), "-uhaproxy", "-N", "-e", "SELECT 1+1"])
        #expect(query.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "2", "\(query.stdout) \(query.stderr)")
    }

    static let aiosmtpd = (try? Harness.run("/usr/bin/env", ["python3", "-c", "import aiosmtpd"]).status) == 0
    static let postgres = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql"))?.sorted().last.map { "/usr/lib/postgresql/\($0)/bin" }

    /// `option smtpchk` as HAProxy 2.6 runs it (banner, EHLO, QUIT, each answer 2xx): against
    /// Python's aiosmtpd the result is the QUIT answer's text and code; a 5xx banner or a 5xx
    /// answer to HELO is L7STS with the server's words and code, decided as soon as they are in.
    /// Identical to HAProxy's `show stat` and log lines on the same servers.
    @Test(.enabled(if: aiosmtpd, "needs python3 -m pip install aiosmtpd"))
    func smtpCheck() throws {
        let bed = try TestBed()
        let smtp = TestBed.freePort(), banner = TestBed.freePort(), helo = TestBed.freePort(), front = TestBed.freePort()
        try bed.start(Harness.which("python3") ?? "/usr/bin/python3", ["-m", "aiosmtpd", "-n", "-l", "127.0.0.1:\(smtp)"])
        let talker = Harness.root + "/Tests/EndToEndTests/Helpers/talker.py"
        try bed.start(Harness.which("python3") ?? "/usr/bin/python3", [talker, String(banner), "554 5.7.1 go away\\r\\n"])
        try bed.start(Harness.which("python3") ?? "/usr/bin/python3", [talker, String(helo), "220 hi there\\r\\n", "550 no HELO for you\\r\\n"])
        for p in [smtp, banner, helo] { #expect(TestBed.waitForPort(p), "SMTP peer on \(p)") }
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("tcp"))
            timeout check 500
        frontend f
            bind 127.0.0.1:\(front)
            default_backend ok
        backend ok
            option smtpchk EHLO proxy.test
            server a 127.0.0.1:\(smtp) check inter 200 rise 1 fall 1
        backend banner
            option smtpchk
            server a 127.0.0.1:\(banner) check inter 200 rise 1 fall 1
        backend helo
            option smtpchk
            server a 127.0.0.1:\(helo) check inter 200 rise 1 fall 1

        """, waitFor: front)
        func result(_ b: String) -> [String] { CheckRuleTests.result(socket, b, "a") }
        #expect(TestBed.waitUntil { result("ok") == ["UP", "L7OK", "221", "Bye"] }, "\(result("ok"))")
        #expect(TestBed.waitUntil { result("banner") == ["DOWN", "L7STS", "554", "5.7.1 go away"] }, "\(result("banner"))")
        #expect(TestBed.waitUntil { result("helo") == ["DOWN", "L7STS", "550", "no HELO for you"] }, "\(result("helo"))")
        // Decided on the answer, not on the server's close a second later.
        let line = "Server banner/a is DOWN, reason: Layer7 wrong status, code: 554, info: \"5.7.1 go away\", check duration: "
        let duration = bed.log().components(separatedBy: line).dropFirst().first.flatMap { Int($0.prefix { $0.isNumber }) }
        #expect(duration.map { $0 < 500 } == true, "\(bed.log())")
    }

    /// `option pgsql-check user U` against a real PostgreSQL: a user it lets in is L7OK with
    /// HAProxy's words; one pg_hba.conf rejects is L7RSP with the server's severity, as
    /// HAProxy quotes it (its text ends at the first NUL); a server that is not PostgreSQL is
    /// HAProxy's "PostgreSQL unknown error".
    @Test(.enabled(if: postgres != nil && getuid() == 0, "needs postgresql (and root, to run it as the postgres user)"))
    func pgsqlCheck() throws {
        let bed = try TestBed()
        let bin = Self.postgres!, data = bed.directory + "/pg"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let asPostgres = ["--reuid=postgres", "--regid=postgres", "--init-groups"]
        #expect(try Harness.run("/usr/bin/chown", ["postgres", data, bed.directory]).status == 0)
        let initdb = try Harness.run("/usr/bin/setpriv", asPostgres + [bin + "/initdb", "-D", data + "/data", "-A", "trust", "-U", "haproxy"])
        #expect(initdb.status == 0, "\(initdb.stderr)")
        let hba = data + "/data/pg_hba.conf"
        try ("host all nobody 127.0.0.1/32 reject\n" + (try String(contentsOfFile: hba, encoding: .utf8))).write(toFile: hba, atomically: true, encoding: .utf8)
        let port = TestBed.freePort(), notPG = try bed.backend(name: "web", kind: "echo"), front = TestBed.freePort()
        try bed.start("/usr/bin/setpriv", asPostgres + [bin + "/postgres", "-D", data + "/data", "-p", String(port), "-k", data,
                                                         "-c", "listen_addresses=127.0.0.1"], log: bed.directory + "/pg.log")
        #expect(TestBed.waitForPort(port, timeout: 30), "postgres: \(bed.read(bed.directory + "/pg.log"))")
        let socket = bed.directory + "/api.sock"
        var config = "global\n    stats socket \(socket) level admin\n\(TestBed.defaults("tcp"))\n    timeout check 500\nfrontend db\n    bind 127.0.0.1:\(front)\n    default_backend ok\n"
        for (name, user, target) in [("ok", "haproxy", port), ("rejected", "nobody", port), ("notpg", "haproxy", notPG)] {
            config += "backend \(name)\n    option pgsql-check user \(user)\n    server s 127.0.0.1:\(target) check inter 200 rise 1 fall 1\n"
        }
        try bed.proxy(config, waitFor: front)
        func result(_ b: String) -> [String] { CheckRuleTests.result(socket, b, "s") }
        #expect(TestBed.waitUntil(timeout: 15) { result("ok") == ["UP", "L7OK", "0", "PostgreSQL server is ok"] }, "\(result("ok"))")
        #expect(TestBed.waitUntil { result("rejected") == ["DOWN", "L7RSP", "", "FATAL"] }, "\(result("rejected"))")
        // An echo server returns our startup packet: no 'E', but no authentication request.
        #expect(TestBed.waitUntil { result("notpg") == ["DOWN", "L7STS", "0", "PostgreSQL unknown error"] }, "\(result("notpg"))")
        #expect(bed.log().contains("Server rejected/s is DOWN, reason: Layer7 invalid response, info: \"FATAL\", check duration: "), "\(bed.log())")
    }
}
