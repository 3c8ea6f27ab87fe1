import CProxySys
import Glibc

/// Starts a POSIX thread running `body`. The data loops are plain threads, one each.
public enum Threads {
    final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    @discardableResult
    public static func start(_ body: @escaping () -> Void) throws -> pthread_t {
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            throw SystemError("pthread_create", code: rc)
        }
        return thread
    }

    public static func join(_ thread: pthread_t) {
        pthread_join(thread, nil)
    }
}

/// Process memory.
public enum Memory {
    /// Gives free heap memory back to the kernel (after a burst of connections).
    public static func trim() { _ = cproxy_malloc_trim(0) }
    /// Keeps every thread's allocations in glibc's main arena (one event loop: its frees take
    /// the shortest path, and a second arena would only serve the control loop).
    public static func useOneArena() { _ = cproxy_malloc_arenas(1) }
}

extension Clock {
    /// CLOCK_MONOTONIC_COARSE in milliseconds: cheap, and fine for timeouts.
    @inline(__always)
    public static func coarseMilliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// Wall-clock time: seconds and microseconds since the epoch.
    public static func wallClock() -> (seconds: Int, microseconds: Int) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return (Int(ts.tv_sec), Int(ts.tv_nsec) / 1000)
    }
}
