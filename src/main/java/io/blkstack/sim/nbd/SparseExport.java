package io.blkstack.sim.nbd;

import java.nio.ByteBuffer;
import java.util.HashMap;
import java.util.Map;

/**
 * The data of a simulated NBD server's export: sparse 4 KiB chunks in heap memory, in two layers as
 * a server with a volatile write cache has them. Writes, trims and write-zeroes land in the
 * volatile layer; {@link #flush} makes it stable; {@link #lose} drops it (the server crashed and
 * came back with what it had flushed). A chunk in neither layer is a hole and reads as zeros.
 *
 * <p>Only the simulated server's connection tasks touch it, one at a time (the checker runs one
 * task at a time), so it has no lock of its own. Memory grows with what is written, never with the
 * export's size: a 1 GiB export costs nothing until written.
 */
final class SparseExport {

    /** Bytes per chunk: the unit of allocation and of holes. */
    static final int CHUNK = 4096;
    /** A volatile entry that stands for a hole (a trimmed or zeroed whole chunk). */
    private static final byte[] HOLE = new byte[0];

    private final long sizeBytes;
    private final Map<Long, byte[]> stable = new HashMap<>();
    private final Map<Long, byte[]> dirty = new HashMap<>();

    SparseExport(long sizeBytes) {
        if (sizeBytes <= 0 || sizeBytes % CHUNK != 0) {
            throw new IllegalArgumentException("simulated export size " + sizeBytes + " is not a positive multiple of "
                    + CHUNK);
        }
        this.sizeBytes = sizeBytes;
    }

    long sizeBytes() {
        return sizeBytes;
    }

    /** The chunk as a read sees it, or null for a hole. */
    private byte[] current(long chunk) {
        byte[] d = dirty.get(chunk);
        if (d != null) {
            return d == HOLE ? null : d;
        }
        return stable.get(chunk);
    }

    /** The chunk's volatile copy to change, made from what a read sees now. */
    private byte[] writable(long chunk) {
        byte[] d = dirty.get(chunk);
        if (d != null && d != HOLE) {
            return d;
        }
        byte[] copy = new byte[CHUNK];
        byte[] now = d == HOLE ? null : stable.get(chunk);
        if (now != null) {
            System.arraycopy(now, 0, copy, 0, CHUNK);
        }
        dirty.put(chunk, copy);
        return copy;
    }

    /** Whether the chunk holding {@code offset} has data (is not a hole). */
    boolean isData(long offset) {
        return current(offset / CHUNK) != null;
    }

    /** Copies {@code length} bytes at {@code offset} into {@code dst} (zeros for holes). */
    void read(long offset, int length, ByteBuffer dst) {
        for (long at = offset, end = offset + length; at < end; ) {
            long chunk = at / CHUNK;
            int in = (int) (at % CHUNK);
            int n = (int) Math.min(CHUNK - in, end - at);
            byte[] c = current(chunk);
            if (c == null) {
                for (int i = 0; i < n; i++) {
                    dst.put((byte) 0);
                }
            } else {
                dst.put(c, in, n);
            }
            at += n;
        }
    }

    /** Writes {@code src}'s remaining bytes at {@code offset} into the volatile layer. */
    void write(long offset, ByteBuffer src) {
        for (long at = offset; src.hasRemaining(); ) {
            int in = (int) (at % CHUNK);
            int n = Math.min(CHUNK - in, src.remaining());
            src.get(writable(at / CHUNK), in, n);
            at += n;
        }
    }

    /** Zeros {@code length} bytes at {@code offset}; whole chunks become holes when {@code punch}. */
    void zero(long offset, int length, boolean punch) {
        for (long at = offset, end = offset + length; at < end; ) {
            long chunk = at / CHUNK;
            int in = (int) (at % CHUNK);
            int n = (int) Math.min(CHUNK - in, end - at);
            if (n == CHUNK && punch) {
                dirty.put(chunk, HOLE);
            } else if (current(chunk) != null || !punch) {
                java.util.Arrays.fill(writable(chunk), in, in + n, (byte) 0);
            }
            at += n;
        }
    }

    /** Makes every volatile change stable. */
    void flush() {
        for (Map.Entry<Long, byte[]> e : dirty.entrySet()) {
            if (e.getValue() == HOLE) {
                stable.remove(e.getKey());
            } else {
                stable.put(e.getKey(), e.getValue());
            }
        }
        dirty.clear();
    }

    /** Drops every volatile change; returns how many chunks had one. */
    int lose() {
        int n = dirty.size();
        dirty.clear();
        return n;
    }

    /** Chunks with a volatile change (for tests and state). */
    int dirtyChunks() {
        return dirty.size();
    }
}
