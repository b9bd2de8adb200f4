package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.bio.BioVec;
import io.blkstack.kernel.Faults;
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
public final class MemoryDevice extends BlockDevice {

    /** Bytes per storage chunk. */
    public static final int CHUNK_SIZE = Page.SIZE;
    /** Bios that may wait for their completion timers at once, unless the constructor says otherwise. */
    public static final int DEFAULT_QUEUE_DEPTH = 128;

    private static final int CHUNK_SHIFT = Page.SHIFT;

    private final HashMap<Long, byte[]> chunks = new HashMap<>();
    private final SpinLock lock;
    private final long latencyNanos;
    private final TimerCompletions timers;
    private final String ioFaultSite;
    private final String latencyFaultSite;

    /** A memory device of {@code sizeBytes} that completes after {@code latencyNanos} (0: at once). */
    public MemoryDevice(Kernel kernel, String name, long sizeBytes, long latencyNanos) {
        this(kernel, name, sizeBytes, latencyNanos, DEFAULT_QUEUE_DEPTH);
    }

    /**
     * A memory device of {@code sizeBytes} (a positive multiple of 512) that completes after
     * {@code latencyNanos}, with at most {@code queueDepth} bios awaiting their timers.
     */
    public MemoryDevice(Kernel kernel, String name, long sizeBytes, long latencyNanos, int queueDepth) {
        super(kernel, name, checkedSectors(name, sizeBytes), QueueLimits.defaults());
        if (latencyNanos < 0) {
            throw new IllegalArgumentException("memory device " + name + ": negative latency " + latencyNanos + " ns");
        }
        this.lock = new SpinLock("memory device " + name);
        this.latencyNanos = latencyNanos;
        this.timers = new TimerCompletions(kernel, "memory device " + name, queueDepth);
        this.ioFaultSite = "io:" + name;
        this.latencyFaultSite = "latency:" + name;
    }

    static long checkedSectors(String name, long sizeBytes) {
        if (sizeBytes <= 0 || sizeBytes % Bio.SECTOR_SIZE != 0) {
            throw new IllegalArgumentException("device " + name + ": size " + sizeBytes
                    + " is not a positive multiple of " + Bio.SECTOR_SIZE);
        }
        return sizeBytes >>> Bio.SECTOR_SHIFT;
    }

    /** Serves the bio now; completes it now or from a timer after the latency. */
    @Override
    protected void submitBio(Bio bio) {
        Bio front = splitToLimits(bio);
        Faults faults = kernel().faults();
        long delay = latencyNanos + Math.max(0, faults.extraLatencyNanos(latencyFaultSite));
        if (faults.shouldFail(ioFaultSite)) {
            front.setStatus(BioStatus.IOERR);
        } else {
            serve(front);
        }
        if (delay == 0) {
            front.endio();
        } else if (!timers.complete(front, delay, !front.hasFlag(BioFlags.NOWAIT))) {
            // Served already, but a NOWAIT bio may not wait for a completion slot: report AGAIN.
            front.setStatus(BioStatus.AGAIN);
            front.endio();
        }
    }

    /** Moves the bio's data to or from the chunks. */
    private void serve(Bio bio) {
        long position = bio.sector() << Bio.SECTOR_SHIFT;
        switch (bio.op()) {
            case READ, WRITE -> copySegments(bio);
            case FLUSH -> {
            }
            case DISCARD, WRITE_ZEROES -> zeroRange(position, bio.sizeBytes());
        }
    }

    /**
     * Walks the bio's segments (from its iterator, with locals only, so concurrent submitters
     * share nothing) and copies each one, chunk piece by chunk piece.
     */
    private void copySegments(Bio bio) {
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
                    writePiece(chunk, chunkOffset, page, pageOffset, n);
                } else {
                    readPiece(chunk, chunkOffset, page, pageOffset, n);
                }
                position += n;
                pageOffset += n;
                segmentLeft -= n;
            }
            left -= segment;
            idx++;
            done = 0;
        }
    }

    private void readPiece(long chunk, int chunkOffset, Page page, int pageOffset, int n) {
        lock.lock();
        try {
            byte[] data = chunks.get(chunk);
            if (data == null) {
                page.zero(pageOffset, n);
            } else {
                page.buffer().put(pageOffset, data, chunkOffset, n);
            }
        } finally {
            lock.unlock();
        }
    }

    private void writePiece(long chunk, int chunkOffset, Page page, int pageOffset, int n) {
        lock.lock();
        try {
            byte[] data = chunks.get(chunk);
            if (data == null) {
                data = new byte[CHUNK_SIZE];
                chunks.put(chunk, data);
            }
            page.buffer().get(pageOffset, data, chunkOffset, n);
        } finally {
            lock.unlock();
        }
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

    /** Makes a range read as zeros: whole chunks are dropped, partial ones zeroed in place. */
    private void zeroRange(long position, long length) {
        long end = position + length;
        for (long at = position; at < end; ) {
            long chunk = at >>> CHUNK_SHIFT;
            int chunkOffset = (int) (at & (CHUNK_SIZE - 1));
            int n = (int) Math.min(end - at, CHUNK_SIZE - chunkOffset);
            lock.lock();
            try {
                if (n == CHUNK_SIZE) {
                    chunks.remove(chunk);
                } else {
                    byte[] data = chunks.get(chunk);
                    if (data != null) {
                        Arrays.fill(data, chunkOffset, chunkOffset + n, (byte) 0);
                        if (isAllZero(data)) {
                            chunks.remove(chunk);
                        }
                    }
                }
            } finally {
                lock.unlock();
            }
            at += n;
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
        if (sector < 0 || maxSectors <= 0 || sector >= capacitySectors()) {
            throw new IllegalArgumentException("memory device " + name() + ": extent query at " + sector + " for "
                    + maxSectors + " sectors outside capacity " + capacitySectors());
        }
        long end = Math.min(capacitySectors(), sector + maxSectors);
        int chunkSectors = CHUNK_SIZE >>> Bio.SECTOR_SHIFT;
        boolean allocated = chunkPresent(sector / chunkSectors);
        long at = sector;
        while (at < end) {
            long chunk = at / chunkSectors;
            if (chunkPresent(chunk) != allocated) {
                break;
            }
            at = Math.min(end, (chunk + 1) * chunkSectors);
        }
        long run = at - sector;
        if (run <= 0) {
            throw new IllegalStateException("memory device " + name() + ": empty extent at " + sector);
        }
        return allocated ? run : -run;
    }

    private boolean chunkPresent(long chunk) {
        lock.lock();
        try {
            return chunks.containsKey(chunk);
        } finally {
            lock.unlock();
        }
    }

    /** Chunks holding data now. */
    public int allocatedChunks() {
        lock.lock();
        try {
            return chunks.size();
        } finally {
            lock.unlock();
        }
    }

    /** The completion latency without faults, in nanoseconds. */
    public long latencyNanos() {
        return latencyNanos;
    }

    /** Bios served and waiting for their completion timers. */
    public int inFlight() {
        return timers.inFlight();
    }

    @Override
    public String describeState() {
        return "memory device " + name() + ": " + capacitySectors() + " sectors, " + allocatedChunks()
                + " chunks allocated, " + timers.inFlight() + " awaiting completion";
    }

    /** Waits for the bios awaiting their timers, then closes the split set; the data goes with the object. */
    @Override
    public void close() {
        if (isClosed()) {
            return;
        }
        try {
            timers.drain();
        } finally {
            super.close();
        }
    }
}
