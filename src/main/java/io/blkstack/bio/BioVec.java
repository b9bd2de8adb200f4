package io.blkstack.bio;

import io.blkstack.mem.Page;

/**
 * One segment of a bio's payload: {@code length} bytes at {@code offset} in a page (the kernel's
 * {@code bio_vec}). Mutable, and preallocated inside the vec arrays of a {@link BioSet}'s vec pool,
 * so building a bio allocates nothing per I/O.
 */
public final class BioVec {

    private Page page;
    private int offset;
    private int length;

    /** Creates an empty segment; only vec pools call this. */
    BioVec() {
    }

    /** Points the segment at a page range; checks that it lies inside the page. */
    public void set(Page page, int offset, int length) {
        if (page == null) {
            throw new IllegalArgumentException("bio_vec: null page");
        }
        if (offset < 0 || length <= 0 || offset + length > Page.SIZE) {
            throw new IllegalArgumentException("bio_vec: offset " + offset + " length " + length
                    + " outside a " + Page.SIZE + "-byte page");
        }
        this.page = page;
        this.offset = offset;
        this.length = length;
    }

    /** Forgets the page, so a pooled vec array keeps no stale reference. */
    void clear() {
        page = null;
        offset = 0;
        length = 0;
    }

    /** Grows the segment by {@code bytes} (a merge of a contiguous add). */
    void extend(int bytes) {
        if (offset + length + bytes > Page.SIZE) {
            throw new IllegalStateException("bio_vec: extending " + offset + "+" + length + " by " + bytes
                    + " crosses the page end");
        }
        length += bytes;
    }

    public Page page() {
        return page;
    }

    public int offset() {
        return offset;
    }

    public int length() {
        return length;
    }

    @Override
    public String toString() {
        return "[" + page + " +" + offset + " len " + length + "]";
    }
}
