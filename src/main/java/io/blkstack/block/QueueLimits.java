package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.mem.Page;

/**
 * What a device accepts in one bio (the kernel's {@code queue_limits}). A bio beyond these limits
 * is split by {@link BlockDevice#splitToLimits} before the device handles it.
 *
 * @param logicalBlockSize smallest addressable unit in bytes: a power of two in 512..4096; every
 *     bio's start and size must be a multiple of it
 * @param physicalBlockSize the device's internal block size in bytes (a power of two, at least the
 *     logical size); writes smaller than it may be slow but are legal
 * @param maxSectors largest bio in 512-byte sectors
 * @param maxSegments most page segments in one bio
 * @param maxSegmentSize largest segment in bytes; a longer vec counts as several segments
 * @param chunkSectors a boundary no bio may cross (a stripe chunk), in sectors; 0 for none
 * @param dmaAlignment required alignment in bytes of segment offsets and lengths for direct I/O
 *     (a power of two); devices without direct I/O ignore it
 */
public record QueueLimits(int logicalBlockSize, int physicalBlockSize, int maxSectors, int maxSegments,
        int maxSegmentSize, int chunkSectors, int dmaAlignment) {

    /** The default largest bio: one full vec array, 1 MiB. */
    public static final int DEFAULT_MAX_SECTORS = (Bio.VECS_MAX * Page.SIZE) >>> Bio.SECTOR_SHIFT;
    /** The default segment size bound, as the kernel's {@code BLK_MAX_SEGMENT_SIZE}. */
    public static final int DEFAULT_MAX_SEGMENT_SIZE = 65536;

    private static final QueueLimits DEFAULTS = new QueueLimits(Bio.SECTOR_SIZE, Bio.SECTOR_SIZE,
            DEFAULT_MAX_SECTORS, Bio.VECS_MAX, DEFAULT_MAX_SEGMENT_SIZE, 0, Bio.SECTOR_SIZE);

    /** Checks every limit, with the bad value in the message. */
    public QueueLimits {
        if (!powerOfTwo(logicalBlockSize) || logicalBlockSize < Bio.SECTOR_SIZE || logicalBlockSize > Page.SIZE) {
            throw new IllegalArgumentException("logical block size " + logicalBlockSize
                    + " must be a power of two in " + Bio.SECTOR_SIZE + ".." + Page.SIZE);
        }
        if (!powerOfTwo(physicalBlockSize) || physicalBlockSize < logicalBlockSize) {
            throw new IllegalArgumentException("physical block size " + physicalBlockSize
                    + " must be a power of two >= logical block size " + logicalBlockSize);
        }
        int lbsSectors = logicalBlockSize >>> Bio.SECTOR_SHIFT;
        if (maxSectors < lbsSectors || maxSectors % lbsSectors != 0) {
            throw new IllegalArgumentException("max sectors " + maxSectors + " must be a positive multiple of "
                    + lbsSectors + " (the logical block size in sectors)");
        }
        if (maxSegments < 1) {
            throw new IllegalArgumentException("max segments " + maxSegments + " must be at least 1");
        }
        if (maxSegmentSize < Bio.SECTOR_SIZE) {
            throw new IllegalArgumentException("max segment size " + maxSegmentSize + " must be at least "
                    + Bio.SECTOR_SIZE);
        }
        if (chunkSectors < 0 || chunkSectors % lbsSectors != 0) {
            throw new IllegalArgumentException("chunk sectors " + chunkSectors + " must be 0 or a multiple of "
                    + lbsSectors);
        }
        if (!powerOfTwo(dmaAlignment)) {
            throw new IllegalArgumentException("dma alignment " + dmaAlignment + " must be a power of two");
        }
    }

    /** 512-byte blocks, 1 MiB bios, 256 segments, no chunk boundary. */
    public static QueueLimits defaults() {
        return DEFAULTS;
    }

    /** The logical block size in sectors. */
    public int logicalBlockSectors() {
        return logicalBlockSize >>> Bio.SECTOR_SHIFT;
    }

    /** A copy with another logical block size; the physical size and max sectors are raised to fit. */
    public QueueLimits withLogicalBlockSize(int bytes) {
        int sectors = Math.max(bytes >>> Bio.SECTOR_SHIFT, 1);
        int max = Math.max(maxSectors / sectors * sectors, sectors);
        return new QueueLimits(bytes, Math.max(bytes, physicalBlockSize), max, maxSegments, maxSegmentSize,
                chunkSectors, dmaAlignment);
    }

    public QueueLimits withPhysicalBlockSize(int bytes) {
        return new QueueLimits(logicalBlockSize, bytes, maxSectors, maxSegments, maxSegmentSize, chunkSectors,
                dmaAlignment);
    }

    public QueueLimits withMaxSectors(int sectors) {
        return new QueueLimits(logicalBlockSize, physicalBlockSize, sectors, maxSegments, maxSegmentSize,
                chunkSectors, dmaAlignment);
    }

    public QueueLimits withMaxSegments(int segments) {
        return new QueueLimits(logicalBlockSize, physicalBlockSize, maxSectors, segments, maxSegmentSize,
                chunkSectors, dmaAlignment);
    }

    public QueueLimits withMaxSegmentSize(int bytes) {
        return new QueueLimits(logicalBlockSize, physicalBlockSize, maxSectors, maxSegments, bytes, chunkSectors,
                dmaAlignment);
    }

    public QueueLimits withChunkSectors(int sectors) {
        return new QueueLimits(logicalBlockSize, physicalBlockSize, maxSectors, maxSegments, maxSegmentSize, sectors,
                dmaAlignment);
    }

    public QueueLimits withDmaAlignment(int bytes) {
        return new QueueLimits(logicalBlockSize, physicalBlockSize, maxSectors, maxSegments, maxSegmentSize,
                chunkSectors, bytes);
    }

    /**
     * The limits of a device stacked on {@code lower} (the kernel's {@code blk_stack_limits}): the
     * larger block sizes and alignment, the smaller size bounds; this device's chunk boundary stays.
     */
    public QueueLimits stackedOn(QueueLimits lower) {
        int lbs = Math.max(logicalBlockSize, lower.logicalBlockSize);
        int lbsSectors = lbs >>> Bio.SECTOR_SHIFT;
        int max = Math.min(maxSectors, lower.maxSectors) / lbsSectors * lbsSectors;
        int chunk = chunkSectors != 0 ? chunkSectors : lower.chunkSectors;
        if (chunk % lbsSectors != 0) {
            chunk = 0;
        }
        return new QueueLimits(lbs, Math.max(physicalBlockSize, lower.physicalBlockSize), Math.max(max, lbsSectors),
                Math.min(maxSegments, lower.maxSegments), Math.min(maxSegmentSize, lower.maxSegmentSize), chunk,
                Math.max(dmaAlignment, lower.dmaAlignment));
    }

    private static boolean powerOfTwo(int v) {
        return v > 0 && (v & (v - 1)) == 0;
    }
}
