package io.blkstack.sim.workload;

import io.blkstack.bio.Bio;
import java.util.Arrays;

/**
 * One workload task's writes since its last flush that made them durable, for a stack whose bottom
 * devices may lose acknowledged but unflushed writes ({@link DrivenStack#mayLoseUnflushed}: a remote
 * device whose server crashes). NBD, like a disk with a volatile cache, allows that loss; what it
 * does not allow is hiding it: the client must fail the next flush, and once a flush succeeded,
 * everything acknowledged before it must read back.
 *
 * <p>So between a task's write and its next flush, a read of a sector the task changed may return,
 * besides what the task last wrote there, what the sector held at the task's last good flush or the
 * data of any write the task made there since (a server that flushed for another client in
 * between, then crashed, keeps one of those): {@link #accepts}. After a flush that succeeded while
 * no flush failed anywhere since the window began, the model is strict again; after a flush that
 * failed, or when another task's flush failed (the device reports a loss to one flush only), the
 * changed sectors become unknown: {@link #flushed}. The caller applies this leniency only once a
 * loss has really happened in the run, so runs without one are checked exactly as before.
 *
 * <p>Sized once per task: a slice copy, per-sector flags and one record per operation.
 */
final class UnflushedWindow {

    private final SliceModel slice;
    /** What the slice read as at the task's last good flush (its stamps), where {@link #stableKnown}. */
    private final long[] stable;
    private final boolean[] stableKnown;
    /** Per sector: written, zeroed or discarded since the window began. */
    private final boolean[] changed;
    /** The writes of the window: stamp ({@link SliceModel#ZEROS} for write-zeroes), slice offset, size. */
    private final long[] stamps;
    private final long[] offsets;
    private final int[] sizes;
    private int count;
    private long flushFailuresAtStart;

    UnflushedWindow(SliceModel slice, int operationsMax) {
        this.slice = slice;
        this.stable = new long[slice.stamps.length];
        this.stableKnown = new boolean[slice.known.length];
        this.changed = new boolean[slice.known.length];
        this.stamps = new long[operationsMax];
        this.offsets = new long[operationsMax];
        this.sizes = new int[operationsMax];
    }

    /** A write (or, with {@code stamp} {@link SliceModel#ZEROS}, a write-zeroes or discard) over the range, whatever its status. */
    void record(long stamp, long offset, int size) {
        if (count == stamps.length) {
            throw new IllegalStateException("unflushed window of " + stamps.length + " operations is full");
        }
        stamps[count] = stamp;
        offsets[count] = offset;
        sizes[count] = size;
        count++;
        int first = (int) (offset / Bio.SECTOR_SIZE);
        Arrays.fill(changed, first, first + size / Bio.SECTOR_SIZE, true);
    }

    /** Whether the sector at slice offset {@code at} was changed in this window. */
    boolean changed(int at) {
        return changed[at / Bio.SECTOR_SIZE];
    }

    /** Whether {@code sector}, read at slice offset {@code at}, is a value a loss of this window's writes can leave. */
    boolean accepts(byte[] sector, int at) {
        int index = at / Bio.SECTOR_SIZE;
        if (!changed[index]) {
            return false;
        }
        if (!stableKnown[index] || slice.mismatch(sector, stable[index], at) < 0) {
            return true;
        }
        for (int i = 0; i < count; i++) {
            if (at < offsets[i] || at >= offsets[i] + sizes[i]) {
                continue;
            }
            if (slice.mismatch(sector, stamps[i], at) < 0) {
                return true;
            }
        }
        return false;
    }

    /**
     * A flush of the task ended; {@code flushFailures} counts every failed flush of the run so far
     * (this one included). Starts the next window: strict if it succeeded and nothing failed since
     * the window began, else with the changed sectors unknown.
     */
    void flushed(boolean ok, long flushFailures) {
        if (!ok || flushFailures != flushFailuresAtStart) {
            for (int i = 0; i < changed.length; i++) {
                if (changed[i]) {
                    slice.known[i] = false;
                }
            }
        }
        restart(flushFailures);
    }

    /** Starts a window from what the model says now (after a flush, or after a crash and restart). */
    void restart(long flushFailures) {
        System.arraycopy(slice.stamps, 0, stable, 0, stable.length);
        System.arraycopy(slice.known, 0, stableKnown, 0, stableKnown.length);
        Arrays.fill(changed, false);
        count = 0;
        flushFailuresAtStart = flushFailures;
    }
}
