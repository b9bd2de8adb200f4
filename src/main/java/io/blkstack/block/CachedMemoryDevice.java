package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioOp;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.SpinLock;
import io.blkstack.mem.Page;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

/**
 * A sparse memory device with a volatile write cache: the checker's stand-in for a file device
 * (DESIGN.md section 7, "simulated file devices"). Data lives on a {@link Media} that outlives the
 * device, so a simulated crash can drop what was never flushed and a new stack can be built over
 * what was.
 *
 * <p>The page cache is modelled as always hitting: a bio is served at submission (reads from the
 * cache, else the stable data, else zeros; writes into the cache), and completed by a kernel timer
 * after the latency, like {@link MemoryDevice}. A FLUSH (or PREFLUSH) makes everything cached
 * stable; a FUA write is stable when served. DISCARD and WRITE_ZEROES zero the range in the cache.
 * Nothing is on the heap until written: a 1 GiB device costs a map entry per written 4 KiB chunk.
 * Fault sites are those of a memory device: {@code io:<name>} fails a bio without touching data,
 * {@code latency:<name>} adds to its completion delay.
 */
public final class CachedMemoryDevice extends LatencyDevice {

    /** Bytes per storage chunk. */
    public static final int CHUNK_SIZE = ChunkStore.CHUNK_SIZE;
    /** A cached chunk that reads as zeros (a discarded or zeroed chunk not yet stable). */
    private static final byte[] ZEROED = new byte[0];

    /**
     * The contents of one simulated disk: stable chunks and the volatile cache over them. It
     * outlives the devices built over it (one at a time), which is how a crash and restart keep
     * what was flushed. Guarded by its spin lock.
     */
    public static final class Media extends ChunkStore {
        private final String name;
        private final long sizeBytes;
        private final HashMap<Long, byte[]> stable = new HashMap<>();
        private final HashMap<Long, byte[]> cache = new HashMap<>();
        private final boolean writeThrough;
        private boolean powerCut;
        private long flushes;

        /**
         * Empty media of {@code sizeBytes} (a positive multiple of 512) for device {@code name};
         * {@code writeThrough} media have no cache (every write is stable when served: a memory
         * device, which a restart of the stack does not lose).
         */
        public Media(String name, long sizeBytes, boolean writeThrough) {
            super(new SpinLock("media " + name));
            LatencyDevice.checkedSectors(name, sizeBytes);
            this.name = name;
            this.sizeBytes = sizeBytes;
            this.writeThrough = writeThrough;
        }

        public String name() {
            return name;
        }

        public long sizeBytes() {
            return sizeBytes;
        }

        /**
         * Cuts the power: the cache is lost, and until {@link #restorePower} every write and flush
         * is dropped (what a dying stack writes on its way down never reaches the disk).
         */
        public void cutPower() {
            lock.lock();
            try {
                cache.clear();
                powerCut = true;
            } finally {
                lock.unlock();
            }
        }

        /** Ends a power cut: the media holds exactly what was stable when it began. */
        public void restorePower() {
            lock.lock();
            try {
                if (!powerCut) {
                    throw new IllegalStateException("media " + name + ": power restored without a cut");
                }
                cache.clear();
                powerCut = false;
            } finally {
                lock.unlock();
            }
        }

        /** Chunks not yet stable. */
        public int cachedChunks() {
            return size(cache);
        }

        /** Chunks holding stable data. */
        public int stableChunks() {
            return size(stable);
        }

        /** Makes the cache stable (a FLUSH). */
        void flush() {
            lock.lock();
            try {
                if (powerCut) {
                    return;
                }
                for (Map.Entry<Long, byte[]> e : cache.entrySet()) {
                    putStable(e.getKey(), e.getValue());
                }
                cache.clear();
                flushes++;
            } finally {
                lock.unlock();
            }
        }

        private void putStable(long chunk, byte[] data) {
            if (data == ZEROED || isAllZero(data)) {
                stable.remove(chunk);
            } else {
                stable.put(chunk, data);
            }
        }

        /** The chunk as it reads now (cache over stable), or null for zeros; the caller holds the lock. */
        @Override
        byte[] current(long chunk) {
            byte[] c = cache.get(chunk);
            if (c != null) {
                return c == ZEROED ? null : c;
            }
            return stable.get(chunk);
        }

