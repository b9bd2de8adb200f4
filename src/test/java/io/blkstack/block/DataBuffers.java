package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioIter;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

/**
 * Builds data bios for tests over pages of the kernel's arena, and gives every page back on close.
 * Segments can be cut at random lengths so vec boundaries fall anywhere inside sectors.
 */
public final class DataBuffers implements AutoCloseable {

    private final Kernel kernel;
    private final List<Page> pages = new ArrayList<>();

    public DataBuffers(Kernel kernel) {
        this.kernel = kernel;
    }

    /**
     * A bio of {@code bytes} bytes on {@code dev} at {@code sector}, one page per segment; segment
     * lengths are whole pages, or random in 512..4096 when {@code random} is given.
     */
    public Bio bio(BioSet set, BlockDevice dev, BioOp op, long sector, int bytes, Random random) {
        int maxVecs = (bytes + 511) / 512;
        Bio bio = set.alloc(Gfp.NOIO, Math.min(Bio.VECS_MAX, maxVecs));
        bio.init(dev, op, 0, sector);
        int left = bytes;
        while (left > 0) {
            int len = random == null ? Math.min(Page.SIZE, left) : Math.min(left, 512 + random.nextInt(Page.SIZE - 511));
            int off = random == null ? 0 : random.nextInt(Page.SIZE - len + 1);
            Page page = kernel.pages().alloc(Gfp.KERNEL);
            if (page == null) {
                throw new IllegalStateException("test arena exhausted");
            }
            pages.add(page);
            if (!bio.addPage(page, len, off)) {
                throw new IllegalStateException("vec array full at " + bio.sizeBytes() + " of " + bytes + " bytes");
            }
            left -= len;
        }
        return bio;
    }

    /** Copies every segment the bio owns into a new array, whatever its iterator says now. */
    public static byte[] contents(Bio bio) {
        BioIter iter = new BioIter();
        int total = 0;
        for (iter.resetAll(bio); iter.next(); ) {
            total += iter.length();
        }
        byte[] out = new byte[total];
        for (iter.resetAll(bio); iter.next(); ) {
            iter.page().buffer().get(iter.offset(), out, iter.bioOffset(), iter.length());
        }
        return out;
    }

    /** Frees every page handed out. */
    @Override
    public void close() {
        for (Page p : pages) {
            kernel.pages().free(p);
        }
        pages.clear();
    }
}
