package io.blkstack.dm.thin;

import io.blkstack.kernel.SpinLock;

/**
 * One open thin device of a pool: its id and an in-memory index of its mappings, so that
 * {@code map} can remap provisioned blocks and answer block-status queries without touching the
 * metadata (whose lookups take a mutex and may read from disk, which the submit loop must not).
 *
 * <p>The index mirrors the metadata's mapping tree for this device: it is loaded when the device
 * opens and updated by the pool's worker right after each metadata change. Each entry packs
 * {@code (data block + 1) << 2 | SHARED | BUSY}; 0 is a hole. {@code SHARED} means the block may
 * be referenced by another device (a snapshot), so a write must go through the worker, which
 * checks the real reference count. {@code BUSY} means a provisioning or copy-on-write of the block
 * is in flight: writes to it wait on the pool's parked list until the mapping is inserted.
 *
 * <p>The index is a sparse two-level array: chunks of {@link #CHUNK_ENTRIES} entries are created
 * by the worker (a control path) the first time a block in them is mapped, never by {@code map}.
 * A {@link SpinLock} guards entries; nothing sleeps under it.
 */
public final class ThinDevice {

    /** Entries per index chunk. */
    static final int CHUNK_ENTRIES = 1024;
    public static final long SHARED = 1;
    public static final long BUSY = 2;

    private final long devId;
    private final long virtualBlocks;
    private final long[][] chunks;
    private final SpinLock lock;
    int openCount;

    ThinDevice(long devId, long virtualBlocks) {
        if (virtualBlocks <= 0) {
            throw new IllegalArgumentException("thin device " + devId + " of " + virtualBlocks + " blocks");
        }
        this.devId = devId;
        this.virtualBlocks = virtualBlocks;
        this.chunks = new long[(int) ((virtualBlocks + CHUNK_ENTRIES - 1) / CHUNK_ENTRIES)][];
        this.lock = new SpinLock("thin device " + devId);
    }

    /** The thin device id in the pool's metadata. */
    public long devId() {
        return devId;
    }

    /** How many virtual blocks the index covers. */
    public long virtualBlocks() {
        return virtualBlocks;
    }

    /** The packed entry of {@code vblock} (0 for a hole). */
    public long entry(long vblock) {
        checkBlock(vblock);
        lock.lock();
        try {
            long[] c = chunks[(int) (vblock / CHUNK_ENTRIES)];
            return c == null ? 0 : c[(int) (vblock % CHUNK_ENTRIES)];
        } finally {
            lock.unlock();
        }
    }

    /** Sets the entry of {@code vblock}; creates its chunk if needed (worker or control path only). */
    void setEntry(long vblock, long value) {
        checkBlock(vblock);
        int ci = (int) (vblock / CHUNK_ENTRIES);
        long[] fresh = null;
        if (value != 0) {
            lock.lock();
            boolean missing = chunks[ci] == null;
            lock.unlock();
            if (missing) {
                fresh = new long[CHUNK_ENTRIES];
            }
        }
        lock.lock();
        try {
            if (chunks[ci] == null) {
                if (value == 0) {
                    return;
                }
                chunks[ci] = fresh;
            }
            chunks[ci][(int) (vblock % CHUNK_ENTRIES)] = value;
        } finally {
            lock.unlock();
        }
    }

    /** Marks every mapped block shared (after a snapshot of this device was taken). */
    void markAllShared() {
        lock.lock();
        try {
            for (long[] c : chunks) {
                if (c == null) {
                    continue;
                }
                for (int i = 0; i < c.length; i++) {
                    if (dataBlockOf(c[i]) >= 0) {
                        c[i] |= SHARED;
                    }
                }
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * The run at {@code vblock} of blocks that are all mapped (positive count) or all holes
     * (negative count), at most {@code maxBlocks}. Never blocks.
     */
    public long run(long vblock, long maxBlocks) {
        long end = Math.min(virtualBlocks, vblock + maxBlocks);
        lock.lock();
        try {
            boolean mapped = mappedLocked(vblock);
            long b = vblock + 1;
            while (b < end && mappedLocked(b) == mapped) {
                b++;
            }
            return mapped ? b - vblock : -(b - vblock);
        } finally {
            lock.unlock();
        }
    }

    private boolean mappedLocked(long vblock) {
        long[] c = chunks[(int) (vblock / CHUNK_ENTRIES)];
        return c != null && dataBlockOf(c[(int) (vblock % CHUNK_ENTRIES)]) >= 0;
    }

    /** The packed entry for a mapping to {@code dataBlock} (-1 for a hole). */
    public static long pack(long dataBlock, long flags) {
        return ((dataBlock + 1) << 2) | flags;
    }

    /** The data block of a packed entry, or -1 for a hole. */
    public static long dataBlockOf(long entry) {
        return (entry >>> 2) - 1;
    }

    private void checkBlock(long vblock) {
        if (vblock < 0 || vblock >= virtualBlocks) {
            throw new IllegalArgumentException("thin device " + devId + ": block " + vblock + " outside 0.."
                    + (virtualBlocks - 1));
        }
    }

    @Override
    public String toString() {
        return "thin device " + devId;
    }
}
