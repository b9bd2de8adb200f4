package io.blkstack.nbd;

import io.blkstack.block.TrackedRequests;
import io.blkstack.kernel.Plug;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.WaitQueue;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;
import java.util.function.Consumer;

/**
 * A connection's in-flight slots and its reply ring: the two hand-overs between its tasks.
 *
 * <p><b>Slots.</b> The per-connection in-flight bound: the reader {@link #take takes} a slot per
 * request (waiting when all are in use), the writer {@link #giveBack gives it back} once the reply
 * is sent. A slot's {@link NbdRequest} is built on its first use and kept, so an idle connection
 * costs a few KiB, not a full set of requests, and nothing is allocated per request.
 *
 * <p><b>Reply ring.</b> A request's last completion {@link #replyReady queues} it here and wakes
 * the writer; it never blocks (rule 2 of DESIGN.md section 1) and cannot overflow, since the ring
 * holds as many entries as there are slots. The writer {@link #popReplies pops} a batch at a time.
 *
 * <p><b>Lost slots.</b> A request whose task met a fault of the code (a RuntimeException from a
 * target or from the server) while it held the request is {@link #lose lost}: nobody knows which
 * of its bios are still out, so it may never come back. The writer then ends when every slot in
 * use is lost ({@link #settled}) instead of waiting for ever; the connection is already broken
 * ({@link NbdConnection#fault}), and a lost request that does come back later is freed as usual
 * (by whoever completes it, once the writer has ended: {@link #endReplies}). A request that waited
 * past the request timeout is lost the same way ({@link #loseOverdue}). Once the
 * connection is broken, the reader's waits for a slot end too ({@link #take} returns null).
 */
final class RequestSlots {

    private final NbdConnection connection;
    private final String name;
    private final int biosMax;
    private final int extentsMax;

    private final NbdRequest[] requests;
    private final int[] freeSlots;
    private int freeCount;
    private final SpinLock slotLock;
    private final WaitQueue slotWait;
    private final AtomicInteger inUse = new AtomicInteger();
    /** Slots in use whose request was lost to a fault (guarded by {@link #slotLock} for writes). */
    private final AtomicInteger lost = new AtomicInteger();
    private final BooleanSupplier slotAvailable;
    /** Whether at most one request is in flight (the reader's own), and whether none is; or the connection broke. */
    private final BooleanSupplier onlyOne;
    private final BooleanSupplier none;

    private final NbdRequest[] ring;
    private int ringHead;
    private int ringCount;
    private final SpinLock ringLock;
    private final WaitQueue writerWait;
    /** The reader whose own completions defer the writer's wake-up ({@link #holdWakeupsOf}), or null. */
    private volatile Task reader;
    private final Plug.Kickable writerKick = this::kickWriter;
    /**
     * Once the writer has ended ({@link #endReplies}): frees a request that comes back after all,
     * in place of queueing it; null before. Guarded by {@link #ringLock}.
     */
    private Consumer<NbdRequest> lateRelease;

    RequestSlots(NbdConnection connection, String name, int inFlightMax, int biosMax, int extentsMax) {
        if (inFlightMax < 1) {
            throw new IllegalArgumentException("connection " + name + ": in-flight bound " + inFlightMax + " < 1");
        }
        this.connection = connection;
        this.name = name;
        this.biosMax = biosMax;
        this.extentsMax = extentsMax;
        this.requests = new NbdRequest[inFlightMax];
        this.freeSlots = new int[inFlightMax];
        for (int i = 0; i < inFlightMax; i++) {
            freeSlots[i] = inFlightMax - 1 - i;
        }
        this.freeCount = inFlightMax;
        this.slotAvailable = () -> inUse.get() < inFlightMax || connection.broken;
        this.onlyOne = () -> inUse.get() <= 1 || connection.broken;
        this.none = () -> inUse.get() == 0 || connection.broken;
        this.slotLock = new SpinLock(name + " slots");
        this.slotWait = new WaitQueue(name + " in-flight bound");
        this.ring = new NbdRequest[inFlightMax];
        this.ringLock = new SpinLock(name + " replies");
        this.writerWait = new WaitQueue(name + " replies");
    }

    /** Requests taken and not yet given back. */
    int inUse() {
        return inUse.get();
    }

    /** Requests taken, not given back, and lost to a fault ({@link #lose}). */
    int lost() {
        return lost.get();
    }

    /** Whether every request in flight is lost: nothing the writer waits for can still come. */
    boolean settled() {
        return inUse.get() == lost.get();
    }

    /** The slots' requests (null where a slot was never used), for descriptions. */
    NbdRequest[] requests() {
        return requests;
    }

