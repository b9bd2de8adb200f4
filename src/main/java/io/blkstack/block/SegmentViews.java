package io.blkstack.block;

import io.blkstack.bio.BioIter;
import io.blkstack.mem.Page;
import java.nio.ByteBuffer;

/**
 * Channel views of a bio's segments with physically contiguous segments merged, as the kernel's
 * {@code blk_rq_map_sg} merges neighbouring pages into one scatter-gather entry: segments that
 * follow each other in their page arena (the end of one is the start of the next) become one
 * buffer. A 1 MiB bio whose pages were taken as one run moves as one buffer in one system call,
 * and takes one view object instead of 256.
 */
public final class SegmentViews {

    private SegmentViews() {
    }

    /**
     * Appends views of the segments {@code iter} still yields to {@code out} from {@code used} on,
     * merging contiguous ones; returns the new fill. {@code out} must have room for one view per
     * segment (merging only ever needs fewer).
     */
    public static int fill(BioIter iter, ByteBuffer[] out, int used) {
        Page runPage = null;
        int runOffset = 0;
        int runLength = 0;
        long runEnd = 0;
        while (iter.next()) {
            Page page = iter.page();
            long start = (long) page.index() * Page.SIZE + iter.offset();
            if (runPage != null && page.allocator() == runPage.allocator() && start == runEnd) {
                runLength += iter.length();
                runEnd += iter.length();
                continue;
            }
            if (runPage != null) {
                used = put(out, used, view(runPage, runOffset, runLength));
            }
            runPage = page;
            runOffset = iter.offset();
            runLength = iter.length();
            runEnd = start + runLength;
        }
        if (runPage != null) {
            used = put(out, used, view(runPage, runOffset, runLength));
        }
        return used;
    }

    /** Stores one view, refusing to overrun the array. */
    private static int put(ByteBuffer[] out, int used, ByteBuffer view) {
        if (used == out.length) {
            throw new IllegalStateException("segment views: more than " + out.length + " views");
        }
        out[used] = view;
        return used + 1;
    }

    /** One view of a run: a page slice if it stays in its page, else a run of the arena. */
    private static ByteBuffer view(Page first, int offset, int length) {
        if (offset + length <= Page.SIZE) {
            return first.slice(offset, length);
        }
        return first.allocator().sliceRun(first, offset, length);
    }
}
