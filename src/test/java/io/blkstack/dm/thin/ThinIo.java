package io.blkstack.dm.thin;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;

/** Synchronous byte-array I/O for the thin tests: pages from the arena for one bio, given back after. */
final class ThinIo {

    private final Kernel kernel;
    private final BioSet set;

    ThinIo(Kernel kernel, BioSet set) {
        this.kernel = kernel;
        this.set = set;
    }

    BioStatus write(BlockDevice dev, long sector, byte[] bytes, int flags) {
        Bio bio = build(dev, BioOp.WRITE, sector, bytes.length);
        bio.setFlags(flags);
        bio.copyFrom(bytes, 0);
        return finish(bio, null);
    }

    BioStatus read(BlockDevice dev, long sector, byte[] into) {
        Bio bio = build(dev, BioOp.READ, sector, into.length);
        byte[] junk = new byte[into.length];
        java.util.Arrays.fill(junk, (byte) 0x5a);
        bio.copyFrom(junk, 0);
        return finish(bio, into);
    }

    BioStatus discard(BlockDevice dev, long sector, int sectors) {
        Bio bio = set.alloc(Gfp.NOIO, 0);
        bio.init(dev, BioOp.DISCARD, 0, sector);
        bio.setSizeBytes(sectors << Bio.SECTOR_SHIFT);
        BioStatus s = Submit.submitAndWaitStatus(bio);
        bio.put();
        return s;
    }

    BioStatus flush(BlockDevice dev) {
        Bio bio = set.alloc(Gfp.NOIO, 0);
        bio.init(dev, BioOp.FLUSH, 0, 0);
        BioStatus s = Submit.submitAndWaitStatus(bio);
        bio.put();
        return s;
    }

    private Bio build(BlockDevice dev, BioOp op, long sector, int bytes) {
        int pages = (bytes + Page.SIZE - 1) / Page.SIZE;
        Bio bio = set.alloc(Gfp.NOIO, pages);
        bio.init(dev, op, 0, sector);
        for (int left = bytes; left > 0; left -= Page.SIZE) {
            Page p = kernel.pages().alloc(Gfp.KERNEL);
            bio.addPage(p, Math.min(Page.SIZE, left), 0);
        }
        return bio;
    }

    private BioStatus finish(Bio bio, byte[] into) {
        BioStatus s = Submit.submitAndWaitStatus(bio);
        if (into != null) {
            byte[] all = io.blkstack.block.DataBuffers.contents(bio);
            System.arraycopy(all, 0, into, 0, into.length);
        }
        for (int i = 0; i < bio.vecCount(); i++) {
            kernel.pages().free(bio.vecs()[i].page());
        }
        bio.put();
        return s;
    }
}