    /** Waits for a free in-flight slot (the per-connection bound) and takes it; null once the connection broke. */
    NbdRequest take() {
        slotWait.waitEvent(slotAvailable, connection);
        int slot;
        NbdRequest r;
        slotLock.lock();
        try {
            if (connection.broken) {
                return null;
            }
            if (freeCount == 0) {
                throw new IllegalStateException(name + ": no free slot although " + inUse.get() + " of "
                        + requests.length + " are in use");
            }
            inUse.incrementAndGet();
            slot = freeSlots[--freeCount];
            r = requests[slot];
            if (r != null) {
                r.taken = true;
                r.timedSinceNanos = NbdRequest.UNTIMED; // until its header is read
            }
        } finally {
            slotLock.unlock();
        }
        if (r == null) {
            // First use of this slot: built once, kept for the connection's life (bounded by the
            // slots). Only the reader takes slots, and a request reaches the writer through the
            // reply ring's lock, so the writer sees it built, and taken.
            r = new NbdRequest(connection, slot, biosMax, extentsMax);
            r.taken = true;
            requests[slot] = r;
        }
        return r;
    }

    /**
     * Waits until at most {@code n} (0 or 1) requests are in flight: every other one replied to and
     * its slot given back. The reader, for a READ that must have the wire to itself; it waits as
     * it does for a slot (a non-idle wait that {@link #giveBack} ends).
     */
    void awaitInUseAtMost(int n) {
        if (n != 0 && n != 1) {
            throw new IllegalArgumentException(name + ": awaitInUseAtMost(" + n + ")");
        }
        slotWait.waitEvent(n == 0 ? none : onlyOne, connection);
    }

    /**
     * Returns a slot and wakes the reader (waiting for a slot) and, once the reader has ended, the
     * writer (waiting for the last slot to finish); before that the writer has no use for a slot.
     */
    void giveBack(NbdRequest r) {
        slotLock.lock();
        try {
            freeSlots[freeCount++] = r.slot;
            r.taken = false;
            if (r.lost) {
                r.lost = false; // a lost request came back after all: freed as any other
                lost.decrementAndGet();
            }
            inUse.decrementAndGet();
        } finally {
            slotLock.unlock();
        }
        slotWait.wakeOne();
        if (connection.readerDone) {
            writerWait.wakeOne();
        }
    }

    /**
     * Counts {@code r} as lost to a fault (see the class comment) if it is still taken and not
     * counted already; wakes the writer, which may now be settled. Never blocks.
     */
    void lose(NbdRequest r) {
        slotLock.lock();
        try {
            if (!r.taken || r.lost) {
                return;
            }
            r.lost = true;
            lost.incrementAndGet();
        } finally {
            slotLock.unlock();
        }
        lost(r);
    }

    /** What follows a request's loss: writes to its range stop waiting for it, the writer looks again. */
    private void lost(NbdRequest r) {
        TrackedRequests tracker = r.tracker;
        if (tracker != null) {
            tracker.lose(r.tracked); // later writes to its range fail instead of waiting for it
        }
        writerWait.wakeAll();
    }

    /**
     * Loses the request the request timeout watches longest (see {@link NbdRequest#timedSinceNanos})
     * if it has been watched since {@code cutoffNanos} or before, and returns it; null if not. The
     * connection is marked broken in the same lock hold, so that once the request comes back and
     * its slot is given back, the reader cannot take that slot again ({@link #take} looks under this
     * lock). The request timer's call: never blocks.
     */
    NbdRequest loseOverdue(long cutoffNanos) {
        NbdRequest overdue;
        slotLock.lock();
        try {
            overdue = oldestTimedLocked();
            if (overdue == null || overdue.timedSinceNanos > cutoffNanos) {
                return null;
            }
            overdue.lost = true;
            lost.incrementAndGet();
            connection.broken = true;
        } finally {
            slotLock.unlock();
        }
        lost(overdue);
        return overdue;
    }

    /** The request the request timeout watches longest (taken, not lost, timed), or null. */
    NbdRequest oldestTimed() {
        slotLock.lock();
        try {
            return oldestTimedLocked();
        } finally {
            slotLock.unlock();
        }
    }

    /** {@link #oldestTimed}, the caller holding the slots' lock. */
    private NbdRequest oldestTimedLocked() {
        NbdRequest oldest = null;
        long oldestSince = NbdRequest.UNTIMED;
        for (NbdRequest r : requests) {
            long since = r == null ? NbdRequest.UNTIMED : r.timedSinceNanos;
            if (since != NbdRequest.UNTIMED && r.taken && !r.lost && (oldest == null || since < oldestSince)) {
                oldest = r;
                oldestSince = since;
            }
        }
        return oldest;
    }

