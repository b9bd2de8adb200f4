package io.blkstack.mem;

import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.WaitQueue;
import java.util.concurrent.atomic.AtomicLong;
import jdk.jfr.EventType;

/**
 * A reserve of {@code minNr} preallocated elements in front of an allocator: the kernel's
 * {@code mempool_t}, with its algorithm exactly.
 *
 * <p>{@link #alloc} tries, in order: (1) the underlying allocator without blocking and without
 * I/O; (2) an element from the reserve; (3) if the caller may block, the allocator once more with
 * the caller's full flags; (4) for a caller that may not block, null; (5) otherwise it registers on
 * the pool's wait queue <em>before</em> releasing the pool's lock (so a {@link #free} between the
 * two cannot be missed), sleeps for at most five seconds, and starts again from (1). {@link #free}
 * refills the reserve first and wakes the waiters.
 *
 * <p>Forward progress holds only if every element taken comes back without needing another element
 * of the same pool (rule 1 of DESIGN.md section 1): a task must never hold two unsubmitted
 * elements of one pool. The five-second retry does not save a pool whose elements are stuck: it
 * turns a deadlock into a livelock, which the checker reports as such.
 *
 * @param <T> the element type
 */
public final class Mempool<T> implements Component {

    /** How long a waiter sleeps before retrying, as {@code io_schedule_timeout(5*HZ)}. */
    public static final long RETRY_NANOS = 5_000_000_000L;

    /** The allocator behind the reserve. */
    public interface Allocator<T> {
        /** Allocates an element, or returns null; may block only if {@code gfp} allows. */
        T alloc(int gfp);

        /** Gives an element back for good. */
        void free(T element);

        /**
         * The arena pages {@code elements} of these take at most, for the arena's ledger (0 for
         * memory outside the arena).
         */
        default int pagesFor(int elements) {
            return 0;
        }
    }

    private final Kernel kernel;
    private final String name;
    private final String faultSite;
    private final int minNr;
    private final Allocator<T> allocator;
    private final Object[] reserve;
    /** JFR's handle on {@link MempoolReserveEvent}: asked before one is built, so no recording allocates nothing. */
    private final EventType reserveEvents = EventType.getEventType(MempoolReserveEvent.class);
    private final SpinLock lock;
    private final WaitQueue waiters;
    private final AtomicLong reserveUsed;
    private final AtomicLong waits;
    /** This pool's own waits (the kernel's counter sums every pool's), for {@code /metrics}. */
    private final AtomicLong poolWaits = new AtomicLong();
    private final AtomicLong outstanding = new AtomicLong();
    private volatile int currNr;
    private long changes;
    private boolean closed;
    /** The reserve's line in the arena's ledger, or null if its elements take no arena pages. */
    private final Reservation ledgerLine;

    /**
     * Creates the pool and fills its reserve with {@code minNr} elements allocated with
     * {@link Gfp#KERNEL}; throws if the memory is not there.
     */
    public Mempool(Kernel kernel, String name, int minNr, Allocator<T> allocator) {
        if (minNr < 0) {
            throw new IllegalArgumentException("mempool " + name + ": negative reserve " + minNr);
        }
        this.kernel = kernel;
        this.name = name;
        this.faultSite = "alloc:" + name;
        this.minNr = minNr;
        this.allocator = allocator;
        this.reserve = new Object[minNr];
        this.lock = new SpinLock("mempool " + name);
        this.waiters = new WaitQueue("mempool " + name);
        this.reserveUsed = kernel.counters().get("mempool.reserve-used");
        this.waits = kernel.counters().get("mempool.waits");
        for (int i = 0; i < minNr; i++) {
            T element = allocator.alloc(Gfp.KERNEL);
            if (element == null) {
                for (int j = 0; j < i; j++) {
                    allocator.free(element(j));
                }
                throw new IllegalStateException("mempool " + name + ": cannot preallocate reserve element " + (i + 1)
                        + " of " + minNr);
            }
            reserve[currNr++] = element;
        }
        int reservePages = allocator.pagesFor(minNr);
        this.ledgerLine = reservePages > 0 ? kernel.pages().record("mempool " + name, reservePages) : null;
        kernel.register(this);
    }

