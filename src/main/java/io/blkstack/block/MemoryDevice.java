package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.HeapQuota;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.mem.Page;
import java.util.Arrays;
import java.util.HashMap;

/**
 * A sparse device in memory (the {@code brd} ram disk, sparse): 4 KiB chunks on the Java heap in a
 * map from chunk number to bytes, guarded by a spin lock. Reads of absent chunks return zeros;
 * DISCARD and WRITE_ZEROES drop whole chunks and zero the covered part of partial ones (dropping a
 * chunk that ends up all zero), so the device knows its holes ({@link #allocatedExtent}).
 *
 * <p>The storage deliberately stays out of the kernel's page arena: the arena is the data path's
 * budget (bios, bounce and cache pages), and a memory device stands for a disk, not for memory the
 * block layer may use. It grows at most to its capacity, and all memory devices of a kernel
 * together at most to the kernel's {@link HeapQuota} (half the heap): a write that needs a new chunk
 * past it fails with ENOSPC, as a full disk would, where it used to end in an
 * {@link OutOfMemoryError} that took the whole server down. The device gives its chunks back to
 * the quota when it closes.
 *
 * <p>With {@code latencyNanos == 0} a bio is served and completed in {@link #submitBio}, on the
 * submitting task. Otherwise it is served at submission and completed by a kernel timer after the
 * latency, with at most {@code queueDepth} bios waiting for their timers. Fault sites:
 * {@code io:<name>} fails a bio with IOERR (without touching the data), {@code latency:<name>}
 * adds to the completion delay.
 */
public final class MemoryDevice extends LatencyDevice {

    /** Bytes per storage chunk. */
    public static final int CHUNK_SIZE = ChunkStore.CHUNK_SIZE;
    /** Bios that may wait for their completion timers at once, unless the constructor says otherwise. */
    public static final int DEFAULT_QUEUE_DEPTH = 128;

    private final Chunks chunks;

    /** A memory device of {@code sizeBytes} that completes after {@code latencyNanos} (0: at once). */
    public MemoryDevice(Kernel kernel, String name, long sizeBytes, long latencyNanos) {
        this(kernel, name, sizeBytes, latencyNanos, DEFAULT_QUEUE_DEPTH);
    }

    /**
     * A memory device of {@code sizeBytes} (a positive multiple of 512) that completes after
     * {@code latencyNanos}, with at most {@code queueDepth} bios awaiting their timers.
     */
    public MemoryDevice(Kernel kernel, String name, long sizeBytes, long latencyNanos, int queueDepth) {
        super(kernel, "memory device", name, sizeBytes, QueueLimits.defaults(), latencyNanos, queueDepth);
        this.chunks = new Chunks(new SpinLock("memory device " + name), kernel.heapQuota());
    }

    /** Moves the bio's data to or from the chunks. */
    @Override
    void serve(Bio bio) {
        switch (bio.op()) {
            case READ, WRITE -> {
                if (!chunks.copySegments(bio, false)) {
                    bio.setStatus(BioStatus.NOSPC); // the heap quota is full: a full disk, not a crash
                }
            }
            case FLUSH -> {
            }
            case DISCARD, WRITE_ZEROES -> chunks.zeroRange(bio.sector() << Bio.SECTOR_SHIFT, bio.sizeBytes());
        }
    }

    /** The memory device knows exactly which chunks hold data. */
    @Override
    public boolean knowsAllocation() {
        return true;
    }

    /**
     * The run of allocated (positive) or hole (negative) sectors at {@code sector}, at most
     * {@code maxSectors} and never past the device's end; chunk granularity.
     */
    @Override
    public long allocatedExtent(long sector, long maxSectors) {
        return chunks.allocatedExtent(this, "memory device", sector, maxSectors);
    }

    /** Chunks holding data now. */
    public int allocatedChunks() {
        return chunks.size();
    }

    /** Waits for the bios awaiting their timers, then gives every chunk back to the heap quota. */
    @Override
    public void close() {
        try {
            super.close();
        } finally {
            chunks.dropAll();
        }
    }

    @Override
    public String describeState() {
        return "memory device " + name() + ": " + capacitySectors() + " sectors, " + allocatedChunks()
                + " chunks allocated, " + inFlight() + " awaiting completion";
    }

    /**
     * The chunk map, guarded by the store's lock taken per piece; an all-zero chunk is dropped as a
     * hole. Each chunk in the map is charged to the heap quota.
     */
    private static final class Chunks extends ChunkStore {
        private final HashMap<Long, byte[]> map = new HashMap<>();
        private final HeapQuota quota;

        Chunks(SpinLock lock, HeapQuota quota) {
            super(lock);
            this.quota = quota;
        }

        @Override
        byte[] current(long chunk) {
            return map.get(chunk);
        }

        /**
         * Writes a piece; every write is stable when served, so {@code fua} changes nothing. False
         * if its chunk is new and the heap quota has no room for it.
         */
        @Override
        boolean write(long chunk, int chunkOffset, Page page, int pageOffset, int n, boolean fua) {
            lock.lock();
            try {
                if (!map.containsKey(chunk) && !quota.charge(CHUNK_SIZE)) {
                    return false;
                }
                page.buffer().get(pageOffset, chunkIn(map, chunk), chunkOffset, n);
                return true;
            } finally {
                lock.unlock();
            }
        }

        /** Drops every chunk, giving them back to the heap quota (the device closes). */
        void dropAll() {
            lock.lock();
            try {
                quota.release((long) map.size() * CHUNK_SIZE);
                map.clear();
            } finally {
                lock.unlock();
            }
        }

        /** A whole chunk is dropped, a partial one zeroed in place (and dropped if then all zero). */
        @Override
        void zero(long chunk, int chunkOffset, int n) {
            lock.lock();
            try {
                if (n == CHUNK_SIZE) {
                    drop(chunk);
                } else {
                    byte[] data = map.get(chunk);
                    if (data != null) {
                        Arrays.fill(data, chunkOffset, chunkOffset + n, (byte) 0);
                        if (isAllZero(data)) {
                            drop(chunk);
                        }
                    }
                }
            } finally {
                lock.unlock();
            }
        }

        /** Removes a chunk, if present, and gives it back to the heap quota; the caller holds the lock. */
        private void drop(long chunk) {
            if (map.remove(chunk) != null) {
                quota.release(CHUNK_SIZE);
            }
        }

        int size() {
            return size(map);
        }
    }
}