    /**
     * A WRITE window that is not the request's last has completed: true if the reader frees it and
     * goes on (the request timeout stops watching it until its next window), false if the request was lost
     * meanwhile, when the writer frees it instead. Decided under the slots' lock, so that the
     * request timer cannot lose a window the reader already owns. Never blocks.
     */
    boolean windowToReader(NbdRequest r) {
        slotLock.lock();
        try {
            if (r.lost) {
                return false;
            }
            r.timedSinceNanos = NbdRequest.UNTIMED;
            return true;
        } finally {
            slotLock.unlock();
        }
    }

    /**
     * Whether the reader still owns {@code r} after a window: it is taken and not lost. False once
     * it was lost, and once the writer gave its slot back (it ended the request: a READ that failed,
     * or a lost window that came back); only the reader takes slots, so it cannot be taken again.
     */
    boolean ownsWindow(NbdRequest r) {
        slotLock.lock();
        try {
            return r.taken && !r.lost;
        } finally {
            slotLock.unlock();
        }
    }

    /** Whether {@code r} is lost to a fault. */
    boolean isLost(NbdRequest r) {
        slotLock.lock();
        try {
            return r.lost;
        } finally {
            slotLock.unlock();
        }
    }

    /** The lost requests' budget pages (held for good unless they come back), for the log. */
    long lostBudgetPages() {
        long pages = 0;
        slotLock.lock();
        try {
            for (NbdRequest r : requests) {
                if (r != null && r.lost) {
                    pages += r.budgetPages;
                }
            }
        } finally {
            slotLock.unlock();
        }
        return pages;
    }

    /** Wakes the reader's slot waits and the writer: the connection broke ({@link NbdConnection#fault}). */
    void wakeAll() {
        slotWait.wakeAll();
        writerWait.wakeAll();
    }

    /**
     * Holds back the writer's wake-up for replies that {@code reader}'s own completions queue (its
     * direct-issued READs): they go on the reader's plug, which wakes the writer only if replies
     * are still waiting when the plug flushes (before every read from the transport, after the
     * reader sent what it could, and before any sleep). Set once, by the reader, before its first
     * request.
     */
    void holdWakeupsOf(Task reader) {
        this.reader = reader;
    }

    /** The plug's kick: wakes the writer if the reader left replies for it. */
    private void kickWriter(int queued) {
        if (hasReplies()) {
            writerWait.wakeOne();
        }
    }

    /**
     * Queues a finished request for the writer; called from completions, never blocks. Once the
     * writer has ended (only lost requests were left), a request that comes back is freed here.
     */
    void replyReady(NbdRequest r) {
        r.timedSinceNanos = NbdRequest.UNTIMED;
        Consumer<NbdRequest> late;
        ringLock.lock();
        try {
            late = lateRelease;
            if (late == null) {
                if (ringCount == ring.length) {
                    throw new IllegalStateException(name + ": reply ring full (" + ringCount + ") at " + r);
                }
                ring[(ringHead + ringCount) % ring.length] = r;
                ringCount++;
            }
        } finally {
            ringLock.unlock();
        }
        if (late != null) {
            late.accept(r);
            return;
        }
        Task reader = this.reader;
        if (reader != null && Task.currentOrNull() == reader && reader.plug().defer(writerKick)) {
            return;
        }
        writerWait.wakeOne();
    }

    /** Whether a finished request waits for the writer. */
    boolean hasReplies() {
        ringLock.lock();
        try {
            return ringCount > 0;
        } finally {
            ringLock.unlock();
        }
    }

    /** The writer waits here until {@code hasWork} holds (as an idle task: it owes nothing while it waits). */
    void awaitWriterWork(BooleanSupplier hasWork, Object what) {
        writerWait.waitEventTimeout(hasWork, what, -1, true);
    }

    /** Wakes every task waiting for the writer's work (the writer alone waits there): the reader has ended, or handed it a batch. */
    void wakeWriter() {
        writerWait.wakeAll();
    }

    /**
     * The writer ends: from now on a request that comes back (one lost to a fault or to the request
     * timeout) is freed by {@code release}, on the task that completes it. The caller then pops
     * and frees what was queued before this call.
     */
    void endReplies(Consumer<NbdRequest> release) {
        ringLock.lock();
        try {
            lateRelease = release;
        } finally {
            ringLock.unlock();
        }
    }

    /** Moves up to {@code batch.length} finished requests from the ring into {@code batch}; returns how many. */
    int popReplies(NbdRequest[] batch) {
        ringLock.lock();
        try {
            int n = Math.min(ringCount, batch.length);
            for (int i = 0; i < n; i++) {
                batch[i] = ring[ringHead];
                ring[ringHead] = null;
                ringHead = (ringHead + 1) % ring.length;
            }
            ringCount -= n;
            return n;
        } finally {
            ringLock.unlock();
        }
    }
}
