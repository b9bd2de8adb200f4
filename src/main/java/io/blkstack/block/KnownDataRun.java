package io.blkstack.block;

import java.util.concurrent.atomic.AtomicLong;

/**
 * The last run of a file that the file system said is data, so that a READ inside it needs no
 * {@code fstat} and {@code lseek(SEEK_HOLE)} ({@link FileDevice#allocatedExtent}): on a file that is
 * all data, every READ asked both before, two system calls per request that nbdkit and qemu-nbd
 * do not make.
 *
 * <p><b>Why a remembered run stays true.</b> Data becomes a hole only where the device punches one
 * (a file device's file is locked against other writers), and a file only grows. So a run is kept
 * with the {@linkplain #epoch punch epoch} read before the {@code lseek} that found it, and counts
 * only while no punch has ended since ({@link #punched} after each one). A run found while a punch
 * is under way may say data where the punch has just made a hole; the answer to a READ racing a
 * DISCARD of the same range may go either way anyway, and data over a hole reads as zeros, so the
 * worst case is a data chunk of zeros where a hole chunk would do. Only data is remembered, never
 * a hole: a write fills holes without telling this.
 *
 * <p>Lock-free: a remembering task takes the odd value of a sequence number (and skips if another
 * holds it: this is only a cache); a reader takes the three fields between two equal even values
 * of it, else treats it as a miss. Nothing here waits or allocates.
 */
final class KnownDataRun {

    private final AtomicLong sequence = new AtomicLong();
    private final AtomicLong punchEpoch = new AtomicLong();
    private volatile long start;
    private volatile long end;
    private volatile long epoch = -1;

    /** The punch epoch: read it before asking the file system, pass it to {@link #remember}. */
    long epoch() {
        return punchEpoch.get();
    }

    /** A punch has ended: every run remembered before it no longer counts. */
    void punched() {
        punchEpoch.incrementAndGet();
    }

    /**
     * Remembers that {@code [from, to)} was data when the file system was asked in punch epoch
     * {@code asked}; joined with the remembered run if that one is of the same epoch and touches it
     * (random READs over a file of data then soon find the whole file remembered).
     */
    void remember(long from, long to, long asked) {
        long s = sequence.get();
        if ((s & 1) != 0 || !sequence.compareAndSet(s, s + 1)) {
            return; // another task is remembering a run: keep that one
        }
        if (epoch == asked && from <= end && to >= start) {
            start = Math.min(start, from);
            end = Math.max(end, to);
        } else {
            start = from;
            end = to;
            epoch = asked;
        }
        sequence.set(s + 2);
    }

    /**
     * The end of the remembered run if it covers {@code position} and no punch has ended since it
     * was found; else -1 (then ask the file system).
     */
    long endOfDataAt(long position) {
        long before = sequence.get();
        long from = start;
        long to = end;
        long found = epoch;
        if ((before & 1) != 0 || sequence.get() != before || found != punchEpoch.get()) {
            return -1;
        }
        return position >= from && position < to ? to : -1;
    }
}
