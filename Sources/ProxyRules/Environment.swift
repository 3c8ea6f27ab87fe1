/// A process environment as the config loader sees it: ordered NAME=VALUE pairs.
/// The loader edits it (`setenv` and friends) line by line; folding reads the final state.
public struct Environment: Sendable, Equatable {
    private var values: [String: String] = [:]
    private var order: [String] = []

    public init() {}

    public init(_ pairs: [(String, String)]) {
        for (name, value) in pairs { set(name, value) }
    }

    /// The value of NAME, or nil when unset.
    public subscript(name: String) -> String? { values[name] }

    public mutating func set(_ name: String, _ value: String) {
        if values.updateValue(value, forKey: name) == nil { order.append(name) }
    }

    public mutating func unset(_ name: String) {
        if values.removeValue(forKey: name) != nil { order.removeAll { $0 == name } }
    }

    /// Removes every variable except those in `keep` (HAProxy's `resetenv`).
    public mutating func reset(keeping keep: Set<String>) {
        for name in order where !keep.contains(name) { values[name] = nil }
        order.removeAll { !keep.contains($0) }
    }

    public var names: [String] { order }

    public var pairs: [(String, String)] { order.map { ($0, values[$0]!) } }
}

/// Reads an integer the way C's `atol` does: leading blanks, a sign, then digits.
public struct AtolReading: Equatable, Sendable {
    public var value: Int64
    /// True when the text had no digits, or characters after them.
    public var hadJunk: Bool
    /// True when the digits did not fit 64 bits (clamped).
    public var overflowed: Bool

    public init(_ text: String) {
        var bytes = Substring(text).utf8[...]
        while let b = bytes.first, b == 0x20 || (b >= 0x09 && b <= 0x0d) { bytes = bytes.dropFirst() }
        var negative = false
        if let b = bytes.first, b == UInt8(ascii: "+") || b == UInt8(ascii: "-") {
            negative = b == UInt8(ascii: "-")
            bytes = bytes.dropFirst()
        }
        var value: Int64 = 0
        var digits = 0
        var overflowed = false
        // Accumulate toward the sign, so that Int64.min reads without overflow.
        while let b = bytes.first, b >= 0x30 && b <= 0x39 {
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let digit = Int64(b - 0x30)
            let (s, o2) = negative ? m.subtractingReportingOverflow(digit) : m.addingReportingOverflow(digit)
            if o1 || o2 { overflowed = true } else if !overflowed { value = s }
            digits += 1
            bytes = bytes.dropFirst()
        }
        if overflowed { value = negative ? Int64.min : Int64.max }
        self.value = value
        self.overflowed = overflowed
        self.hadJunk = (digits == 0 && !text.isEmpty) || !bytes.isEmpty
    }
}

/// HAProxy's string-to-integer cast: an optional sign and leading digits, stopping at the
/// first non-digit; no leading blanks. `" 1"` reads as 0, `"2x"` as 2.
@inlinable
public func castToInteger<C: Collection>(_ bytes: C) -> Int64 where C.Element == UInt8 {
    var it = bytes.makeIterator()
    var value: Int64 = 0
    var negative = false
    var first = true
    while let b = it.next() {
        if first {
            first = false
            if b == UInt8(ascii: "-") { negative = true; continue }
            if b == UInt8(ascii: "+") { continue }
        }
        guard b >= 0x30 && b <= 0x39 else { break }
        let (m, o1) = value.multipliedReportingOverflow(by: 10)
        let (s, o2) = m.addingReportingOverflow(Int64(b - 0x30))
        if o1 || o2 { return negative ? Int64.min : Int64.max }
        value = s
    }
    return negative ? -value : value
}

extension String {
    /// Decodes a NUL-terminated C character buffer.
    public init(cChars buffer: [CChar]) {
        let end = buffer.firstIndex(of: 0) ?? buffer.count
        self = String(decoding: buffer[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
