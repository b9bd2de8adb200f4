package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioVec;
import io.blkstack.kernel.SpinLock;
import io.blkstack.mem.Page;
import java.util.HashMap;

/**
 * Device contents in 4 KiB chunks, addressed by chunk number, and the walks the memory and cached
 * memory devices share: a bio's segments or a zeroed range cut into pieces that never cross a
 * chunk, and the allocated or hole run at a sector. A subclass says what a chunk reads as now and
 * how a piece is written or zeroed. Its state is guarded by {@link #lock}, taken once per piece
 * (the walks hold no lock between pieces).
 */
abstract class ChunkStore {

    /** Bytes per storage chunk. */
    static final int CHUNK_SIZE = Page.SIZE;

    private static final int CHUNK_SHIFT = Page.SHIFT;
    private static final int CHUNK_SECTORS = CHUNK_SIZE >>> Bio.SECTOR_SHIFT;

    /** Guards the subclass's chunks. */
    final SpinLock lock;

    ChunkStore(SpinLock lock) {
        this.lock = lock;
    }

    /** The chunk as it reads now, or null for zeros; the caller holds {@link #lock}. */
    abstract byte[] current(long chunk);

    /**
     * Copies {@code n} bytes of the page into the chunk at {@code chunkOffset}; {@code fua}: stable
     * now. False, with nothing written, if a new chunk would not fit the store's limit.
     */
    abstract boolean write(long chunk, int chunkOffset, Page page, int pageOffset, int n, boolean fua);

    /** Makes {@code n} bytes of the chunk from {@code chunkOffset} read as zeros. */
    abstract void zero(long chunk, int chunkOffset, int n);

    /** Copies {@code n} bytes of the chunk from {@code chunkOffset} into the page (zeros if absent). */
    final void read(long chunk, int chunkOffset, Page page, int pageOffset, int n) {
        lock.lock();
        try {
            byte[] data = current(chunk);
            if (data == null) {
                page.zero(pageOffset, n);
            } else {
                page.buffer().put(pageOffset, data, chunkOffset, n);
            }
        } finally {
            lock.unlock();
        }
    }

    /** Whether the chunk holds data (not a hole). */
    final boolean present(long chunk) {
        lock.lock();
        try {
            return current(chunk) != null;
        } finally {
            lock.unlock();
        }
    }

    /** Chunks in {@code map}, under {@link #lock}. */
    final int size(HashMap<Long, byte[]> map) {
        lock.lock();
        try {
            return map.size();
        } finally {
            lock.unlock();
        }
    }

    /** The chunk's bytes in {@code map}, a zeroed chunk put there first if absent; the caller holds {@link #lock}. */
    static byte[] chunkIn(HashMap<Long, byte[]> map, long chunk) {
        byte[] data = map.get(chunk);
        if (data == null) {
            data = new byte[CHUNK_SIZE];
            map.put(chunk, data);
        }
        return data;
    }

    /** Whether a chunk holds only zeroes (then it is dropped, as a hole). */
    static boolean isAllZero(byte[] data) {
        for (byte b : data) {
            if (b != 0) {
                return false;
            }
        }
        return true;
    }

    /**
     * Walks the bio's segments (from its iterator, with locals only, so concurrent submitters
     * share nothing) and copies each one, chunk piece by chunk piece. A FUA write's pieces are
     * written with {@code fua}. False if a write stopped at a chunk that did not fit the store's
     * limit (the pieces before it are written).
     */
    final boolean copySegments(Bio bio, boolean fua) {
        boolean write = bio.op() == BioOp.WRITE;
        BioVec[] vecs = bio.vecs();
        int idx = bio.iterIndex();
        int done = bio.iterBvecDone();
        long position = bio.sector() << Bio.SECTOR_SHIFT;
        for (int left = bio.sizeBytes(); left > 0; ) {
            BioVec vec = vecs[idx];
            int segment = Math.min(vec.length() - done, left);
            Page page = vec.page();
            int pageOffset = vec.offset() + done;
            for (int segmentLeft = segment; segmentLeft > 0; ) {
                long chunk = position >>> CHUNK_SHIFT;
                int chunkOffset = (int) (position & (CHUNK_SIZE - 1));
                int n = Math.min(segmentLeft, CHUNK_SIZE - chunkOffset);
                if (write) {
                    if (!write(chunk, chunkOffset, page, pageOffset, n, fua)) {
                        return false;
                    }
                } else {
                    read(chunk, chunkOffset, page, pageOffset, n);
                }
                position += n;
                pageOffset += n;
                segmentLeft -= n;
            }
            left -= segment;
            idx++;
            done = 0;
        }
        return true;
    }

    /** Makes a byte range read as zeros, chunk piece by chunk piece. */
    final void zeroRange(long position, long length) {
        long end = position + length;
        for (long at = position; at < end; ) {
            long chunk = at >>> CHUNK_SHIFT;
            int chunkOffset = (int) (at & (CHUNK_SIZE - 1));
            int n = (int) Math.min(end - at, CHUNK_SIZE - chunkOffset);
            zero(chunk, chunkOffset, n);
            at += n;
        }
    }

    /**
     * The run of allocated (positive) or hole (negative) sectors of {@code device} at
     * {@code sector}, at most {@code maxSectors} and never past the device's end; chunk
     * granularity. {@code kind} names the device kind in messages.
     */
    final long allocatedExtent(BlockDevice device, String kind, long sector, long maxSectors) {
        long capacity = device.capacitySectors();
        if (sector < 0 || maxSectors <= 0 || sector >= capacity) {
            throw new IllegalArgumentException(kind + " " + device.name() + ": extent query at " + sector + " for "
                    + maxSectors + " sectors outside capacity " + capacity);
        }
        long end = Math.min(capacity, sector + maxSectors);
        boolean allocated = present(sector / CHUNK_SECTORS);
        long at = sector;
        while (at < end) {
            long chunk = at / CHUNK_SECTORS;
            if (present(chunk) != allocated) {
                break;
            }
            at = Math.min(end, (chunk + 1) * CHUNK_SECTORS);
        }
        long run = at - sector;
        if (run <= 0) {
            throw new IllegalStateException(kind + " " + device.name() + ": empty extent at " + sector);
        }
        return allocated ? run : -run;
    }
}
