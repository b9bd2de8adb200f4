package io.blkstack.dm.snapshot;

/**
 * The snapshot target's per-bio data (dm-snapshot's {@code dm_snap_tracked_chunk}): which origin
 * chunk a snapshot read of the origin is tracked on, so the pending exception of that chunk does
 * not let origin writes overtake it. Created once per clone object and reused.
 */
public final class SnapshotBioState {

    long trackedChunk = -1;

    /** A state tracking nothing. */
    public SnapshotBioState() {
    }
}
