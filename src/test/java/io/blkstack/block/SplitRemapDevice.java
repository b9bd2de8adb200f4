package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioSet;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;
import java.util.Random;

/**
 * A test stacking device that splits at random boundaries and remaps to a lower device at an
 * offset, the way dm-linear plus a splitting target would: it splits off a random front (the new
 * bio is the front, chained to the original, and the original goes back through the submit loop as
 * the remainder), then either remaps the front in place or sends a chained clone down.
 */
public final class SplitRemapDevice extends BlockDevice {

    private final BlockDevice lower;
    private final long offsetSectors;
    private final Random random;
    private final BioSet splits;
    private final BioSet clones;

    public SplitRemapDevice(Kernel kernel, String name, BlockDevice lower, long offsetSectors, Random random) {
        super(kernel, name, lower.capacitySectors() - offsetSectors, QueueLimits.defaults());
        this.lower = lower;
        this.offsetSectors = offsetSectors;
        this.random = random;
        this.splits = new BioSet(kernel, name + "-split", 2, 0, null, false);
        this.clones = new BioSet(kernel, name + "-clone", 2, 0, null, false);
    }

    @Override
    protected void submitBio(Bio bio) {
        int sectors = bio.sectorCount();
        if (sectors > 1 && random.nextInt(3) != 0) {
            Bio front = Bio.split(bio, 1 + random.nextInt(sectors - 1), Gfp.NOIO, splits);
            Bio.chain(front, bio);
            Submit.submitBio(bio);
            bio = front;
        }
        if (random.nextBoolean()) {
            bio.setDevice(lower).setSector(bio.sector() + offsetSectors);
            Submit.submitBio(bio);
        } else {
            Bio clone = Bio.clone(bio, Gfp.NOIO, clones);
            clone.setDevice(lower).setSector(bio.sector() + offsetSectors);
            Bio.chain(clone, bio);
            Submit.submitBio(clone);
            bio.endio();
        }
    }

    @Override
    public void close() {
        splits.close();
        clones.close();
        super.close();
    }
}
