package io.blkstack.nbd;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioIter;
import io.blkstack.bio.BioOp;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.QueueLimits;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;

/**
 * A test device that completes every bio at once (reads return zeroes) except a READ starting at
 * one gated sector, which it holds until the test calls {@link #open}: a deterministic way to make
 * one request slow and show that replies leave out of order, without sleeps or timing.
 */
final class GatedDevice extends BlockDevice {

    private final long gatedSector;
    private final SpinLock lock = new SpinLock("gated device");
    private final BioIter iter = new BioIter();
    private Bio held;
    final Completion arrived = new Completion("gated bio arrived");

    GatedDevice(Kernel kernel, String name, long sizeBytes, long gatedSector) {
        super(kernel, name, sizeBytes >>> Bio.SECTOR_SHIFT, QueueLimits.defaults());
        this.gatedSector = gatedSector;
    }

    @Override
    protected void submitBio(Bio bio) {
        if (bio.op() == BioOp.READ) {
            lock.lock();
            try {
                for (iter.reset(bio); iter.next(); ) {
                    iter.page().zero(iter.offset(), iter.length());
                }
            } finally {
                lock.unlock();
            }
        }
        if (bio.op() == BioOp.READ && bio.sector() == gatedSector) {
            lock.lock();
            try {
                held = bio;
            } finally {
                lock.unlock();
            }
            arrived.complete();
            return;
        }
        bio.endio();
    }

    /** Completes the held bio. */
    void open() {
        Bio bio;
        lock.lock();
        try {
            bio = held;
            held = null;
        } finally {
            lock.unlock();
        }
        if (bio == null) {
            throw new IllegalStateException("no gated bio is held");
        }
        bio.endio();
    }
}
