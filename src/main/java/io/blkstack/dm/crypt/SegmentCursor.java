package io.blkstack.dm.crypt;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioVec;

/**
 * A sequential byte cursor over a bio's remaining range that copies whole runs in or out across
 * segment boundaries (segments may cut sectors anywhere). Crypt uses two per bio: one reads a data
 * unit into a scratch buffer, the other writes the transformed unit back at the same place.
 * Reusable: {@link #reset} per bio, so walking allocates nothing. Does not move the bio's iterator.
 */
final class SegmentCursor {

    private BioVec[] vecs;
    private int idx;
    private int done;
    private int left;

    /** Points the cursor at the start of {@code bio}'s remaining range. */
    SegmentCursor reset(Bio bio) {
        if (!bio.op().hasData()) {
            throw new IllegalStateException("segment cursor on " + bio + ", which carries no data");
        }
        this.vecs = bio.vecs();
        this.idx = bio.iterIndex();
        this.done = bio.iterBvecDone();
        this.left = bio.sizeBytes();
        return this;
    }

    /** Bytes not yet walked. */
    int remaining() {
        return left;
    }

    /** Copies the next {@code length} bytes of the range into {@code dst} at {@code offset}. */
    void copyOut(byte[] dst, int offset, int length) {
        walk(dst, offset, length, true);
    }

    /** Overwrites the next {@code length} bytes of the range with {@code src} at {@code offset}. */
    void copyIn(byte[] src, int offset, int length) {
        walk(src, offset, length, false);
    }

    private void walk(byte[] buf, int offset, int length, boolean out) {
        if (length < 0 || length > left) {
            throw new IllegalArgumentException("segment cursor: " + length + " bytes with " + left + " left");
        }
        int pos = offset;
        int todo = length;
        while (todo > 0) {
            BioVec v = vecs[idx];
            int n = Math.min(v.length() - done, todo);
            if (out) {
                v.page().buffer().get(v.offset() + done, buf, pos, n);
            } else {
                v.page().buffer().put(v.offset() + done, buf, pos, n);
            }
            pos += n;
            todo -= n;
            done += n;
            if (done == v.length()) {
                idx++;
                done = 0;
            }
        }
        left -= length;
    }
}
