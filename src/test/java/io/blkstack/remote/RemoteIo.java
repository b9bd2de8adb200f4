package io.blkstack.remote;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;

/** Synchronous bio I/O for the remote device tests: whole pages, one bio per call. */
final class RemoteIo {

    private RemoteIo() {
    }

    /** Writes {@code data} (a multiple of 512, at most 1 MiB) at byte {@code position}; returns the status. */
    static BioStatus write(BioSet set, BlockDevice dev, long position, byte[] data, int flags) {
        return transfer(set, dev, BioOp.WRITE, position, data, flags);
    }

    /** Reads {@code into.length} bytes at {@code position}; returns the status. */
    static BioStatus read(BioSet set, BlockDevice dev, long position, byte[] into) {
        return transfer(set, dev, BioOp.READ, position, into, 0);
    }

    /** A bio without data (FLUSH, DISCARD, WRITE_ZEROES); returns the status. */
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

    private static BioStatus transfer(BioSet set, BlockDevice dev, BioOp op, long position, byte[] data, int flags) {
        int segments = (data.length + Page.SIZE - 1) / Page.SIZE;
        Page[] pages = new Page[segments];
        Bio bio = set.alloc(Gfp.KERNEL, segments);
        try {
            bio.init(dev, op, flags, position >>> Bio.SECTOR_SHIFT);
            for (int i = 0; i < segments; i++) {
                pages[i] = dev.kernel().pages().alloc(Gfp.KERNEL);
                int len = Math.min(Page.SIZE, data.length - i * Page.SIZE);
                if (op == BioOp.WRITE) {
                    pages[i].buffer().put(0, data, i * Page.SIZE, len);
                } else {
                    for (int j = 0; j < len; j++) {
                        pages[i].buffer().put(j, (byte) 0x5a); // so a missed segment cannot pass as zeros
                    }
                }
                bio.addPage(pages[i], len, 0);
            }
            BioStatus status = Submit.submitAndWaitStatus(bio);
            if (op == BioOp.READ) {
                for (int i = 0; i < segments; i++) {
                    pages[i].buffer().get(0, data, i * Page.SIZE, Math.min(Page.SIZE, data.length - i * Page.SIZE));
                }
            }
            return status;
        } finally {
            bio.put();
            for (Page p : pages) {
                if (p != null) {
                    dev.kernel().pages().free(p);
                }
            }
        }
    }
}
