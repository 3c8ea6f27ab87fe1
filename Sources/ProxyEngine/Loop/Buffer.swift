import ProxySystem

/// A fixed-size byte buffer: `tune.bufsize` bytes with a read and a write index.
/// Taken from a loop's `BufferPool` when bytes arrive and returned when the connection idles.
public final class Buffer {
    public let base: UnsafeMutableRawPointer
    public let capacity: Int
    /// Start of unread bytes.
    public var head = 0
    /// End of written bytes.
    public var tail = 0
    /// True while it sits in the pool: a second return is a bug, caught at once.
    var pooled = false

    init(capacity: Int) {
        self.capacity = capacity
        base = .allocate(byteCount: capacity, alignment: 16)
    }

    deinit { base.deallocate() }

    @inline(__always) public var count: Int { tail - head }
    @inline(__always) public var isEmpty: Bool { tail == head }
    @inline(__always) public var freeSpace: Int { capacity - tail }
    @inline(__always) public var readable: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base + head, count: tail - head) }
    @inline(__always) public var writePointer: UnsafeMutableRawPointer { base + tail }

    @inline(__always) public func clear() { head = 0; tail = 0 }

    /// Moves unread bytes to the start, to make room at the end.
    @inline(__always) public func compact() {
        if head == 0 { return }
        let n = tail - head
        if n > 0 { (base).copyMemory(from: base + head, byteCount: n) }
        head = 0
        tail = n
    }

    /// Appends bytes; returns false (appending nothing) when they do not fit.
    @inline(__always)
    public func append(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count <= capacity - tail else { return false }
        if bytes.count > 0 { (base + tail).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        tail += bytes.count
        return true
    }

    @inline(__always)
    public func append(_ bytes: [UInt8]) -> Bool { bytes.withUnsafeBytes { append($0) } }

    @inline(__always)
    public func append(_ s: StaticString) -> Bool {
        append(UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    @inline(__always)
    public func append(string s: String) -> Bool {
        var s = s
        return s.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    /// Appends a decimal number.
    @inline(__always)
    public func append(decimal value: Int) -> Bool {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        return withUnsafeMutableBytes(of: &digits) { raw in
            var v = value < 0 ? -value : value
            var i = raw.count
            repeat {
                i -= 1
                raw[i] = UInt8(0x30 + v % 10)
                v /= 10
            } while v > 0
            if value < 0 { i -= 1; raw[i] = 0x2d }
            return append(UnsafeRawBufferPointer(rebasing: raw[i...]))
        }
    }
}

/// Writes a message head into a buffer, piece by piece, and remembers whether every piece
/// fit: after the first that does not, nothing more is written, and `fits` is false. The
/// caller checks `fits` once, at the end, so no head goes out with a hole in it.
struct HeadWriter {
    let buffer: Buffer
    private(set) var fits = true

    init(_ buffer: Buffer) { self.buffer = buffer }

    @inline(__always) mutating func append(_ bytes: UnsafeRawBufferPointer) { if fits { fits = buffer.append(bytes) } }
    @inline(__always) mutating func append(_ bytes: [UInt8]) { if fits { fits = buffer.append(bytes) } }
    @inline(__always) mutating func append(_ s: StaticString) { if fits { fits = buffer.append(s) } }
    @inline(__always) mutating func append(string s: String) { if fits { fits = buffer.append(string: s) } }
    @inline(__always) mutating func append(decimal v: Int) { if fits { fits = buffer.append(decimal: v) } }
}

/// Buffers of one size, reused by one loop; steady state allocates nothing.
/// It keeps a bounded reserve: past it, buffers go back to the allocator, and the heap is
/// trimmed now and then, so a burst does not leave the process holding its peak memory.
public final class BufferPool {
    public let bufferSize: Int
    private var free: [Buffer] = []
    /// Buffers handed out and not yet returned.
    public private(set) var inUse = 0
    /// Free buffers kept for reuse.
    let reserve: Int
    /// Buffers released to the allocator since the last trim.
    private var released = 0

    public init(bufferSize: Int, reserve: Int = 128) {
        self.bufferSize = bufferSize
        self.reserve = reserve
        free.reserveCapacity(reserve)
    }

    /// Set when the last buffer in use came back: the loop went quiet.
    private var quiet = false
    /// False with `no-memory-trimming`: the pool still shrinks, the heap is never trimmed.
    public var trimsMemory = true
    /// A trim is owed (quiet, or many buffers released) and waits for `minimumTrimInterval`.
    private var trimOwed = false
    private var lastTrimMs: Int64 = .min / 2
    /// malloc_trim walks the whole heap: at most once a second, or it costs more than it saves
    /// (under close-mode load the pool empties between connections hundreds of times a second).
    static let minimumTrimInterval: Int64 = 1000

    /// Returns freed memory to the kernel after a burst, and when the loop goes quiet keeps
    /// only a small reserve, so a long-lived process does not hold its peak. Called by the loop
    /// before it waits; returns how many milliseconds it may sleep before an owed trim is due.
    public func trimIfNeeded(now: Int64) -> Int32? {
        if quiet || released >= 256 { quiet = false; trimOwed = true }
        guard trimOwed else { return nil }
        let due = lastTrimMs + Self.minimumTrimInterval
        if now < due { return Int32(due - now) }
        if inUse == 0 && free.count > 16 { free.removeLast(free.count - 16) }
        released = 0
        trimOwed = false
        lastTrimMs = now
        if trimsMemory { Memory.trim() }
        return nil
    }

    @inline(__always) public func take() -> Buffer {
        inUse += 1
        if let b = free.popLast() { b.clear(); b.pooled = false; return b }
        return Buffer(capacity: bufferSize)
    }

    @inline(__always) public func give(_ b: Buffer) {
        precondition(!b.pooled, "buffer returned to the pool twice")
        b.pooled = true
        inUse -= 1
        if inUse == 0 { quiet = true }
        if free.count < reserve { free.append(b) } else { released += 1 }
    }
}
