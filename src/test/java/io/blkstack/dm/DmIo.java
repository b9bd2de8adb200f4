package io.blkstack.dm;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.DataBuffers;
import io.blkstack.block.Submit;
import io.blkstack.mem.Gfp;
import java.util.Random;

/**
 * Synchronous byte-array I/O through a device for the dm tests, over pages of the kernel arena:
 * each call builds one bio (segments cut at random lengths when a random source is given), submits
 * it, waits, copies the data and gives the bio back. The pages stay with the {@link DataBuffers}
 * until it closes.
 */
final class DmIo {

    private final BioSet set;
    private final DataBuffers buffers;

    DmIo(BioSet set, DataBuffers buffers) {
        this.set = set;
        this.buffers = buffers;
    }

    /** Writes {@code data} at {@code sector}; returns the status. */
    BioStatus write(BlockDevice dev, long sector, byte[] data, int flags, Random layout) {
        Bio bio = buffers.bio(set, dev, BioOp.WRITE, sector, data.length, layout);
        bio.setFlags(flags);
        bio.copyFrom(data, 0);
        BioStatus status = Submit.submitAndWaitStatus(bio);
        bio.put();
        return status;
    }

    /** Reads {@code into.length} bytes at {@code sector} into {@code into}; returns the status. */
    BioStatus read(BlockDevice dev, long sector, byte[] into, Random layout) {
        Bio bio = buffers.bio(set, dev, BioOp.READ, sector, into.length, layout);
        // Garbage first, so a read that forgets a segment cannot pass as zeros.
        byte[] junk = new byte[into.length];
        java.util.Arrays.fill(junk, (byte) 0x5a);
        bio.copyFrom(junk, 0);
        BioStatus status = Submit.submitAndWaitStatus(bio);
        byte[] got = DataBuffers.contents(bio);
        System.arraycopy(got, 0, into, 0, into.length);
        bio.put();
        return status;
    }

    /** Submits an empty FLUSH (with {@code flags}) and waits. */
    BioStatus flush(BlockDevice dev, int flags) {
        Bio bio = set.alloc(Gfp.NOIO, 0);
        bio.init(dev, BioOp.FLUSH, flags, 0);
        BioStatus status = Submit.submitAndWaitStatus(bio);
        bio.put();
        return status;
    }
}
