import Testing
@testable import ProxyConfig
import ProxyRules

/// The keywords that parse but have no effect yet. The list may only shrink, on purpose: a
/// keyword that starts working is removed here and from `NotEnforced` in the same change.
@Suite struct NotEnforcedKeywords {
    @Test func theListIsExactlyThis() {
        #expect(NotEnforced.allCases.map(\.rawValue) == [
            "server-state-file", "close-spread-time", "stats socket name", "hash-type",
            "option splice-auto, splice-request and splice-response in http mode",
            "bind name", "bind id", "bind nice", "bind process", "bind thread",
            "namespace",
        ])
        #expect(NotEnforced.allCases.filter(\.changesWire).map(\.rawValue) == ["namespace"])
    }

    /// Each one is warned about where it is used, and recorded for the start-up to refuse.
    @Test func eachUseWarnsWithItsLine() {
        var loader = ConfigLoader(environment: Environment())
        loader.resolvesNames = false
        let r = loader.load(text: """
        global
            server-state-file /tmp/x
            close-spread-time 5s
            stats socket /tmp/s.sock name admin
        defaults
            mode http
            timeout connect 1s
            timeout client 1s
            timeout server 1s
        frontend web
            bind 127.0.0.1:8080 name main id 3 nice 10 process 1 thread 1 accept-proxy ssl crt /x.pem alpn h2,http/1.1 npn h2 namespace blue
            option splice-auto
            default_backend app
        backend app
            hash-type consistent
            server s1 127.0.0.1:80 send-proxy
        """)
        let used = Set(r.configuration?.unenforcedKeywords.map(\.keyword) ?? [])
        #expect(used == Set(NotEnforced.allCases), "missing: \(Set(NotEnforced.allCases).subtracting(used))")
        for k in NotEnforced.allCases {
            #expect(r.warnings.contains { $0.message == "'\(k.rawValue)' is accepted but not enforced yet" }, "\(k)")
        }
    }
}
