/// Follows a chunked body as it streams through, byte for byte, to find where it ends and to
/// refuse a malformed chunk size. The bytes themselves are forwarded unchanged.
public struct ChunkedBodyTracker: Sendable {
    enum State: Sendable {
        case size, sizeExtension, sizeLF, data, dataCR, dataLF
        case trailerLineStart, trailerLine, trailerLF, finalLF, done
    }
    var state = State.size
    var remaining: UInt64 = 0
    var digits = 0

    public init() {}

    public var isDone: Bool { if case .done = state { return true } else { return false } }

    public enum Outcome: Equatable {
        /// All `count` bytes belong to the body; more are needed.
        case more
        /// The body ends after `count` bytes of the input.
        case ended(Int)
        case invalid(String)
    }

    /// Consumes bytes; returns where the body ends, or that more bytes are needed.
    public mutating func consume(_ p: UnsafeRawBufferPointer) -> Outcome {
        var i = 0
        let n = p.count
        while i < n {
            switch state {
            case .data:
                let take = Int(min(UInt64(n - i), remaining))
                remaining -= UInt64(take)
                i += take
                if remaining == 0 { state = .dataCR }
                continue
            default:
                break
            }
            let b = p[i]
            i += 1
            switch state {
            case .size:
                if let v = hexValue(b) {
                    digits += 1
                    if digits > 15 { return .invalid("chunk size too large") }
                    remaining = remaining << 4 | UInt64(v)
                } else if digits == 0 {
                    return .invalid("invalid chunk size")
                } else if b == 13 {
                    state = .sizeLF
                } else if b == 0x3b || b == 0x20 || b == 9 {
                    state = .sizeExtension
                } else {
                    return .invalid("invalid chunk size")
                }
            case .sizeExtension:
                if b == 13 { state = .sizeLF } else if b == 10 || (b < 0x20 && b != 9) { return .invalid("invalid chunk extension") }
            case .sizeLF:
                guard b == 10 else { return .invalid("missing LF after chunk size") }
                digits = 0
                if remaining == 0 { state = .trailerLineStart } else { state = .data }
            case .dataCR:
                guard b == 13 else { return .invalid("missing CRLF after chunk data") }
                state = .dataLF
            case .dataLF:
                guard b == 10 else { return .invalid("missing CRLF after chunk data") }
                state = .size
            case .trailerLineStart:
                if b == 13 { state = .finalLF } else if b == 10 { return .invalid("bare LF in trailers") } else { state = .trailerLine }
            case .trailerLine:
                if b == 13 { state = .trailerLF } else if b == 10 || (b < 0x20 && b != 9) { return .invalid("invalid trailer") }
            case .trailerLF:
                guard b == 10 else { return .invalid("bare CR in trailers") }
                state = .trailerLineStart
            case .finalLF:
                guard b == 10 else { return .invalid("missing final LF") }
                state = .done
                return .ended(i)
            case .data, .done:
                return .ended(i - 1)
            }
        }
        return .more
    }

    @inline(__always) func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x41...0x46: return b - 0x41 + 10
        case 0x61...0x66: return b - 0x61 + 10
        default: return nil
        }
    }
}
