package io.blkstack.dm.snapshot;

import io.blkstack.bio.BioList;
import io.blkstack.bio.BioStatus;

/**
 * An exception being made (dm's {@code dm_snap_pending_exception}): the origin chunk, the COW chunk
 * reserved for it, and the bios waiting until its copy is committed. A snapshot preallocates
 * {@link Snapshot#PENDING_MAX} of them, so the number of copies in progress and the memory they
 * take are bounded; a bio that finds none free waits on the snapshot's queue for one.
 */
final class PendingException extends CopyJob {

    final Snapshot snapshot;
    long oldChunk = -1;
    long newChunk = -1;
    /** Bios that continue once the exception is committed (intrusive, no allocation). */
    final BioList waiters = new BioList();
    /** Copy finished; waits for the commit work. */
    boolean copied;
    /** Committed, but snapshot reads of the origin chunk are still in flight. */
    boolean waitingForReads;
    /** The link on the snapshot's free or commit list. */
    PendingException link;

    PendingException(Snapshot snapshot, int index, int chunkPages) {
        super(snapshot.name() + "#" + index, chunkPages);
        this.snapshot = snapshot;
    }

    /** Whether this exception is in use. */
    boolean inUse() {
        return oldChunk >= 0;
    }

    @Override
    protected void copyDone(BioStatus result) {
        snapshot.copyDone(this, result);
    }

    @Override
    public String toString() {
        return "pending exception " + oldChunk + " -> " + newChunk + " of snapshot " + snapshot.name();
    }
}
