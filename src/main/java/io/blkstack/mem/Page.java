package io.blkstack.mem;

import java.nio.ByteBuffer;

/**
 * One 4 KiB page of a kernel's arena. Page objects are created once with the arena; allocating
 * one hands out an existing object, so the data path never allocates page memory of its own.
 */
public final class Page {

    public static final int SIZE = 4096;
    public static final int SHIFT = 12;

    private final PageAllocator allocator;
    private final int index;
    private final ByteBuffer buffer;
    boolean allocated;
    /** The promise this page was allocated through, or null (guarded by the allocator's lock). */
    Reservation reservation;

    Page(PageAllocator allocator, int index, ByteBuffer buffer) {
        this.allocator = allocator;
        this.index = index;
        this.buffer = buffer;
    }

    /** The page's position in its arena. */
    public int index() {
        return index;
    }

    /**
     * The page's memory, 4096 bytes of direct memory. Use absolute get and put; for channel I/O
     * take a {@link #slice}, since concurrent fragments of one page must not share a position.
     */
    public ByteBuffer buffer() {
        return buffer;
    }

    /** A view of {@code length} bytes at {@code offset}, for channel I/O. */
    public ByteBuffer slice(int offset, int length) {
        if (offset < 0 || length < 0 || offset + length > SIZE) {
            throw new IllegalArgumentException("page slice out of range: offset " + offset + " length " + length);
        }
        return buffer.slice(offset, length);
    }

    /** Fills {@code length} bytes at {@code offset} with zero. */
    public void zero(int offset, int length) {
        buffer.put(offset, allocator.zeroes, 0, length);
    }

    /** Copies {@code length} bytes from another page. */
    public void copyFrom(int offset, Page source, int sourceOffset, int length) {
        buffer.put(offset, source.buffer, sourceOffset, length);
    }

    /** The allocator this page belongs to. */
    public PageAllocator allocator() {
        return allocator;
    }

    @Override
    public String toString() {
        return "page " + index;
    }
}
