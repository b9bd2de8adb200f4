package io.blkstack.bench;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;

/**
 * A stacking device that maps every bio one-to-one onto a lower device, the way a mapped device
 * with one {@code linear} target at offset 0 does: clone from its own bio set, remap, submit.
 *
 * <p>Exists to measure what one layer of the block layer costs (a bio set allocation, a clone, a
 * pass through the submit loop, a completion), with nothing else in the way. The clone is the only
 * allocation, and it comes from this device's bio set, so rule 1 of DESIGN.md holds: the clone is
 * submitted before the next bio is allocated.
 */
public final class PassThroughDevice extends BlockDevice {

    /** Clones in the bio set's reserve. */
    public static final int POOL_SIZE = 16;

    private final BlockDevice lower;
    private final BioSet bioSet;
    private final BioEndIo cloneEndIo = PassThroughDevice::cloneDone;

    public PassThroughDevice(Kernel kernel, String name, BlockDevice lower) {
        super(kernel, name, lower.capacitySectors(), lower.limits());
        this.lower = lower;
        this.bioSet = new BioSet(kernel, name, POOL_SIZE, 0, null, true);
    }

    /** Clones the bio onto the lower device and submits the clone. */
    @Override
    protected void submitBio(Bio bio) {
        Bio clone = Bio.clone(bio, Gfp.NOIO, bioSet);
        clone.setDevice(lower);
        clone.setEndIo(cloneEndIo);
        clone.setPrivateData(bio);
        Submit.submitBio(clone);
    }

    /** Completes the original with the clone's status, in the clone's completion context. */
    private static void cloneDone(Bio clone) {
        Bio original = (Bio) clone.privateData();
        BioStatus status = clone.status();
        clone.put();
        if (status != BioStatus.OK) {
            original.setStatus(status);
        }
        original.endio();
    }

    /** The device this one maps onto. */
    public BlockDevice lower() {
        return lower;
    }

    @Override
    public void close() {
        super.close();
        bioSet.close();
    }
}
