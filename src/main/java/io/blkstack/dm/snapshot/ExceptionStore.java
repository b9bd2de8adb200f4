package io.blkstack.dm.snapshot;

import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;

/**
 * Where a snapshot keeps its exceptions (dm-snapshot's {@code dm_exception_store}): which COW chunk
 * holds the old contents of which origin chunk, and which COW chunk is free next.
 *
 * <p>The in-memory table answers lookups; {@link #commit} makes a batch of exceptions durable and
 * is called only after their data chunks were copied, from the snapshot's workqueue (it may wait
 * for I/O). The snapshot's spin lock guards {@link #lookup}, {@link #allocate} and {@link #insert};
 * {@link #commit} touches only the store's own on-disk bookkeeping, on one worker at a time.
 */
public abstract sealed class ExceptionStore permits TransientStore, PersistentStore {

    final BlockDevice cow;
    final int chunkSectors;
    final int chunkShift;
    final long cowChunks;
    final ChunkMap exceptions;

    /** A store of {@code chunkSectors}-sector chunks (a power of two) on {@code cow}. */
    ExceptionStore(BlockDevice cow, int chunkSectors) {
        if (chunkSectors < 8 || Integer.bitCount(chunkSectors) != 1) {
            throw new IllegalArgumentException("chunk size " + chunkSectors + " sectors is not a power of two >= 8");
        }
        this.cow = cow;
        this.chunkSectors = chunkSectors;
        this.chunkShift = Integer.numberOfTrailingZeros(chunkSectors);
        this.cowChunks = cow.capacitySectors() >>> chunkShift;
        this.exceptions = new ChunkMap(cowChunks);
    }

    /** The COW chunk holding the old contents of origin chunk {@code oldChunk}, or -1. */
    final long lookup(long oldChunk) {
        return exceptions.get(oldChunk);
    }

    /** Makes a committed exception visible to lookups. */
    final void insert(long oldChunk, long newChunk) {
        exceptions.put(oldChunk, newChunk);
    }

    /** How many exceptions are visible. */
    final int exceptionCount() {
        return exceptions.size();
    }

    /** Reserves the next free COW data chunk, or returns -1 if the COW device is full. */
    abstract long allocate();

    /**
     * How many of the next {@link #allocate} calls, at most {@code maxChunks}, give adjacent chunks
     * (no metadata chunk in between, not past the end); 0 if the COW device is full.
     */
    abstract int allocatableRun(int maxChunks);

    /**
     * Makes the first {@code count} exceptions of {@code batch} (each a run of adjacent chunks) durable (their data is already on
     * the COW device). May wait for I/O; called from the snapshot's workqueue only.
     */
    abstract BioStatus commit(PendingException[] batch, int count);

    /** Records on the device that the snapshot is invalid. May wait for I/O. */
    abstract BioStatus persistInvalid();

    /** Whether the store was found valid when opened (a fresh store is valid). */
    abstract boolean validOnOpen();

    /** Sectors of the COW device in use, metadata included (dm's {@code sectors_allocated}). */
    abstract long sectorsAllocated();

    /** Sectors of metadata (header and exception areas). */
    abstract long metadataSectors();

    /** The COW device's size in sectors. */
    final long totalSectors() {
        return cow.capacitySectors();
    }

    /** Releases the store's pages and bio set. */
    void close() {
    }
}
