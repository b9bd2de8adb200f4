package io.blkstack.cli;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioSet;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;

/**
 * Stacking devices that break the rules on purpose, for the checker's misuse tests: each clones
 * every bio from its own bio set and sends the clone to the device below.
 */
final class MisbehavingDevices {

    private MisbehavingDevices() {
    }

    /** What the clone's completion does wrong. */
    enum Fault {
        /** Waits on a completion inside the completion callback (rule 2 of DESIGN.md section 1). */
        BLOCK_IN_ENDIO,
        /** Completes the original but never puts the clone: a leaked bio. */
        LEAK_CLONE
    }

    /** A cloning device over {@code lower} that commits {@code fault} in every clone's completion. */
    static BlockDevice over(Kernel kernel, BlockDevice lower, Fault fault) {
        return new Cloner(kernel, lower, fault);
    }

    private static final class Cloner extends BlockDevice {
        private final BlockDevice lower;
        private final Fault fault;
        private final BioSet bioSet;

        Cloner(Kernel kernel, BlockDevice lower, Fault fault) {
            super(kernel, "bad-" + fault.name().toLowerCase(java.util.Locale.ROOT), lower.capacitySectors(), lower.limits());
            this.lower = lower;
            this.fault = fault;
            this.bioSet = new BioSet(kernel, name() + "-bs", 4, 0, null, false);
        }

        /** Clones the bio to the lower device; the clone's completion misbehaves. */
        @Override
        protected void submitBio(Bio bio) {
            Bio clone = Bio.clone(bio, Gfp.NOIO, bioSet);
            clone.setDevice(lower);
            clone.setPrivateData(bio);
            clone.setEndIo(c -> {
                Bio original = (Bio) c.privateData();
                original.setStatus(c.status());
                if (fault == Fault.BLOCK_IN_ENDIO) {
                    new Completion("never completed").await();
                } else {
                    c.setPrivateData(null); // forgets the clone without putting it
                }
                if (fault != Fault.LEAK_CLONE) {
                    c.put();
                }
                original.endio();
            });
            Submit.submitBio(clone);
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
}
