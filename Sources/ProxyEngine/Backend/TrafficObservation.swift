import ProxyConfig
import Synchronization

/// What a server's traffic showed (`observe`), in HAProxy's words, and whether it counts as
/// an error, a success or nothing at each layer.
enum ObservedOutcome {
    case connected, connectFailed
    case goodResponse, wrongStatus, invalidHeaders, readError, readTimeout, brokenPipe

    var text: String {
        switch self {
        case .connected: return "L4 successful connection"
        case .connectFailed: return "L4 unsuccessful connection"
        case .goodResponse: return "Correct http response"
        case .wrongStatus: return "Wrong http response"
        case .invalidHeaders: return "Invalid http response (headers)"
        case .readError: return "Read error (http)"
        case .readTimeout: return "Read timeout (http)"
        case .brokenPipe: return "Connection closed (http)"
        }
    }

    /// true: an error; false: a success (the count starts again); nil: not counted.
    func isError(at layer: ObservedLayer) -> Bool? {
        switch (self, layer) {
        case (.connectFailed, _): return true
        case (.connected, .layer4): return false
        case (.connected, .layer7): return nil
        case (_, .layer4): return nil
        case (.goodResponse, .layer7): return false
        default: return true
        }
    }

    /// Whether a response status is good for `observe layer7`: 100 to 499, 501 and 505.
    static func goodStatus(_ status: Int) -> Bool { (100...499).contains(status) || status == 501 || status == 505 }
}

extension Server {
    /// Whether its traffic counts as health (`observe`): the hot paths test this before
    /// they call `observed`, so that a server nobody observes costs a load and a branch.
    @inline(__always)
    var observes: Bool { observedLayer != nil }

    /// Notes an outcome of this server's traffic (`observe`). Out of line: the paths that
    /// call it stay small.
    @inline(never)
    func observed(_ outcome: ObservedOutcome) {
        guard let layer = observedLayer, let error = outcome.isError(at: layer) else { return }
        guard error else {
            if consecutiveErrors.load(ordering: .relaxed) != 0 { consecutiveErrors.store(0, ordering: .relaxed) }
            return
        }
        let n = consecutiveErrors.wrappingAdd(1, ordering: .relaxed).newValue
        guard n >= definition.options.errorLimit else { return }
        // One loop wins the reset and sets off `on-error`; the others' errors count anew.
        guard consecutiveErrors.compareExchange(expected: n, desired: 0, ordering: .relaxed).exchanged else { return }
        onObservedErrors?("Detected \(n) consecutive errors, last one was: \(outcome.text)")
    }
}
