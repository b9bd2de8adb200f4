package io.blkstack.dm.thin;

import io.blkstack.kernel.SpinLock;

/**
 * Counts the pool's data I/O in flight by generation, so that a data block freed by a discard
 * (or a delete, or a broken share) goes back to the allocator only after every I/O that could
 * still touch it has ended: dm-thin's {@code all_io_ds}, a {@code dm_deferred_set}.
 *
 * <p>Every clone the thin target maps {@link #enter enters} the current generation before it
 * reads its block's mapping, and {@link #leave leaves} in the target's end-io. A caller that has
 * just unmapped blocks takes a {@link #barrier}: the generation of every I/O that entered before
 * it. Once that generation has {@link #passed}, no I/O that could have read the old mapping is in
 * flight, so the blocks may be reused. The argument: an I/O that entered after the barrier did so
 * under this lock after the unmapping (which the caller did before taking the barrier), so it
 * reads the new mapping.
 *
 * <p>The wait this causes has an end: it is for I/O already submitted, each of which ends (a
 * READ held by reference ends when its payload was sent, or when the reply timeout cuts the
 * connection). A barrier starts a new generation so that I/O entering later does not hold it up;
 * the ring of {@link #GENERATIONS} counters is full only while that many barriers wait, and then
 * a new barrier shares the newest generation and the next {@link #leave} that frees a counter
 * starts a new one, so no barrier waits on I/O that keeps arriving.
 *
 * <p>Never blocks and never allocates: {@code enter} and {@code leave} run on the map and
 * completion paths (atomic context).
 */
final class DeferredSet {

    /** Generations that can be counted at once (dm's {@code DEFERRED_SET_SIZE}). */
    static final int GENERATIONS = 64;

    private final SpinLock lock;
    private final int[] counts = new int[GENERATIONS];
    /** The generation new I/O joins. */
    private long current;
    /** The oldest generation that may still have I/O in flight ({@code <= current}). */
    private long oldest;
    /** A barrier had to share {@link #current} (ring full): start a new generation when one frees. */
    private boolean advanceWanted;

    DeferredSet(String name) {
        this.lock = new SpinLock(name + " in-flight I/O");
    }

    /** Counts one I/O into the current generation; returns the generation to give {@link #leave}. */
    long enter() {
        lock.lock();
        try {
            counts[slot(current)]++;
            return current;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Ends one I/O of {@code generation}. Returns true if that let the oldest generation move on,
     * so a waiting barrier may have passed.
     */
    boolean leave(long generation) {
        lock.lock();
        try {
            int s = slot(generation);
            if (generation < oldest || generation > current || counts[s] == 0) {
                throw new IllegalStateException("in-flight I/O of generation " + generation + " left twice or never entered ("
                        + describeLocked() + ")");
            }
            counts[s]--;
            long before = oldest;
            while (oldest < current && counts[slot(oldest)] == 0) {
                oldest++;
            }
            if (advanceWanted && current - oldest < GENERATIONS - 1) {
                current++;
                advanceWanted = false;
            }
            return oldest != before || (oldest == current && counts[slot(current)] == 0);
        } finally {
            lock.unlock();
        }
    }

    /**
     * A barrier after the caller's unmapping: the generation that must pass before what it
     * unmapped may be reused, or -1 if no I/O is in flight at all (it has passed already).
     */
    long barrier() {
        lock.lock();
        try {
            if (oldest == current && counts[slot(current)] == 0) {
                return -1;
            }
            long generation = current;
            if (current - oldest < GENERATIONS - 1) {
                current++;
            } else {
                advanceWanted = true;
            }
            return generation;
        } finally {
            lock.unlock();
        }
    }

    /** Whether every I/O of {@code generation} and older has ended. */
    boolean passed(long generation) {
        if (generation < 0) {
            return true;
        }
        lock.lock();
        try {
            return generation < oldest || (oldest == current && counts[slot(current)] == 0);
        } finally {
            lock.unlock();
        }
    }

    /** I/O in flight over all generations. */
    int inFlight() {
        lock.lock();
        try {
            return inFlightLocked();
        } finally {
            lock.unlock();
        }
    }

    private int inFlightLocked() {
        int n = 0;
        for (long g = oldest; g <= current; g++) {
            n += counts[slot(g)];
        }
        return n;
    }

    private static int slot(long generation) {
        return (int) (generation % GENERATIONS);
    }

    private String describeLocked() {
        return "generations " + oldest + ".." + current + ", " + inFlightLocked() + " I/O in flight";
    }

    @Override
    public String toString() {
        lock.lock();
        try {
            return describeLocked();
        } finally {
            lock.unlock();
        }
    }
}