        /**
         * Writes a piece into the cache (copying the chunk on first write), and to stable too if
         * {@code fua}; always true (the checker's media are small, and have no heap limit).
         */
        @Override
        boolean write(long chunk, int chunkOffset, Page page, int pageOffset, int n, boolean fua) {
            lock.lock();
            try {
                if (powerCut) {
                    return true; // the power is out: the write is lost, as the model says
                }
                if (writeThrough) {
                    page.buffer().get(pageOffset, chunkIn(stable, chunk), chunkOffset, n);
                    return true;
                }
                byte[] c = cache.get(chunk);
                if (c == null || c == ZEROED) {
                    byte[] base = c == null ? stable.get(chunk) : null;
                    c = base == null ? new byte[CHUNK_SIZE] : base.clone();
                    cache.put(chunk, c);
                }
                page.buffer().get(pageOffset, c, chunkOffset, n);
                if (fua) {
                    // Only this piece is forced: the rest of the cached chunk may hold unflushed data.
                    byte[] s = stable.get(chunk);
                    s = s == null ? new byte[CHUNK_SIZE] : s.clone();
                    System.arraycopy(c, chunkOffset, s, chunkOffset, n);
                    putStable(chunk, s);
                }
                return true;
            } finally {
                lock.unlock();
            }
        }

        /** Zeroes a piece in the cache: a whole chunk becomes a zero marker. */
        @Override
        void zero(long chunk, int chunkOffset, int n) {
            lock.lock();
            try {
                if (powerCut) {
                    return;
                }
                if (writeThrough) {
                    byte[] st = stable.get(chunk);
                    if (n == CHUNK_SIZE || st == null) {
                        stable.remove(chunk);
                    } else {
                        Arrays.fill(st, chunkOffset, chunkOffset + n, (byte) 0);
                    }
                    return;
                }
                if (n == CHUNK_SIZE) {
                    cache.put(chunk, ZEROED);
                    return;
                }
                byte[] data = current(chunk);
                if (data == null) {
                    cache.put(chunk, ZEROED);
                    return;
                }
                byte[] c = cache.get(chunk) == data ? data : data.clone();
                Arrays.fill(c, chunkOffset, chunkOffset + n, (byte) 0);
                cache.put(chunk, c);
            } finally {
                lock.unlock();
            }
        }

        @Override
        public String toString() {
            lock.lock();
            try {
                return "media " + name + ": " + stable.size() + " stable and " + cache.size() + " cached chunks, "
                        + flushes + " flushes" + (powerCut ? ", power cut" : "");
            } finally {
                lock.unlock();
            }
        }
    }

    private final Media media;
    /** Which operations a submitter serves itself (policy {@code direct-issue}). */
    private final boolean directReads;
    private final boolean directWrites;

    /**
     * A device over {@code media} (named as the media) that completes after {@code latencyNanos}
     * (0: at once, on the submitting task) with at most {@code queueDepth} bios awaiting their timers, with logical blocks of
     * {@code logicalBlockSize} bytes (a file device opened for direct I/O has the file system's).
     */
    public CachedMemoryDevice(Kernel kernel, Media media, long latencyNanos, int queueDepth, int logicalBlockSize) {
        super(kernel, "cached memory device", media.name(), media.sizeBytes(),
                QueueLimits.defaults().withLogicalBlockSize(logicalBlockSize), latencyNanos, queueDepth);
        this.media = media;
        String direct = kernel.policies().value(PolicySwitch.DIRECT_ISSUE);
        this.directReads = direct.equals("on") || direct.equals("reads");
        this.directWrites = direct.equals("on") || direct.equals("writes");
    }

    /**
     * The file device's direct issue ({@link FileDevice}, policy {@code direct-issue}) as the
     * checker models it: on media with a cache (a file's stand-in), a plain READ or WRITE submitted
     * by a task that may block, while no bio waits for its timer, is served by its submitter, which
     * sleeps the latency and completes the bio itself.
     */
    @Override
    protected boolean issuesDirectly(Bio bio) {
        boolean wanted = bio.op() == BioOp.READ ? directReads : bio.op() == BioOp.WRITE && directWrites;
        if (!wanted || media.writeThrough || bio.hasFlag(BioFlags.PREFLUSH) || bio.hasFlag(BioFlags.FUA)) {
            return false;
        }
        Task self = Task.currentOrNull();
        return self != null && self.mayBlock();
    }

    /** The media under the device. */
    public Media media() {
        return media;
    }

    /** Moves the bio's data; flushes first for PREFLUSH. */
    @Override
    void serve(Bio bio) {
        if (bio.hasFlag(BioFlags.PREFLUSH)) {
            media.flush();
        }
        switch (bio.op()) {
            case READ, WRITE -> media.copySegments(bio, bio.op() == BioOp.WRITE && bio.hasFlag(BioFlags.FUA));
            case FLUSH -> media.flush();
            case DISCARD, WRITE_ZEROES -> media.zeroRange(bio.sector() << Bio.SECTOR_SHIFT, bio.sizeBytes());
        }
    }

    /** The device knows which chunks hold data (as a file system knows its holes). */
    @Override
    public boolean knowsAllocation() {
        return true;
    }

    @Override
    public long allocatedExtent(long sector, long maxSectors) {
        return media.allocatedExtent(this, "cached memory device", sector, maxSectors);
    }

    @Override
    public String describeState() {
        return "cached memory device " + name() + ": " + media + ", " + inFlight() + " awaiting completion";
    }
}
