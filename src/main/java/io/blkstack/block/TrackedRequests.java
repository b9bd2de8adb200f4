package io.blkstack.block;

import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.WaitQueue;

/**
 * The writes in flight on one device, by byte range, so that a read-modify-write never tears
 * against another write: qemu's "tracked requests" with "serialising requests" (block/io.c).
 *
 * <p>A write that is not aligned to the device's logical block size is served by reading the
 * partial blocks at its ends, merging the new bytes in, and writing whole blocks. Between that
 * read and that write, another write to the same blocks would be lost (the merge writes back the
 * old bytes), and two such merges on one block would each undo the other's bytes. So every write
 * (write, write zeroes, trim) registers its block-aligned range here before it touches the device
 * and stays until it completes; a read-modify-write registers as <em>serialising</em>. A request
 * waits for every earlier-registered overlapping request where either of the two is serialising;
 * plain aligned writes never wait for each other, so the common path costs one lock hold to enter
 * and one to leave.
 *
 * <p><b>Why it cannot deadlock.</b> A request only waits for requests registered before it, so
 * the waits follow registration order and can form no cycle. A caller registers before it takes
 * anything a registered request may need (payload budget, pages, bios: rule 1 of DESIGN.md
 * section 1 in spirit), so the earlier requests it waits for can always finish. {@link #end} never
 * blocks and may run in a bio completion (rule 2).
 *
 * <p><b>Lost requests.</b> A request whose owner met a fault of the code may never end (nobody
 * knows which of its bios are still out): its owner {@link #lose loses} it. It stays registered,
 * since a bio of it may still land, but nothing waits for it: a request that conflicts with a lost
 * one gives up ({@link #begin} returns false) and fails, so a bug fails the I/O that touches its
 * range instead of hanging it.
 *
 * <p>Entries are owned by the callers ({@link TrackedRequest}, one per in-flight slot) and linked
 * into an intrusive list, so tracking allocates nothing; the list is bounded by the callers'
 * in-flight bounds.
 */
public final class TrackedRequests {

    /** One tracked request: a caller-owned list node, reused request after request. */
    public static final class TrackedRequest {
        private final Object owner;
        private TrackedRequests list;
        private TrackedRequest prev;
        private TrackedRequest next;
        private long startBytes;
        private long endBytes;
        private boolean serialising;
        private boolean lost;

        /** @param owner what the request belongs to, for the watchdog's and the checker's wait-for explanations */
        public TrackedRequest(Object owner) {
            this.owner = owner;
        }

        @Override
        public String toString() {
            return (lost ? "lost " : "") + (serialising ? "serialising " : "") + "tracked request [" + startBytes + ", " + endBytes + ") of "
                    + owner;
        }
    }

    private final String name;
    private final SpinLock lock;
    private final WaitQueue waiters;
    private TrackedRequest head;
    private TrackedRequest tail;
    private int count;
    private int serialisingCount;

    /** @param name the device's name */
    public TrackedRequests(String name) {
        this.name = name;
        this.lock = new SpinLock(name + " tracked requests");
        this.waiters = new WaitQueue(name + " serialising requests");
    }

    /** What {@link #conflict} finds: no conflict, one with a live request, one with a lost request. */
    private static final int NONE = 0;
    private static final int LIVE = 1;
    private static final int LOST = 2;

    /**
     * Registers {@code request} for the bytes {@code [startBytes, endBytes)} and waits (a kernel
     * wait) until no earlier overlapping request conflicts with it.
     *
     * @param serialising whether this is a read-modify-write (waits for, and is waited for by,
     *     every overlapping request)
     * @return true once registered with no conflict left; false (not registered) if it conflicts
     *     with a {@link #lose lost} request, which may never end: the caller fails its request
     */
    public boolean begin(TrackedRequest request, long startBytes, long endBytes, boolean serialising) {
        if (request.list != null) {
            throw new IllegalStateException(name + ": " + request + " registered twice");
        }
        if (startBytes < 0 || endBytes < startBytes) {
            throw new IllegalArgumentException(name + ": tracked range [" + startBytes + ", " + endBytes + ")");
        }
        boolean mayWait;
        lock.lock();
        try {
            request.list = this;
            request.startBytes = startBytes;
            request.endBytes = endBytes;
            request.serialising = serialising;
            request.lost = false;
            request.next = null;
            request.prev = tail;
            if (tail == null) {
                head = request;
            } else {
                tail.next = request;
            }
            tail = request;
            count++;
            if (serialising) {
                serialisingCount++;
            }
            mayWait = serialising ? count > 1 : serialisingCount > 0;
        } finally {
            lock.unlock();
        }
        if (!mayWait) {
            return true;
        }
        waiters.waitEvent(() -> conflict(request) != LIVE, request);
        if (conflict(request) == LOST) {
            end(request);
            return false;
        }
        return true;
    }

    /**
     * Marks {@code request} lost to a fault (see the class comment) if it is registered here, and
     * wakes the requests waiting for it, which then give up; never blocks.
     */
    public void lose(TrackedRequest request) {
        lock.lock();
        try {
            if (request.list != this) {
                return;
            }
            request.lost = true;
        } finally {
            lock.unlock();
        }
        waiters.wakeAll();
    }

    /** Unregisters {@code request} and wakes the requests that may wait for it; never blocks. */
    public void end(TrackedRequest request) {
        lock.lock();
        try {
            if (request.list != this) {
                throw new IllegalStateException(name + ": " + request + " ended but not registered here");
            }
            if (request.prev == null) {
                head = request.next;
            } else {
                request.prev.next = request.next;
            }
            if (request.next == null) {
                tail = request.prev;
            } else {
                request.next.prev = request.prev;
            }
            request.prev = null;
            request.next = null;
            request.list = null;
            count--;
            if (request.serialising) {
                serialisingCount--;
            }
        } finally {
            lock.unlock();
        }
        waiters.wakeAll(); // one lock hold when nobody waits
    }

    /**
     * Whether a request registered before {@code request} overlaps it where either of them
     * serialises: {@link #LOST} if one such is lost, else {@link #LIVE} if there is one, else {@link #NONE}.
     */
    private int conflict(TrackedRequest request) {
        lock.lock();
        try {
            int found = NONE;
            for (TrackedRequest other = head; other != request; other = other.next) {
                if (other == null) {
                    throw new IllegalStateException(name + ": " + request + " is not in its list");
                }
                boolean overlaps = other.startBytes < request.endBytes && request.startBytes < other.endBytes;
                if (overlaps && (request.serialising || other.serialising)) {
                    if (other.lost) {
                        return LOST;
                    }
                    found = LIVE;
                }
            }
            return found;
        } finally {
            lock.unlock();
        }
    }

    /** Requests registered now (for tests and state dumps). */
    public int count() {
        lock.lock();
        try {
            return count;
        } finally {
            lock.unlock();
        }
    }

    @Override
    public String toString() {
        return name + " tracked requests (" + count() + ")";
    }
}
