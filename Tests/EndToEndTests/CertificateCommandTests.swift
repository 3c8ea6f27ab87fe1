import Foundation
import Glibc
import Testing

/// `set/commit/abort/new/del/show ssl cert`: a certificate replaced with no reload. The same
/// commands go to HAProxy 2.6 and to proxy on the same certificate file, and the answers must
/// be the same bytes; then a new connection gets the new certificate, and a connection opened
/// before keeps working.
@Suite(.serialized) struct CertificateCommandTests {
    /// A self-signed ECDSA certificate for localhost with its key, in one PEM file.
    static func ecdsaCertificate(in directory: String) throws -> (pem: String, ca: String) {
        let key = directory + "/new.key", cert = directory + "/new.crt", pem = directory + "/new.pem"
        let r = try Harness.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                                     "-keyout", key, "-out", cert, "-days", "60", "-subj", "/CN=localhost",
                                                     "-addext", "subjectAltName=DNS:localhost"])
        #expect(r.status == 0, "\(r.stderr)")
        try (String(contentsOfFile: cert, encoding: .utf8) + String(contentsOfFile: key, encoding: .utf8))
            .write(toFile: pem, atomically: true, encoding: .utf8)
        return (pem, cert)
    }

    func config(_ port: Int, socket: String, pem: String) -> String {
        """
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port) ssl crt \(pem)
            http-request return status 200 content-type text/plain string "ok"

        """
    }

    /// A command with a payload, as HAProxy's documentation sends it.
    static func withPayload(_ socket: String, _ command: String, _ file: String) throws -> String {
        let r = try Harness.run("/bin/sh", ["-c", "printf '%s <<\\n%s\\n\\n' '\(command)' \"$(cat \(file))\" | socat -t 3 - UNIX-CONNECT:\(socket)"])
        return r.stdout
    }

    /// The subject of the certificate a new connection gets.
    static func subject(_ port: Int) throws -> String {
        let r = try Harness.run("/bin/sh", ["-c", "echo | openssl s_client -connect 127.0.0.1:\(port) -servername localhost 2>/dev/null | openssl x509 -noout -subject -ext subjectAltName 2>/dev/null | tr '\\n' ' '"])
        return r.stdout
    }

    /// The whole transcript of a session of commands on `socket`.
    static func transcript(_ socket: String, site: String, newPEM: String, certOnly: String) throws -> String {
        var out = ""
        func say(_ line: String) { out += "> \(line)\n" + (cli(socket, line) ?? "<no answer>") }
        say("show ssl cert")
        say("show ssl cert \(site)")
        out += "> set\n" + (try withPayload(socket, "set ssl cert \(site)", newPEM))
        say("show ssl cert")
        say("show ssl cert *\(site)")
        out += "> set again\n" + (try withPayload(socket, "set ssl cert \(site)", newPEM))
        say("abort ssl cert \(site)")
        say("commit ssl cert \(site)")
        say("set ssl cert \(site)")
        out += "> set elsewhere\n" + (try withPayload(socket, "set ssl cert /nonexistent.pem", newPEM))
        out += "> set a certificate alone\n" + (try withPayload(socket, "set ssl cert \(site)", certOnly))
        say("commit ssl cert \(site)")
        say("abort ssl cert \(site)")
        say("new ssl cert /tmp/unused.pem")
        say("show ssl cert")
        say("del ssl cert /tmp/unused.pem")
        say("del ssl cert \(site)")
        out += "> set\n" + (try withPayload(socket, "set ssl cert \(site)", newPEM))
        say("commit ssl cert \(site)")
        say("show ssl cert \(site)")
        return out
    }

    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func replacesACertificateLikeHAProxy() throws {
        let bed = try TestBed()
        let (site, ca) = try TLSTerminationTests.certificate(in: bed.directory)
        let (newPEM, newCA) = try Self.ecdsaCertificate(in: bed.directory)
        var transcripts: [String] = []
        for subject in ["proxy", "haproxy"] {
            let port = TestBed.freePort()
            let socket = bed.directory + "/\(subject).sock"
            let path = bed.directory + "/\(subject).cfg"
            try config(port, socket: socket, pem: site).write(toFile: path, atomically: true, encoding: .utf8)
            let p = try bed.start(subject == "proxy" ? Harness.proxyBinary : Harness.which("haproxy")!, ["-f", path, "-db"],
                                  log: bed.directory + "/\(subject).out")
            #expect(TestBed.waitForPort(port) && TestBed.waitUntil { FileManager.default.fileExists(atPath: socket) }, "\(subject) did not start")
            // A client with a connection from before the change.
            let before = try Self.subject(port)
            #expect(before.contains("localhost"), "\(before)")
            #expect(try Harness.run("/usr/bin/curl", ["-s", "--cacert", ca, "https://localhost:\(port)/"]).stdout == "ok")
            transcripts.append(try Self.transcript(socket, site: site, newPEM: newPEM, certOnly: newCA))
            // New connections get the new certificate, verified by its own CA.
            let after = try Harness.run("/usr/bin/curl", ["-s", "--cacert", newCA, "https://localhost:\(port)/"])
            #expect(after.stdout == "ok", "\(subject): \(after.stderr)")
            let old = try Harness.run("/usr/bin/curl", ["-s", "--cacert", ca, "https://localhost:\(port)/"])
            #expect(old.status != 0, "\(subject): the old certificate is no longer served")
            p.terminate()
            p.waitUntilExit()
        }
        #expect(transcripts[0] == transcripts[1], "proxy:\n\(transcripts[0])\nhaproxy:\n\(transcripts[1])")
    }

    /// A commit that cannot build (a key that does not match its certificate) changes
    /// nothing: the old certificate serves, the transaction stays open.
    @Test func aBadCertificateChangesNothing() throws {
        let bed = try TestBed()
        let (site, ca) = try TLSTerminationTests.certificate(in: bed.directory)
        let (_, newCA) = try Self.ecdsaCertificate(in: bed.directory)
        let port = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        try bed.proxy(config(port, socket: socket, pem: site), waitFor: port)
        // The new certificate with the old site's key: parses, does not match.
        let mismatched = bed.directory + "/mismatched.pem"
        try (String(contentsOfFile: newCA, encoding: .utf8) + String(contentsOfFile: bed.directory + "/site.key", encoding: .utf8))
            .write(toFile: mismatched, atomically: true, encoding: .utf8)
        #expect(try Self.withPayload(socket, "set ssl cert \(site)", mismatched).contains("Transaction created"))
        let commit = cli(socket, "commit ssl cert \(site)") ?? ""
        #expect(commit.contains("Can't commit \(site)!"), "\(commit)")
        #expect(try Harness.run("/usr/bin/curl", ["-s", "--cacert", ca, "https://localhost:\(port)/"]).stdout == "ok")
        #expect((cli(socket, "show ssl cert") ?? "").contains("*\(site)"))
    }
}
