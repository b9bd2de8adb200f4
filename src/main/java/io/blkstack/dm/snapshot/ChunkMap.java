package io.blkstack.dm.snapshot;

import java.util.Arrays;

/**
 * A fixed-capacity map from origin chunk to COW chunk (the exception table of dm-snapshot's
 * {@code complete} hash), open addressing with linear probing over two preallocated arrays.
 *
 * <p>Why fixed: a snapshot can hold at most as many exceptions as its COW device has data chunks,
 * so the table is sized once at construction and the data path never allocates. Entries are never
 * removed (an exception lives as long as the snapshot). Callers serialise access (the snapshot's
 * spin lock).
 */
final class ChunkMap {

    private static final long EMPTY = -1;

    private final long[] keys;
    private final long[] values;
    private final int mask;
    private final int capacityEntries;
    private int size;

    /** A map that holds up to {@code maxEntries} exceptions. */
    ChunkMap(long maxEntries) {
        if (maxEntries < 0 || maxEntries > (1 << 28)) {
            throw new IllegalArgumentException("chunk map for " + maxEntries + " entries (0.." + (1 << 28) + ")");
        }
        int slots = Integer.highestOneBit((int) Math.max(4, maxEntries * 2 - 1)) << 1;
        this.keys = new long[slots];
        this.values = new long[slots];
        this.mask = slots - 1;
        this.capacityEntries = (int) maxEntries;
        Arrays.fill(keys, EMPTY);
    }

    /** The COW chunk of {@code oldChunk}, or -1 if it has no exception. */
    long get(long oldChunk) {
        for (int i = slot(oldChunk); ; i = (i + 1) & mask) {
            long k = keys[i];
            if (k == oldChunk) {
                return values[i];
            }
            if (k == EMPTY) {
                return -1;
            }
        }
    }

    /** Records {@code oldChunk -> newChunk}; an origin chunk has at most one exception. */
    void put(long oldChunk, long newChunk) {
        if (oldChunk < 0 || newChunk < 0) {
            throw new IllegalArgumentException("exception " + oldChunk + " -> " + newChunk);
        }
        for (int i = slot(oldChunk); ; i = (i + 1) & mask) {
            long k = keys[i];
            if (k == oldChunk) {
                throw new IllegalStateException("origin chunk " + oldChunk + " already maps to " + values[i]
                        + ", second exception to " + newChunk);
            }
            if (k == EMPTY) {
                if (size >= capacityEntries) {
                    throw new IllegalStateException("chunk map full at " + size + " exceptions");
                }
                keys[i] = oldChunk;
                values[i] = newChunk;
                size++;
                return;
            }
        }
    }

    /** How many exceptions the map holds. */
    int size() {
        return size;
    }

    private int slot(long key) {
        long h = key * 0x9E3779B97F4A7C15L;
        return (int) (h ^ (h >>> 32)) & mask;
    }
}
