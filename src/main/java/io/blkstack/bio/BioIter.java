package io.blkstack.bio;

import io.blkstack.mem.Page;

/**
 * A reusable cursor over the segments of a bio's remaining range (the kernel's
 * {@code bio_for_each_segment}). A device keeps one per I/O task and resets it per bio, so walking
 * a bio allocates nothing. The cursor copies the bio's iterator: walking does not advance the bio.
 *
 * <pre>
 * for (iter.reset(bio); iter.next(); ) {
 *     copy(iter.page(), iter.offset(), iter.length(), iter.bioOffset());
 * }
 * </pre>
 */
public final class BioIter {

    private BioVec[] vecs;
    private int idx;
    private int done;
    private int left;
    private int consumed;
    private Page page;
    private int offset;
    private int length;
    private int segmentBioOffset;

    /** Points the cursor at the start of {@code bio}'s remaining range. */
    public BioIter reset(Bio bio) {
        if (bio.op().hasData() && bio.sizeBytes() > 0 && bio.vecs() == null) {
            throw new IllegalStateException("bio " + bio + " has a size but no vec array");
        }
        this.vecs = bio.op().hasData() ? bio.vecs() : null;
        this.idx = bio.iterIndex();
        this.done = bio.iterBvecDone();
        this.left = bio.op().hasData() ? bio.sizeBytes() : 0;
        this.consumed = 0;
        this.page = null;
        this.offset = 0;
        this.length = 0;
        this.segmentBioOffset = 0;
        return this;
    }

    /**
     * Points the cursor at every segment the bio owns, from the first, whatever its iterator says
     * (the kernel's {@code bio_for_each_segment_all}): the owner of the pages uses this after
     * completion, when splits have advanced the bio's iterator to its end.
     */
    public BioIter resetAll(Bio bio) {
        if (!bio.ownsVecs()) {
            throw new IllegalStateException("resetAll on " + bio + ", which does not own its vec array");
        }
        int total = 0;
        BioVec[] v = bio.vecs();
        for (int i = 0; i < bio.vecCount(); i++) {
            total += v[i].length();
        }
        this.vecs = v;
        this.idx = 0;
        this.done = 0;
        this.left = total;
        this.consumed = 0;
        this.page = null;
        this.offset = 0;
        this.length = 0;
        this.segmentBioOffset = 0;
        return this;
    }

    /** Moves to the next segment; false when the range is exhausted. */
    public boolean next() {
        if (left == 0) {
            page = null;
            length = 0;
            return false;
        }
        BioVec v = vecs[idx];
        int n = Math.min(v.length() - done, left);
        if (n <= 0) {
            throw new IllegalStateException("bio segment " + idx + " " + v + " has no bytes left at " + done);
        }
        page = v.page();
        offset = v.offset() + done;
        length = n;
        segmentBioOffset = consumed;
        consumed += n;
        left -= n;
        done += n;
        if (done == v.length()) {
            idx++;
            done = 0;
        }
        return true;
    }

    /** The current segment's page. */
    public Page page() {
        return page;
    }

    /** The current segment's offset in its page. */
    public int offset() {
        return offset;
    }

    /** The current segment's length in bytes. */
    public int length() {
        return length;
    }

    /** Where the current segment starts, in bytes from the start of the bio's range. */
    public int bioOffset() {
        return segmentBioOffset;
    }
}
