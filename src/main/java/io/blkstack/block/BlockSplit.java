package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioVec;

/**
 * Computes where a bio must be split to fit a device's {@link QueueLimits} (the kernel's
 * {@code bio_split_rw} / {@code get_max_io_size}). Pure arithmetic over the bio's iterator: it
 * allocates nothing and changes nothing.
 */
final class BlockSplit {

    private BlockSplit() {
    }

    /**
     * The number of sectors of the largest front of {@code bio} that fits {@code limits}, or 0 if
     * the whole bio fits. The front is a positive multiple of the logical block size.
     */
    static int frontSectors(Bio bio, QueueLimits limits) {
        int sectors = bio.sectorCount();
        if (bio.op() == BioOp.FLUSH || sectors == 0) {
            return 0;
        }
        int lbs = limits.logicalBlockSectors();
        long max = limits.maxSectors();
        int chunk = limits.chunkSectors();
        if (chunk > 0) {
            max = Math.min(max, chunk - bio.sector() % chunk);
        }
        if (bio.op().hasData()) {
            max = Math.min(max, segmentFitSectors(bio, limits, Math.min(max, sectors)));
        }
        if (max >= sectors) {
            return 0;
        }
        int front = (int) (max / lbs * lbs);
        if (front == 0) {
            // A segment limit that cannot hold one logical block: take one block rather than stall.
            front = lbs;
        }
        if (front >= sectors) {
            return 0;
        }
        return front;
    }

    /**
     * How many sectors from the bio's start fit in {@code maxSegments} segments of at most
     * {@code maxSegmentSize} bytes each; looks no further than {@code capSectors}.
     */
    private static long segmentFitSectors(Bio bio, QueueLimits limits, long capSectors) {
        long capBytes = capSectors << Bio.SECTOR_SHIFT;
        int maxSegments = limits.maxSegments();
        int segmentSize = limits.maxSegmentSize();
        BioVec[] vecs = bio.vecs();
        int idx = bio.iterIndex();
        int done = bio.iterBvecDone();
        long left = bio.sizeBytes();
        long bytes = 0;
        int segments = 0;
        while (left > 0 && bytes < capBytes) {
            BioVec v = vecs[idx];
            int n = (int) Math.min(v.length() - done, left);
            int segs = (n + segmentSize - 1) / segmentSize;
            if (segments + segs > maxSegments) {
                bytes += Math.min(n, (long) (maxSegments - segments) * segmentSize);
                break;
            }
            segments += segs;
            bytes += n;
            left -= n;
            idx++;
            done = 0;
        }
        return bytes >>> Bio.SECTOR_SHIFT;
    }
}
