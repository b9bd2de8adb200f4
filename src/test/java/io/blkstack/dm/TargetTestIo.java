package io.blkstack.dm;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.util.Arrays;
import java.util.Random;

/**
 * Synchronous byte-array I/O for the target tests, safe to use from several tasks at once: each
 * call takes pages from the arena, builds one bio (segments cut at random lengths and offsets when
 * a random source is given, so segment edges fall inside sectors), submits it, waits, copies the
 * data, and gives the bio and the pages back.
 */
public final class TargetTestIo {

    private final Kernel kernel;
    private final BioSet set;

    public TargetTestIo(Kernel kernel, BioSet set) {
        this.kernel = kernel;
        this.set = set;
    }

    /** Writes {@code data} at {@code sector}; returns the status. {@code after} gets the bio's bytes after completion. */
    public BioStatus write(BlockDevice dev, long sector, byte[] data, Random layout, byte[] after) {
        Bio bio = build(dev, BioOp.WRITE, sector, data.length, layout);
        bio.copyFrom(data, 0);
        try {
            BioStatus status = Submit.submitAndWaitStatus(bio);
            if (after != null) {
                bio.copyTo(after, 0);
            }
            return status;
        } finally {
            release(bio);
        }
    }

    /** Writes {@code data} at {@code sector}; returns the status. */
    public BioStatus write(BlockDevice dev, long sector, byte[] data, Random layout) {
        return write(dev, sector, data, layout, null);
    }

    /** Reads {@code into.length} bytes at {@code sector}; returns the status. */
    public BioStatus read(BlockDevice dev, long sector, byte[] into, Random layout) {
        Bio bio = build(dev, BioOp.READ, sector, into.length, layout);
        byte[] junk = new byte[into.length];
        Arrays.fill(junk, (byte) 0x5a);
        bio.copyFrom(junk, 0);
        try {
            BioStatus status = Submit.submitAndWaitStatus(bio);
            bio.copyTo(into, 0);
            return status;
        } finally {
            release(bio);
        }
    }

    /** Sends an empty FLUSH to {@code dev}; returns the status. */
    public BioStatus flush(BlockDevice dev) {
        Bio bio = set.alloc(Gfp.NOIO, 0).init(dev, BioOp.FLUSH, 0, 0);
        try {
            return Submit.submitAndWaitStatus(bio);
        } finally {
            bio.put();
        }
    }

    private Bio build(BlockDevice dev, BioOp op, long sector, int bytes, Random random) {
        Bio bio = set.alloc(Gfp.NOIO, Math.min(Bio.VECS_MAX, (bytes + 511) / 512));
        bio.init(dev, op, 0, sector);
        int left = bytes;
        while (left > 0) {
            int len = random == null ? Math.min(Page.SIZE, left) : Math.min(left, 512 + random.nextInt(Page.SIZE - 511));
            int off = random == null ? 0 : random.nextInt(Page.SIZE - len + 1);
            Page page = kernel.pages().alloc(Gfp.KERNEL);
            if (page == null) {
                throw new IllegalStateException("test arena exhausted");
            }
            if (!bio.addPage(page, len, off)) {
                kernel.pages().free(page);
                throw new IllegalStateException("vec array full at " + bio.sizeBytes() + " of " + bytes + " bytes");
            }
            left -= len;
        }
        return bio;
    }

    private void release(Bio bio) {
        for (int i = 0; i < bio.vecCount(); i++) {
            kernel.pages().free(bio.vecs()[i].page());
        }
        bio.put();
    }
}
