import CProxySys
import Glibc

/// One ready event from `Epoll.wait`: its events and the registration's token.
public typealias EpollEvent = epoll_event

/// An epoll instance. Registrations carry a 64-bit token the loop maps back to its handler.
public struct Epoll: Sendable {
    public let fd: FileDescriptor

    public static let readable = UInt32(EPOLLIN.rawValue)
    public static let writable = UInt32(EPOLLOUT.rawValue)
    public static let readHangup = UInt32(EPOLLRDHUP.rawValue)
    public static let hangup = UInt32(EPOLLHUP.rawValue)
    public static let error = UInt32(EPOLLERR.rawValue)
    public static let edgeTriggered = UInt32(EPOLLET.rawValue)
    public static let exclusive = UInt32(EPOLLEXCLUSIVE.rawValue)

    public init() throws {
        let fd = try retryingOnInterrupt("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        self.fd = FileDescriptor(rawValue: fd)
    }

    public func add(_ target: FileDescriptor, events: UInt32, token: UInt64) throws {
        var ev = epoll_event()
        ev.events = events
        ev.data.u64 = token
        _ = try retryingOnInterrupt("epoll_ctl") { epoll_ctl(fd.rawValue, EPOLL_CTL_ADD, target.rawValue, &ev) }
    }

    public func modify(_ target: FileDescriptor, events: UInt32, token: UInt64) throws {
        var ev = epoll_event()
        ev.events = events
        ev.data.u64 = token
        _ = try retryingOnInterrupt("epoll_ctl") { epoll_ctl(fd.rawValue, EPOLL_CTL_MOD, target.rawValue, &ev) }
    }

    /// Removes a registration; a descriptor already closed is fine.
    public func remove(_ target: FileDescriptor) {
        var ev = epoll_event()
        _ = epoll_ctl(fd.rawValue, EPOLL_CTL_DEL, target.rawValue, &ev)
    }

    /// epoll_wait(2) into `events`; returns how many are ready (0 on EINTR or timeout). Any
    /// other error (EBADF, EINVAL, EFAULT) means the loop itself is broken: that traps at
    /// once with the errno, where returning 0 would spin silently.
    @inline(__always)
    public func wait(_ events: UnsafeMutablePointer<epoll_event>, capacity: Int32, timeoutMilliseconds: Int32) -> Int {
        let n = epoll_wait(fd.rawValue, events, capacity, timeoutMilliseconds)
        if n >= 0 { return Int(n) }
        let code = cproxy_errno()
        precondition(code == EINTR, "epoll_wait on fd \(fd.rawValue): \(SystemError("epoll_wait", code: code).reason)")
        return 0
    }
}

/// An eventfd used as a doorbell between threads.
public struct EventFD: Sendable {
    public let fd: FileDescriptor

    public init() throws {
        let fd = try retryingOnInterrupt("eventfd") { eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)) }
        self.fd = FileDescriptor(rawValue: fd)
    }

    /// Rings the bell (adds 1). It cannot fail short of a counter at 2^64-2, which a drained
    /// doorbell never reaches (EAGAIN then would mean it is ringing anyway).
    public func signal() {
        var one: UInt64 = 1
        _ = Glibc.write(fd.rawValue, &one, 8)
    }

    /// Clears the bell.
    public func drain() {
        var value: UInt64 = 0
        _ = Glibc.read(fd.rawValue, &value, 8)
    }
}

/// A signalfd for a fixed set of signals, which must be blocked in every thread.
public struct SignalFD: Sendable {
    public let fd: FileDescriptor

    /// Blocks `signals` in the calling thread (do it before starting threads) and opens a signalfd.
    public init(signals: [Int32]) throws {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let fd = try retryingOnInterrupt("signalfd") { signalfd(-1, &set, Int32(SFD_NONBLOCK | SFD_CLOEXEC)) }
        self.fd = FileDescriptor(rawValue: fd)
    }

    /// The next pending signal number, or nil.
    public func next() -> Int32? {
        var info = signalfd_siginfo()
        let n = Glibc.read(fd.rawValue, &info, MemoryLayout<signalfd_siginfo>.size)
        guard n == MemoryLayout<signalfd_siginfo>.size else { return nil }
        return Int32(info.ssi_signo)
    }
}
