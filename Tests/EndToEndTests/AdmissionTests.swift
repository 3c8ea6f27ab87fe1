import Foundation
import Testing

/// `Backend.admit()`: a server's `maxconn` holds with four threads and 200 clients at once,
/// the queue is first in, first out, a cancelled entry frees its place at once, and TCP
/// connections queue like HTTP requests.
@Suite(.serialized) struct Admission {
    func config(port: Int, backend: Int, maxconn: Int, extra: String = "", mode: String = "http") -> String {
        """
        global
            nbthread 4
        defaults
            mode \(mode)
            timeout connect 2s
            timeout client 30s
            timeout server 30s
        \(extra)
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server s1 127.0.0.1:\(backend) maxconn \(maxconn)

        """
    }

    /// 200 clients at once on a slow server with `maxconn 3`: never more than 3 in progress.
    @Test func twoHundredClientsNeverExceedMaxconn() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "slow")
        try bed.proxy(config(port: port, backend: b, maxconn: 3, extra: "    timeout queue 60s"), waitFor: port)
        let r = try Harness.run(Harness.which("python3")!, ["-c", """
        import socket, threading
        codes = []
        lock = threading.Lock()
        def one(i):
            s = socket.create_connection(('127.0.0.1', \(port)))
            s.settimeout(60)
            s.sendall(b'GET /slow?ms=20 HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n')
            data = b''
            while True:
                c = s.recv(4096)
                if not c: break
                data += c
            with lock: codes.append(data[9:12].decode())
        ts = [threading.Thread(target=one, args=(i,)) for i in range(200)]
        for t in ts: t.start()
        for t in ts: t.join()
        print(len(codes), sorted(set(codes)))
        """])
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "200 ['200']", "\(r.stdout) \(r.stderr)")
        let peak = TestBed.peak(b)
        #expect(peak >= 1 && peak <= 3, "the server had \(peak) requests at once; its maxconn is 3")
    }

    /// With `maxconn 1`, requests queued one after the other reach the server in that order,
    /// whichever of the four loops took each of them.
    @Test func theQueueIsFirstInFirstOut() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "fifo")
        try bed.proxy(config(port: port, backend: b, maxconn: 1, extra: "    timeout queue 60s"), waitFor: port)
        let r = try Harness.run(Harness.which("python3")!, ["-c", """
        import socket, threading, time
        def one(i, ms):
            s = socket.create_connection(('127.0.0.1', \(port)))
            s.settimeout(60)
            s.sendall(('GET /slow?ms=%d&id=%d HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n' % (ms, i)).encode())
            while s.recv(4096): pass
        ts = [threading.Thread(target=one, args=(0, 400))]
        ts[0].start(); time.sleep(0.1)
        for i in range(1, 16):
            t = threading.Thread(target=one, args=(i, 10)); t.start(); ts.append(t)
            time.sleep(0.02)
        for t in ts: t.join()
        """])
        #expect(r.status == 0, "\(r.stderr)")
        let order = TestBed.statsJSON(b)["order"] as? [Int] ?? []
        #expect(order == Array(0..<16), "arrival order at the server: \(order)")
        #expect(TestBed.peak(b) == 1)
    }

    /// A request that leaves the queue (its `timeout queue` passed) frees its place at once:
    /// with `maxqueue 2` full of requests that time out, the next one is queued, not
    /// refused with "queue full".
    @Test func aCancelledEntryFreesItsPlace() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "busy")
        try bed.proxy(config(port: port, backend: b, maxconn: 1, extra: "    timeout queue 300ms")
            .replacingOccurrences(of: "maxconn 1\n", with: "maxconn 1 maxqueue 2\n"), waitFor: port)
        let r = try Harness.run(Harness.which("python3")!, ["-c", """
        import socket, threading, time
        out = {}
        def one(name, path):
            start = time.time()
            s = socket.create_connection(('127.0.0.1', \(port)))
            s.settimeout(10)
            s.sendall(('GET %s HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n' % path).encode())
            data = b''
            while True:
                c = s.recv(4096)
                if not c: break
                data += c
            out[name] = (data[9:12].decode(), time.time() - start)
        busy = threading.Thread(target=one, args=('busy', '/slow?ms=1500')); busy.start(); time.sleep(0.1)
        queued = [threading.Thread(target=one, args=(n, '/')) for n in ('q1', 'q2')]
        for t in queued: t.start()
        time.sleep(0.1)
        one('full', '/')
        for t in queued: t.join()
        one('after', '/')
        busy.join()
        print(out['q1'][0], out['q2'][0], out['full'][0], '%.1f' % out['full'][1] if out['full'][1] < 0.2 else 'slow',
              out['after'][0], 'waited' if out['after'][1] > 0.25 else 'refused at once', out['busy'][0])
        """])
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "503 503 503 0.0 503 waited 200", "\(r.stdout) \(r.stderr)")
    }

    /// A TCP proxy in front of an echo server with one slot.
    func tcpEchoWithOneSlot(queueTimeout: String) throws -> (TestBed, Int) {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let echo = try bed.backend(name: "echo", kind: "echo")
        try bed.proxy(config(port: port, backend: echo, maxconn: 1, extra: "    timeout queue \(queueTimeout)", mode: "tcp"), waitFor: port)
        return (bed, port)
    }

    /// TCP connections queue too: with `maxconn 1`, a second connection is forwarded only
    /// once the first one ends.
    @Test func tcpConnectionsWaitForASlot() throws {
        let (bed, port) = try tcpEchoWithOneSlot(queueTimeout: "10s")
        defer { withExtendedLifetime(bed) {} }
        let r = try Harness.run(Harness.which("python3")!, ["-c", """
        import socket
        a = socket.create_connection(('127.0.0.1', \(port))); a.settimeout(5)
        a.sendall(b'first'); ra = a.recv(100).decode()
        b = socket.create_connection(('127.0.0.1', \(port))); b.settimeout(0.5)
        b.sendall(b'second')
        try:
            rb = b.recv(100).decode()
        except socket.timeout:
            rb = 'waiting'
        a.close(); b.settimeout(5)
        print(ra, rb, b.recv(100).decode())
        """])
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "first waiting second", "\(r.stdout) \(r.stderr)")
    }

    /// A TCP connection waits in the queue for `timeout queue` from when it first queued,
    /// then is closed.
    @Test func tcpQueueTimesOut() throws {
        let (bed, port) = try tcpEchoWithOneSlot(queueTimeout: "500ms")
        defer { withExtendedLifetime(bed) {} }
        let r = try Harness.run(Harness.which("python3")!, ["-c", """
        import socket, time
        a = socket.create_connection(('127.0.0.1', \(port))); a.settimeout(5)
        a.sendall(b'first'); a.recv(100)
        start = time.time()
        b = socket.create_connection(('127.0.0.1', \(port))); b.settimeout(5)
        b.sendall(b'second')
        try:
            got = b.recv(100)
        except ConnectionResetError:
            got = b''
        waited = time.time() - start
        print('closed' if got == b'' else got, 'in time' if 0.4 < waited < 2.5 else waited)
        """])
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "closed in time", "\(r.stdout) \(r.stderr)")
    }

    /// A queued request the balancer cannot place while some other server has room (a
    /// backup, while the normal server is merely full) waits without spinning.
    @Test func aWaitingRequestDoesNotSpin() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "slow")
        let spare = try bed.backend(name: "spare")
        let proxy = try bed.proxy(config(port: port, backend: b, maxconn: 1, extra: "    timeout queue 10s")
            .replacingOccurrences(of: "maxconn 1\n", with: "maxconn 1\n    server spare 127.0.0.1:\(spare) backup\n"), waitFor: port)
        let pid = proxy.processIdentifier
        func cpuTicks() -> Int {
            let stat = bed.read("/proc/\(pid)/stat")
            guard let close = stat.lastIndex(of: ")") else { return 0 }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
        }
        let load = try Harness.run(Harness.which("python3")!, ["-c", """
        import socket, threading, time
        def one(path, out):
            s = socket.create_connection(('127.0.0.1', \(port))); s.settimeout(10)
            s.sendall(('GET %s HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n' % path).encode())
            data = b''
            while True:
                c = s.recv(4096)
                if not c: break
                data += c
            out.append(data[9:12].decode())
        out = []
        a = threading.Thread(target=one, args=('/slow?ms=1500', out)); a.start(); time.sleep(0.2)
        one('/', out)
        a.join()
        print(sorted(out))
        """])
        #expect(load.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "['200', '200']", "\(load.stdout) \(load.stderr)")
        let ticks = cpuTicks()
        // 1.5 s of waiting: a spinning loop would burn over 100 ticks; an idle one a few.
        #expect(ticks < 60, "the proxy used \(ticks) ticks of CPU while a request waited")
    }
}
