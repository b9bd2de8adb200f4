package io.blkstack.sim.workload;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.QueueLimits;
import io.blkstack.kernel.Kernel;
import java.util.Arrays;

/**
 * A deliberately broken bottom device for the data check's tests: it stores writes on the heap
 * and completes every bio at once, but every read returns the stored data with the first byte of
 * each sector flipped.
 */
final class CorruptingDevice extends BlockDevice {

    private final byte[] storage;

    /** A device of {@code sizeBytes} (a multiple of 512). */
    CorruptingDevice(Kernel kernel, String name, int sizeBytes) {
        super(kernel, name, sizeBytes / Bio.SECTOR_SIZE, QueueLimits.defaults());
        this.storage = new byte[sizeBytes];
    }

    /** Serves and completes the bio inline; reads come back corrupted. */
    @Override
    protected void submitBio(Bio bio) {
        int offset = (int) (bio.sector() * Bio.SECTOR_SIZE);
        if (bio.op() == BioOp.WRITE) {
            bio.copyTo(storage, offset);
        } else if (bio.op() == BioOp.READ) {
            byte[] data = Arrays.copyOfRange(storage, offset, offset + bio.sizeBytes());
            for (int i = 0; i < data.length; i += Bio.SECTOR_SIZE) {
                data[i] ^= 0x5a;
            }
            bio.copyFrom(data, 0);
        }
        bio.setStatus(BioStatus.OK);
        bio.endio();
    }
}
