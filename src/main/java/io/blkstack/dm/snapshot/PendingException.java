package io.blkstack.dm.snapshot;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioList;
import io.blkstack.bio.BioStatus;

/**
 * Exceptions being made (dm's {@code dm_snap_pending_exception}), for a run of adjacent origin
 * chunks at once: the first origin chunk, the first of as many adjacent COW chunks reserved for
 * them, and the bios waiting until the run's copy is committed. A snapshot preallocates
 * {@link Snapshot#PENDING_MAX} of them, so the number of runs in progress and the memory they take
 * are bounded; a bio that finds none free waits on the snapshot's queue for one.
 *
 * <p>A run is filled in one of two ways: copied from the origin by the snapshot's
 * {@link CopyService} (one job for the whole run; holes of the origin are zeroed, not read), or,
 * for a snapshot write that covers its one chunk completely, by that write itself
 * ({@link #fullWrite}: nothing of the old chunk is kept, so nothing is copied).
 */
final class PendingException extends CopyJob {

    final Snapshot snapshot;
    final String label;
    long oldChunk = -1;
    long newChunk = -1;
    /** Adjacent chunks in the run. */
    int chunkCount;
    /** Bios that continue once the exception is committed (intrusive, no allocation). */
    final BioList waiters = new BioList();
    /** The snapshot write that fills the chunk itself, or null for a copy. */
    Bio fullWrite;
    /** The mapped device's completion of {@link #fullWrite}, held back until the commit. */
    BioEndIo savedEndIo;
    /** Copy finished; waits for the commit work. */
    boolean copied;
    /** Committed, but snapshot reads of the origin chunks are still in flight. */
    boolean waitingForReads;
    /** The link on the snapshot's free, start or commit list. */
    PendingException link;

    PendingException(Snapshot snapshot, int index) {
        this.snapshot = snapshot;
        this.label = snapshot.name() + "#" + index;
    }

    /** Whether this exception is in use. */
    boolean inUse() {
        return oldChunk >= 0;
    }

    /** Whether origin chunk {@code chunk} is in this run. */
    boolean covers(long chunk) {
        return chunk >= oldChunk && chunk < oldChunk + chunkCount;
    }

    @Override
    protected void copyDone(BioStatus result) {
        snapshot.copyDone(this, result);
    }

    @Override
    public String toString() {
        return "pending exception " + oldChunk + (chunkCount > 1 ? ".." + (oldChunk + chunkCount - 1) : "") + " -> "
                + newChunk + (chunkCount > 1 ? ".." + (newChunk + chunkCount - 1) : "") + " of snapshot " + snapshot.name();
    }
}