    /** Allocates an element following the five steps of the class comment; null only if {@code gfp} may not block. */
    public T alloc(int gfp) {
        Task self = Task.currentOrNull();
        int gfpMask = Gfp.effective(gfp, self) | Gfp.NORETRY;
        int gfpTemp = gfpMask & ~(Gfp.DIRECT_RECLAIM | Gfp.IO);
        boolean waitStarted = false;
        try {
            while (true) {
                T element = tryAllocator(gfpTemp);
                if (element != null) {
                    return taken(element);
                }
                lock.lock();
                if (currNr > 0) {
                    element = element(--currNr);
                    reserve[currNr] = null;
                    changes++;
                    int left = currNr;
                    lock.unlock();
                    reserveUsed.incrementAndGet();
                    recordReserveUse(left);
                    return taken(element);
                }
                if (gfpTemp != gfpMask) {
                    lock.unlock();
                    gfpTemp = gfpMask;
                    continue;
                }
                if (!Gfp.mayBlock(gfpMask)) {
                    lock.unlock();
                    return null;
                }
                // Step 5: register before unlocking, so a free() after the unlock wakes us.
                if (self == null) {
                    lock.unlock();
                    throw new IllegalStateException("mempool " + name + ": blocking allocation outside a kernel task");
                }
                waiters.prepareToWait(self);
                if (!waitStarted) {
                    // After registering: whoever sees the wait begin also finds this task queued.
                    waitStarted = self.beginWait(this, false);
                }
                lock.unlock();
                waits.incrementAndGet();
                poolWaits.incrementAndGet();
                self.sleep(this, RETRY_NANOS);
                waiters.finishWait(self);
            }
        } finally {
            if (self != null) {
                self.endWait(waitStarted);
            }
        }
    }

    /** JFR: a reserve element was given out, {@code left} remain (nothing is built unless a recording wants it). */
    private void recordReserveUse(int left) {
        if (!reserveEvents.isEnabled()) {
            return;
        }
        MempoolReserveEvent event = new MempoolReserveEvent();
        if (event.shouldCommit()) {
            event.pool = name;
            event.reserveLeft = left;
            event.reserveSize = reserve.length;
            event.commit();
        }
    }

    /** Returns an element: to the reserve while it is below {@code minNr}, else to the allocator. */
    public void free(T element) {
        if (element == null) {
            throw new IllegalArgumentException("mempool " + name + ": free of null");
        }
        if (outstanding.decrementAndGet() < 0) {
            outstanding.incrementAndGet();
            kernel.reportMisuse(Task.currentOrNull(), "mempool " + name + ": more frees than allocations");
            throw new IllegalStateException("mempool " + name + ": more frees than allocations (double free?)");
        }
        if (currNr < minNr) {
            lock.lock();
            if (currNr < minNr) {
                reserve[currNr++] = element;
                changes++;
                lock.unlock();
                waiters.wakeAll();
                return;
            }
            lock.unlock();
        }
        allocator.free(element);
    }

    private T tryAllocator(int gfp) {
        if (!Gfp.mayBlock(gfp) && kernel.faults().shouldFail(faultSite)) {
            return null;
        }
        return allocator.alloc(gfp);
    }

    private T taken(T element) {
        outstanding.incrementAndGet();
        return element;
    }

    @SuppressWarnings("unchecked")
    private T element(int i) {
        return (T) reserve[i];
    }

    @Override
    public String name() {
        return "mempool " + name;
    }

    /** The reserve's size. */
    public int minNr() {
        return minNr;
    }

    /** Elements in the reserve now. */
    public int reserveLevel() {
        return currNr;
    }

    /** How often a caller of this pool went to sleep waiting for an element. */
    public long waitCount() {
        return poolWaits.get();
    }

    /** Elements handed out and not yet freed. */
    public long outstanding() {
        return outstanding.get();
    }

    /** The tasks waiting for an element. */
    public java.util.List<Task> waiters() {
        return waiters.waiters();
    }

    @Override
    public String describeState() {
        return name() + ": reserve " + currNr + "/" + minNr + ", outstanding " + outstanding.get()
                + ", waiters " + waiters.waiters();
    }

    @Override
    public long fingerprint() {
        return changes * 31 + outstanding.get();
    }

    /** Frees the reserve; every element must have come back. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        kernel.unregister(this);
        if (ledgerLine != null) {
            ledgerLine.close();
        }
        long out = outstanding.get();
        while (currNr > 0) {
            T element = element(--currNr);
            reserve[currNr] = null;
            allocator.free(element);
        }
        if (out != 0) {
            kernel.reportMisuse(null, "mempool " + name + ": " + out + " element(s) not returned at close");
            throw new IllegalStateException("mempool " + name + ": " + out + " element(s) not returned at close");
        }
    }

    @Override
    public String toString() {
        return "mempool " + name;
    }
}
