package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;

/**
 * Synchronous byte-array I/O on a device for the bottom-device tests: builds a bio over freshly
 * allocated arena pages, with every segment starting at {@code pageOffset} in its page, submits it
 * with {@link Submit#submitAndWaitStatus}, copies the data, and gives the pages and the bio back.
 */
final class BioBytes {

    private BioBytes() {
    }

    /** Writes {@code data} at byte {@code position}; returns the bio's status. */
    static BioStatus write(BioSet set, BlockDevice dev, long position, byte[] data, int pageOffset, int flags) {
        return transfer(set, dev, BioOp.WRITE, position, data, pageOffset, flags);
    }

    /** Reads {@code into.length} bytes at byte {@code position}; returns the bio's status. */
    static BioStatus read(BioSet set, BlockDevice dev, long position, byte[] into, int pageOffset, int flags) {
        return transfer(set, dev, BioOp.READ, position, into, pageOffset, flags);
    }

    /** Reads {@code length} bytes at {@code position}, failing the test if the status is not OK. */
    static byte[] readOk(BioSet set, BlockDevice dev, long position, int length, int pageOffset) {
        byte[] out = new byte[length];
        BioStatus status = read(set, dev, position, out, pageOffset, 0);
        if (status != BioStatus.OK) {
            throw new AssertionError("read of " + length + " at " + position + " on " + dev + ": " + status);
        }
        return out;
    }

    /** Submits a bio without data (FLUSH, DISCARD, WRITE_ZEROES) and waits; returns its status. */
    static BioStatus range(BioSet set, BlockDevice dev, BioOp op, long position, int length, int flags) {
        Bio bio = set.alloc(Gfp.KERNEL, 0);
        try {
            bio.init(dev, op, flags, position >>> Bio.SECTOR_SHIFT);
            bio.setSizeBytes(length);
            return Submit.submitAndWaitStatus(bio);
        } finally {
            bio.put();
        }
    }

    private static BioStatus transfer(BioSet set, BlockDevice dev, BioOp op, long position, byte[] data,
            int pageOffset, int flags) {
        Kernel kernel = dev.kernel();
        int perPage = Page.SIZE - pageOffset;
        int segments = (data.length + perPage - 1) / perPage;
        Page[] pages = new Page[segments];
        Bio bio = set.alloc(Gfp.KERNEL, segments);
        try {
            bio.init(dev, op, flags, position >>> Bio.SECTOR_SHIFT);
            for (int i = 0; i < segments; i++) {
                pages[i] = kernel.pages().alloc(Gfp.KERNEL);
                int len = Math.min(perPage, data.length - i * perPage);
                if (op == BioOp.WRITE) {
                    pages[i].buffer().put(pageOffset, data, i * perPage, len);
                } else {
                    // Garbage, so a read that forgets a segment cannot pass as zeros.
                    for (int j = 0; j < len; j++) {
                        pages[i].buffer().put(pageOffset + j, (byte) 0x5a);
                    }
                }
                if (!bio.addPage(pages[i], len, pageOffset)) {
                    throw new IllegalStateException("vec array full at segment " + i + " of " + segments);
                }
            }
            BioStatus status = Submit.submitAndWaitStatus(bio);
            if (op == BioOp.READ) {
                for (int i = 0; i < segments; i++) {
                    int len = Math.min(perPage, data.length - i * perPage);
                    pages[i].buffer().get(pageOffset, data, i * perPage, len);
                }
            }
            return status;
        } finally {
            bio.put();
            for (Page p : pages) {
                if (p != null) {
                    kernel.pages().free(p);
                }
            }
        }
    }
}
