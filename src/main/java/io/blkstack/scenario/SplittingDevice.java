package io.blkstack.scenario;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioSet;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;

/**
 * A stacking device that splits every bio into pieces of at most {@code splitSectors}, all split
 * off ONE bio set while it runs inside the submit loop, the way bcache's {@code cached_dev_submit_bio}
 * does: split off a front, chain it to the original, remap it to the lower device and submit it
 * (which only queues it on the task's pending list), then split again from the remainder; the last
 * piece is the original itself, remapped.
 *
 * <p>Why it exists (seed 000): each front waits unsubmitted on the pending list while the next one
 * is allocated from the same set, so a bio needing two splits holds one element while asking for
 * another (it breaks rule 1 of DESIGN.md section 1 on purpose). That is safe only because the bio
 * set's rescuer punts the pending fronts before the allocation blocks; built without a rescuer, or
 * under {@code bioset-rescuer=legacy}, several tasks can each hold an element of a small reserve
 * and wait for another, and the checker must find that.
 */
public final class SplittingDevice extends BlockDevice {

    private final BlockDevice lower;
    private final int splitSectors;
    private final BioSet bioSet;

    /**
     * @param splitSectors the largest piece sent down, in sectors (a multiple of the lower device's
     *     logical block size)
     * @param reserve bios in the bio set's reserve
     * @param rescuer whether the bio set gets a rescuer
     */
    public SplittingDevice(Kernel kernel, String name, BlockDevice lower, int splitSectors, int reserve, boolean rescuer) {
        super(kernel, name, lower.capacitySectors(), lower.limits());
        if (splitSectors <= 0 || splitSectors % lower.limits().logicalBlockSectors() != 0) {
            throw new IllegalArgumentException("splitting device " + name + ": split size " + splitSectors
                    + " sectors must be a positive multiple of " + lower.limits().logicalBlockSectors());
        }
        if (reserve < 1) {
            throw new IllegalArgumentException("splitting device " + name + ": reserve " + reserve + " must be at least 1");
        }
        this.lower = lower;
        this.splitSectors = splitSectors;
        this.bioSet = new BioSet(kernel, name + "-bs", reserve, 0, null, rescuer);
    }

    /** Splits off fronts of {@code splitSectors} from one bio set, submitting each, then sends the rest down. */
    @Override
    protected void submitBio(Bio bio) {
        int pieces = 0;
        while (bio.sectorCount() > splitSectors) {
            Bio front = Bio.split(bio, splitSectors, Gfp.NOIO, bioSet);
            Bio.chain(front, bio);
            front.setDevice(lower);
            Submit.submitBio(front);
            pieces++;
            if (pieces > Bio.VECS_MAX * 8) {
                throw new IllegalStateException("splitting device " + name() + ": more than " + pieces + " pieces of " + bio);
            }
        }
        bio.setDevice(lower);
        Submit.submitBio(bio);
    }

    /** The bio set every split comes from. */
    public BioSet bioSet() {
        return bioSet;
    }

    @Override
    public String describeState() {
        return "splitting device " + name() + ": pieces of " + splitSectors + " sectors onto " + lower.name() + ", "
                + bioSet.name();
    }

    @Override
    public void close() {
        if (isClosed()) {
            return;
        }
        try {
            super.close();
        } finally {
            bioSet.close();
        }
    }
}
