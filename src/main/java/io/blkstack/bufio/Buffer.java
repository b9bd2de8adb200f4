package io.blkstack.bufio;

import io.blkstack.mem.Page;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.zip.Checksum;

/**
 * One cached metadata block of a {@link BufferCache} (the kernel's {@code struct dm_buffer}).
 *
 * <p>The data lives in arena pages, {@code blockSize / 4096} of them. A holder gets the buffer from
 * {@link BufferCache#read}, {@link BufferCache#get} or {@link BufferCache#newBuffer}, reads and
 * writes it with the accessors below, calls {@link BufferCache#markDirty} after changing it, and
 * gives it back with {@link BufferCache#release}. List links and state are guarded by the cache's
 * mutex; the I/O flags are also changed by completion callbacks under the cache's spin lock.
 */
public final class Buffer {

    final BufferCache cache;
    final Page[] pages;
    long block = -1;
    int holdCount;
    boolean dirty;
    volatile boolean reading;
    volatile boolean writing;
    volatile boolean ioError;
    /**
     * Whether a holder checked the contents (dm-block-manager's validator) since they came from the
     * device or were zeroed: cleared by the cache whenever the buffer takes a block or is zeroed, set
     * by {@link #markValidated}, so a checksum is verified once per read from the device, not on
     * every use of the cached block.
     */
    volatile boolean validated;
    long lastAccessNanos;
    /** Which LRU list holds the buffer: 0 none, 1 clean, 2 dirty. */
    int list;
    Buffer prev;
    Buffer next;

    Buffer(BufferCache cache, Page[] pages) {
        this.cache = cache;
        this.pages = pages;
    }

    /** The block number on the cache's device. */
    public long block() {
        return block;
    }

    /** The block size in bytes. */
    public int size() {
        return pages.length * Page.SIZE;
    }

    /** Reads a little-endian-free (big-endian, as ByteBuffer) long at byte {@code offset}. */
    public long getLong(int offset) {
        check(offset, 8);
        return pages[offset >>> Page.SHIFT].buffer().getLong(offset & (Page.SIZE - 1));
    }

    /**
     * Reads {@code count} longs (big-endian, as {@link #getLong}) from byte {@code offset}, a
     * multiple of 8, into {@code dst} from index 0: one bulk copy per page instead of a call per long.
     */
    public void getLongs(int offset, long[] dst, int count) {
        copyLongs(offset, dst, count, false);
    }

    /** Writes {@code count} longs from {@code src} (index 0 on) at byte {@code offset}, a multiple of 8. */
    public void putLongs(int offset, long[] src, int count) {
        copyLongs(offset, src, count, true);
    }

    private void copyLongs(int offset, long[] array, int count, boolean intoBuffer) {
        check(offset, 8 * count);
        requireAligned(offset);
        for (int done = 0; done < count; ) {
            int at = offset + 8 * done;
            int inPage = at & (Page.SIZE - 1);
            int n = Math.min(count - done, (Page.SIZE - inPage) / 8);
            MemorySegment page = MemorySegment.ofBuffer(pages[at >>> Page.SHIFT].buffer());
            if (intoBuffer) {
                MemorySegment.copy(array, done, page, BIG_ENDIAN_LONG, inPage, n);
            } else {
                MemorySegment.copy(page, BIG_ENDIAN_LONG, inPage, array, done, n);
            }
            done += n;
        }
    }

    /**
     * Moves {@code count} longs from byte {@code from} to byte {@code to} (both multiples of 8; the
     * ranges may overlap, as with {@code memmove}): in place, so a sorted array in the block makes
     * room for an entry without being decoded.
     */
    public void moveLongs(int from, int to, int count) {
        check(from, 8 * count);
        check(to, 8 * count);
        requireAligned(from);
        requireAligned(to);
        int bytes = 8 * count;
        if (bytes == 0) {
            return;
        }
        int page = from >>> Page.SHIFT;
        if ((from + bytes - 1) >>> Page.SHIFT == page && to >>> Page.SHIFT == page
                && (to + bytes - 1) >>> Page.SHIFT == page) {
            MemorySegment segment = MemorySegment.ofBuffer(pages[page].buffer());
            int mask = Page.SIZE - 1;
            MemorySegment.copy(segment, from & mask, segment, to & mask, bytes);
            return;
        }
        if (to > from) {
            for (int i = count - 1; i >= 0; i--) {
                putLong(to + 8 * i, getLong(from + 8 * i));
            }
        } else {
            for (int i = 0; i < count; i++) {
                putLong(to + 8 * i, getLong(from + 8 * i));
            }
        }
    }

    /** Whether a holder validated the contents since the cache last read or zeroed them. */
    public boolean isValidated() {
        return validated;
    }

    /**
     * Notes that the contents passed the holder's check (or were just sealed by it): the cache clears
     * this when the buffer is read from the device again or zeroed.
     */
    public void markValidated() {
        validated = true;
    }

    /** Writes a long at byte {@code offset}; the caller marks the buffer dirty. */
    public void putLong(int offset, long value) {
        check(offset, 8);
        pages[offset >>> Page.SHIFT].buffer().putLong(offset & (Page.SIZE - 1), value);
    }

    /** Reads an int at byte {@code offset}. */
    public int getInt(int offset) {
        check(offset, 4);
        return pages[offset >>> Page.SHIFT].buffer().getInt(offset & (Page.SIZE - 1));
    }

    /** Writes an int at byte {@code offset}. */
    public void putInt(int offset, int value) {
        check(offset, 4);
        pages[offset >>> Page.SHIFT].buffer().putInt(offset & (Page.SIZE - 1), value);
    }

    /** Feeds {@code length} bytes from byte {@code offset} to {@code checksum} (metadata checksums), without copying. */
    public void updateChecksum(Checksum checksum, int offset, int length) {
        check(offset, length);
        int done = 0;
        while (done < length) {
            int at = offset + done;
            int inPage = at & (Page.SIZE - 1);
            int n = Math.min(length - done, Page.SIZE - inPage);
            checksum.update(pages[at >>> Page.SHIFT].buffer().slice(inPage, n));
            done += n;
        }
    }

    /** Zeroes the buffer. */
    public void zero() {
        validated = false;
        for (Page p : pages) {
            p.zero(0, Page.SIZE);
        }
    }

    private static final ValueLayout.OfLong BIG_ENDIAN_LONG = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.BIG_ENDIAN);

    private void requireAligned(int offset) {
        if ((offset & 7) != 0) {
            throw new IllegalArgumentException("buffer of block " + block + ": longs at " + offset + ", not a multiple of 8");
        }
    }

    private void check(int offset, int length) {
        if (offset < 0 || length < 0 || offset + (long) length > size()) {
            throw new IllegalArgumentException("buffer of block " + block + ": " + length + " bytes at " + offset
                    + " outside " + size());
        }
    }

    @Override
    public String toString() {
        return "buffer " + block + (dirty ? " dirty" : "") + (writing ? " writing" : "") + (reading ? " reading" : "")
                + " hold " + holdCount;
    }
}
