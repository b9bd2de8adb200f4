package io.blkstack.dm.snapshot;

/**
 * The snapshot target's per-bio data (dm-snapshot's {@code dm_snap_tracked_chunk}): which origin
 * chunk a snapshot read of the origin is tracked on, so a new exception of that chunk does not let
 * origin writes overtake it, and the links of the snapshot's per-bucket list of tracked reads
 * (intrusive: tracking allocates nothing). A snapshot write that fills a whole chunk points at its
 * pending exception. Created once per clone object and reused.
 */
public final class SnapshotBioState {

    long trackedChunk = -1;
    SnapshotBioState trackPrev;
    SnapshotBioState trackNext;
    PendingException fullWrite;

    /** A state tracking nothing. */
    public SnapshotBioState() {
    }
}
