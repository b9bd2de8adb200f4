package io.blkstack.dm.thin.metadata;

import java.util.BitSet;

/**
 * Which metadata blocks are in use: those reachable from the last committed superblock, and those
 * reachable from the transaction in progress. A block may be handed out only if it is free in
 * both, so a transaction never overwrites a block the committed trees still use; that is what
 * makes a crash at any instant fall back to the last commit (DESIGN.md section 6).
 *
 * <p>Metadata blocks are never shared between trees in blkstack (a thin snapshot copies the
 * origin's mapping entries rather than sharing subtrees), so membership is all the accounting a
 * block needs, and reopening rebuilds it by walking the trees. Guarded by the metadata mutex.
 */
public final class MetadataSpace {

    /** Block 0 holds the superblock and is never allocated. */
    public static final long SUPERBLOCK = 0;

    private final long blockCount;
    private BitSet committed = new BitSet();
    private BitSet current = new BitSet();
    private int searchHint = 1;

    /** Space over {@code blockCount} metadata blocks. */
    public MetadataSpace(long blockCount) {
        if (blockCount < 2 || blockCount > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("metadata space of " + blockCount + " blocks outside 2.." + Integer.MAX_VALUE);
        }
        this.blockCount = blockCount;
        committed.set(0);
        current.set(0);
    }

    /** Allocates a block free in both the committed and the current state. */
    public long alloc() {
        int b = nextFree(searchHint);
        if (b < 0) {
            b = nextFree(1);
        }
        if (b < 0) {
            throw new MetadataFullException("metadata space full: " + current.cardinality() + " of " + blockCount
                    + " blocks in use, " + committed.cardinality() + " committed");
        }
        current.set(b);
        searchHint = b + 1;
        return b;
    }

    private int nextFree(int from) {
        for (int b = from; b < blockCount; b++) {
            if (!current.get(b) && !committed.get(b)) {
                return b;
            }
        }
        return -1;
    }

    /** Drops a block from the current transaction; it becomes reusable now if it was allocated in it, else after the commit. */
    public void free(long block) {
        checkBlock(block);
        if (!current.get((int) block)) {
            throw new IllegalStateException("free of metadata block " + block + " that is not in use");
        }
        current.clear((int) block);
    }

    /** Whether the block was allocated by the transaction in progress (so it may be changed in place). */
    public boolean isNew(long block) {
        checkBlock(block);
        return current.get((int) block) && !committed.get((int) block);
    }

    /** Marks a block in use while rebuilding from the trees on open. */
    void markUsed(long block) {
        checkBlock(block);
        if (current.get((int) block)) {
            throw new IllegalStateException("metadata block " + block + " reached twice while walking the trees");
        }
        current.set((int) block);
    }

    /** Makes the current state the committed one (after the superblock reached the device). */
    public void commit() {
        committed = (BitSet) current.clone();
    }

    /** Blocks in use by the current transaction, superblock included. */
    public long usedBlocks() {
        return current.cardinality();
    }

    public long blockCount() {
        return blockCount;
    }

    /** Whether {@code block} is in use by the current transaction. */
    public boolean inUse(long block) {
        return current.get((int) block);
    }

    private void checkBlock(long block) {
        if (block < 0 || block >= blockCount) {
            throw new IllegalArgumentException("metadata block " + block + " outside 0.." + (blockCount - 1));
        }
    }
}
