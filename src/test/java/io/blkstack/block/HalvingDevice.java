package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioSet;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;
import java.util.List;

/**
 * A pass-through test device: logs the bio it is given ({@code name:sector+count}), splits it to
 * its own limits, then clones it into two halves chained to it and submits both to the lower device (a bio of one
 * sector goes down as one clone). Its clones come from its own bio set.
 */
public final class HalvingDevice extends BlockDevice {

    private final BlockDevice lower;
    private final BioSet clones;
    private final List<String> log;

    public HalvingDevice(Kernel kernel, String name, BlockDevice lower, QueueLimits limits, List<String> log) {
        super(kernel, name, lower.capacitySectors(), limits);
        this.lower = lower;
        this.clones = new BioSet(kernel, name + "-clone", 4, 0, null, false);
        this.log = log;
    }

    @Override
    protected void submitBio(Bio bio) {
        log.add(name() + ":" + bio.sector() + "+" + bio.sectorCount());
        bio = splitToLimits(bio);
        int sectors = bio.sectorCount();
        int half = sectors / 2;
        if (half == 0) {
            submitClone(bio, 0, sectors);
        } else {
            submitClone(bio, 0, half);
            submitClone(bio, half, sectors - half);
        }
        bio.endio();
    }

    private void submitClone(Bio bio, int offsetSectors, int count) {
        Bio clone = Bio.clone(bio, Gfp.NOIO, clones);
        clone.trim(offsetSectors, count);
        clone.setDevice(lower);
        Bio.chain(clone, bio);
        Submit.submitBio(clone);
    }

    @Override
    public void close() {
        clones.close();
        super.close();
    }
}
