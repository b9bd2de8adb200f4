package io.blkstack.dm.snapshot;

import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.mem.Page;
import io.blkstack.wq.Work;

/**
 * One region copy for the {@link CopyService} (a kcopyd job): source and destination ranges, and
 * the service's bookkeeping while it runs. The owner allocates jobs up front and reuses them, so
 * the service's queues are bounded by the jobs in existence and copying allocates no objects.
 */
public abstract class CopyJob {

    BlockDevice source;
    long sourceSector;
    BlockDevice destination;
    long destinationSector;
    int sectors;

    // The service's state while the job runs.
    CopyService service;
    CopyJob next;
    final Page[] pages;
    int pageCount;
    BioStatus status = BioStatus.OK;
    final Work writeWork;

    /** A job that can copy up to {@code maxPages} pages. */
    protected CopyJob(String name, int maxPages) {
        this.pages = new Page[maxPages];
        this.writeWork = new Work("copy write " + name, () -> service.writePhase(this));
    }

    /** Sets the ranges of the next copy. */
    public final void setRanges(BlockDevice from, long fromSector, BlockDevice to, long toSector, int sectorCount) {
        this.source = from;
        this.sourceSector = fromSector;
        this.destination = to;
        this.destinationSector = toSector;
        this.sectors = sectorCount;
    }

    /** Called once the copy finished (or failed), in atomic context: must not block. */
    protected abstract void copyDone(BioStatus result);
}
