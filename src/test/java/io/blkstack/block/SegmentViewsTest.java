package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioIter;
import io.blkstack.bio.BioSet;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.nio.ByteBuffer;
import org.junit.jupiter.api.Test;

/** Segment views: contiguous arena pages merge into one view; anything else stays apart. */
class SegmentViewsTest {

    /** Fills each page with its own byte so a view's content shows which pages it covers. */
    private static void stamp(Page[] pages, int count) {
        for (int i = 0; i < count; i++) {
            for (int b = 0; b < Page.SIZE; b++) {
                pages[i].buffer().put(b, (byte) (i + 1));
            }
        }
    }

    @Test
    void bulkTakenRunMergesIntoOneViewAndMixedPagesDoNot() {
        try (Kernel kernel = Kernel.builder().memory(256 * Page.SIZE).build();
                var self = kernel.attach("test")) {
            BioSet set = new BioSet(kernel, "test", 4, 4, null, false);
            Page[] pages = new Page[8];
            int taken = kernel.pages().allocBulk(Gfp.KERNEL, pages, 4);
            assertEquals(4, taken);
            for (int i = 1; i < 4; i++) {
                assertEquals(pages[i - 1].index() + 1, pages[i].index(), "a bulk take hands out an ascending run");
            }
            stamp(pages, 4);
            Bio bio = set.alloc(Gfp.KERNEL, 4);
            for (int i = 0; i < 3; i++) {
                bio.addPage(pages[i], Page.SIZE, 0);
            }
            bio.addPage(pages[3], 512, 0); // a short tail still merges: it starts where the run ends
            ByteBuffer[] views = new ByteBuffer[4];
            int count = SegmentViews.fill(new BioIter().resetAll(bio), views, 0);
            assertEquals(1, count);
            assertEquals(3 * Page.SIZE + 512, views[0].remaining());
            assertEquals(1, views[0].get(0));
            assertEquals(3, views[0].get(3 * Page.SIZE - 1));
            assertEquals(4, views[0].get(3 * Page.SIZE + 511));
            bio.put();

            // Reversed pages and a segment starting inside its page break the run.
            Bio mixed = set.alloc(Gfp.KERNEL, 3);
            mixed.addPage(pages[1], Page.SIZE, 0);
            mixed.addPage(pages[0], Page.SIZE, 0);
            mixed.addPage(pages[2], 1024, 512);
            java.util.Arrays.fill(views, null);
            count = SegmentViews.fill(new BioIter().resetAll(mixed), views, 0);
            assertEquals(3, count);
            assertEquals(2, views[0].get(0));
            assertEquals(1, views[1].get(0));
            assertEquals(1024, views[2].remaining());
            assertEquals(3, views[2].get(0));
            assertNull(views[3]);
            mixed.put();

            kernel.pages().freeBulk(pages, 4);
            Page[] again = new Page[4];
            assertEquals(4, kernel.pages().allocBulk(Gfp.KERNEL, again, 4));
            for (int i = 0; i < 4; i++) {
                assertEquals(pages[i], again[i], "a run freed together comes back as the same run");
            }
            kernel.pages().freeBulk(again, 4);
            set.close();
        }
    }

    @Test
    void bulkTakeStopsAtTheWatermarkAndDoubleBulkFreeThrows() {
        try (Kernel kernel = Kernel.builder().memory(64 * Page.SIZE).build();
                var self = kernel.attach("test")) {
            Page[] pages = new Page[64];
            int taken = kernel.pages().allocBulk(Gfp.KERNEL, pages, 64);
            // The reserve below the min watermark is never handed out in bulk.
            org.junit.jupiter.api.Assertions.assertTrue(taken > 0 && taken < 64, "took " + taken);
            assertEquals(0, kernel.pages().allocBulk(Gfp.NOWAIT, new Page[1], 1), "non-blocking flags take nothing in bulk");
            kernel.pages().freeBulk(pages, taken);
            org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class,
                    () -> kernel.pages().freeBulk(pages, 1));
        }
    }
}
