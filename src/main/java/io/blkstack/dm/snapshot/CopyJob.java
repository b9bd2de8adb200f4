package io.blkstack.dm.snapshot;

import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;

/**
 * One region copy for the {@link CopyService} (a kcopyd job): source and destination ranges, whether
 * holes of the source may be zeroed instead of copied, and the service's bookkeeping while it runs.
 * The owner allocates jobs up front and reuses them, so the service's queues are bounded by the
 * jobs in existence and copying allocates no objects.
 */
public abstract class CopyJob {

    BlockDevice source;
    long sourceSector;
    BlockDevice destination;
    long destinationSector;
    int sectors;
    /** Whether a piece whose source range is a hole becomes a WRITE_ZEROES of the destination. */
    boolean skipHoles;

    // The service's state while the job runs (guarded by the service's lock).
    CopyJob next;
    /** Sectors handed out to pieces so far. */
    int assignedSectors;
    /** Pieces handed out and not finished. */
    int piecesInFlight;
    BioStatus status = BioStatus.OK;

    /** A job; its ranges are set before each copy. */
    protected CopyJob() {
    }

    /** Sets the ranges of the next copy; holes of the source are copied like data. */
    public final void setRanges(BlockDevice from, long fromSector, BlockDevice to, long toSector, int sectorCount) {
        setRanges(from, fromSector, to, toSector, sectorCount, false);
    }

    /**
     * Sets the ranges of the next copy. With {@code zeroHoles}, a piece of the source that its
     * device reports as a hole ({@link BlockDevice#allocatedExtent}) is not read: the destination
     * range is made to read as zeros instead (a READ of a hole returns zeros, which is what the NBD
     * server's structured READ replies already rely on).
     */
    public final void setRanges(BlockDevice from, long fromSector, BlockDevice to, long toSector, int sectorCount,
            boolean zeroHoles) {
        this.source = from;
        this.sourceSector = fromSector;
        this.destination = to;
        this.destinationSector = toSector;
        this.sectors = sectorCount;
        this.skipHoles = zeroHoles;
    }

    /** Called once the copy finished (or failed), in atomic context: must not block. */
    protected abstract void copyDone(BioStatus result);
}
