package io.blkstack.scenario;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;

/**
 * The scenarios' user I/O: one bio over one page, submitted and waited for, and the check of what
 * came back. A failed I/O or wrong data throws, which the engines report as a crash of the task.
 */
final class ScenarioIo {

    private ScenarioIo() {
    }

    /** Reads or writes {@code bytes} at {@code sector} of {@code dev} from offset 0 of {@code page}; throws on error. */
    static void transfer(BlockDevice dev, BioSet set, BioOp op, long sector, Page page, int bytes) {
        Bio bio = set.alloc(Gfp.NOIO, 1);
        bio.init(dev, op, 0, sector);
        if (!bio.addPage(page, bytes, 0)) {
            throw new IllegalStateException("a one-page bio refused " + bytes + " bytes: " + bio);
        }
        int err = Submit.submitAndWait(bio);
        bio.put();
        if (err != 0) {
            throw new IllegalStateException(op + " of " + bytes + " bytes at sector " + sector + " of " + dev.name()
                    + " failed: " + err);
        }
    }

    /** Checks that {@code bytes} bytes of the page from {@code offset} all equal {@code expected}. */
    static void verify(Page page, int offset, int bytes, byte expected, String where) {
        for (int i = 0; i < bytes; i++) {
            byte got = page.buffer().get(offset + i);
            if (got != expected) {
                throw new IllegalStateException("data mismatch at " + where + " byte " + i + ": read " + got
                        + ", wrote " + expected);
            }
        }
    }
}
