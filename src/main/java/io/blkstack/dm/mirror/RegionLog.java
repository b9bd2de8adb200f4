package io.blkstack.dm.mirror;

import java.util.concurrent.atomic.AtomicLongArray;

/**
 * The mirror's {@code core} region log: one bit per region of the target, set while the region
 * may differ between legs. A write that some leg missed (a failed leg, or an error on one leg)
 * sets the bits of the regions it touched; the resync clears the bits of the regions it copied
 * whole. Kept in memory only, as dm-raid1's {@code core} log is; {@code status} reports the
 * regions whose bit is clear as in sync.
 *
 * <p>Marking is lock-free (one atomic update per 64 regions), so a write's completion may call it:
 * it neither blocks nor allocates (rule 2 of DESIGN.md section 1).
 */
final class RegionLog {

    private final long regionSectors;
    private final long lengthSectors;
    private final long regionCount;
    private final AtomicLongArray outOfSync;

    /** A log of {@code lengthSectors} cut into regions of {@code regionSectors} (a power of two), all in sync. */
    RegionLog(long regionSectors, long lengthSectors) {
        if (regionSectors <= 0 || Long.bitCount(regionSectors) != 1) {
            throw new IllegalArgumentException("mirror: region size " + regionSectors + " is not a power of two");
        }
        if (lengthSectors < 0) {
            throw new IllegalArgumentException("mirror: negative length " + lengthSectors);
        }
        this.regionSectors = regionSectors;
        this.lengthSectors = lengthSectors;
        this.regionCount = (lengthSectors + regionSectors - 1) / regionSectors;
        this.outOfSync = new AtomicLongArray((int) Math.min(Integer.MAX_VALUE, (regionCount + 63) / 64));
    }

    /** The region size in sectors, as the table line gives it. */
    long regionSectors() {
        return regionSectors;
    }

    /** Regions in the target (the last one may be short). */
    long regionCount() {
        return regionCount;
    }

    /** Marks every region that {@code [start, end)} touches as out of sync. */
    void markOutOfSync(long start, long end) {
        for (long r = start / regionSectors; r < regionCount && r * regionSectors < end; r++) {
            int word = (int) (r >>> 6);
            long bit = 1L << (r & 63);
            outOfSync.getAndUpdate(word, v -> v | bit);
        }
    }

    /** Marks the regions that {@code [start, end)} covers entirely as in sync. */
    void markInSync(long start, long end) {
        for (long r = start / regionSectors; r < regionCount && r * regionSectors < end; r++) {
            if (r * regionSectors < start || Math.min((r + 1) * regionSectors, lengthSectors) > end) {
                continue; // only regions the range covers entirely
            }
            int word = (int) (r >>> 6);
            long bit = 1L << (r & 63);
            outOfSync.getAndUpdate(word, v -> v & ~bit);
        }
    }

    /** Regions no leg missed a write to. */
    long inSyncRegions() {
        long out = 0;
        for (int i = 0; i < outOfSync.length(); i++) {
            out += Long.bitCount(outOfSync.get(i));
        }
        return regionCount - out;
    }
}
