import Glibc

/// Runs `body` on a second thread while the caller goes on; `join()` waits for it. A bare
/// pthread (Dispatch is not linked into baton: it would cost every start). Used to stat
/// thousands of inputs on both cores and to load the stat cache meanwhile, as git's
/// preloaded index does, and to store outputs in the cache beside the loop (`ThreadTask`).
final class Background: @unchecked Sendable {
    private var thread = pthread_t()
    private var started = false
    private let body: () -> Void

    init(_ body: @escaping () -> Void) {
        self.body = body
        let ctx = Unmanaged.passRetained(self).toOpaque()
        started = pthread_create(&thread, nil, { p in
            // Signals are the main thread's (its handlers, its self-pipe): never EINTR here.
            var all = sigset_t()
            sigfillset(&all)
            pthread_sigmask(SIG_BLOCK, &all, nil)
            let me = Unmanaged<Background>.fromOpaque(p!).takeRetainedValue()
            me.body()
            return nil
        }, ctx) == 0
        if !started {
            Unmanaged<Background>.fromOpaque(ctx).release()
            body()
        }
    }

    func join() {
        if started { pthread_join(thread, nil); started = false }
    }
}
