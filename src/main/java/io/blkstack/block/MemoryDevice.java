package io.blkstack.block;

import io.blkstack.bio.Bio;
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
 * block layer may use. It grows at most to its capacity.
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
        this.chunks = new Chunks(new SpinLock("memory device " + name));
    }

    /** Moves the bio's data to or from the chunks. */
    @Override
    void serve(Bio bio) {
        switch (bio.op()) {
            case READ, WRITE -> chunks.copySegments(bio, false);
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

    @Override
    public String describeState() {
        return "memory device " + name() + ": " + capacitySectors() + " sectors, " + allocatedChunks()
                + " chunks allocated, " + inFlight() + " awaiting completion";
    }

    /** The chunk map, guarded by the store's lock taken per piece; an all-zero chunk is dropped as a hole. */
    private static final class Chunks extends ChunkStore {
        private final HashMap<Long, byte[]> map = new HashMap<>();

        Chunks(SpinLock lock) {
            super(lock);
        }

        @Override
        byte[] current(long chunk) {
            return map.get(chunk);
        }

        /** Writes a piece; every write is stable when served, so {@code fua} changes nothing. */
        @Override
        void write(long chunk, int chunkOffset, Page page, int pageOffset, int n, boolean fua) {
            lock.lock();
            try {
                page.buffer().get(pageOffset, chunkIn(map, chunk), chunkOffset, n);
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
                    map.remove(chunk);
                } else {
                    byte[] data = map.get(chunk);
                    if (data != null) {
                        Arrays.fill(data, chunkOffset, chunkOffset + n, (byte) 0);
                        if (isAllZero(data)) {
                            map.remove(chunk);
                        }
                    }
                }
            } finally {
                lock.unlock();
            }
        }

        int size() {
            return size(map);
        }
    }
}
