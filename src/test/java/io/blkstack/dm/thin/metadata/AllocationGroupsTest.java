package io.blkstack.dm.thin.metadata;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.MemoryDevice;
import io.blkstack.bufio.BufferCache;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Allocation groups and the split-offload policy of seed 004: provisioning under a group hold,
 * free-space accounting, out-of-space, and where splits run (inline without a reservation under
 * the fixed policy, always on the {@code alloc} workqueue under legacy), with the tree still
 * correct either way.
 */
class AllocationGroupsTest {

    private static final BufferCache.Config NO_AGING = BufferCache.Config.defaults().withAge(0, 0);

    private record Run(long inline, long offloaded) {
    }

    private Run provision(Policies policies, boolean underHold) {
        Kernel kernel = Kernel.builder().name("ag-test").memory(16L << 20).policies(policies).build();
        Kernel.Attachment self = kernel.attach("test");
        try {
            MemoryDevice meta = new MemoryDevice(kernel, "meta", 4L << 20, 0);
            try (BufferCache cache = new BufferCache(meta, 4096, NO_AGING)) {
                ThinMetadata md = ThinMetadata.format(cache, 64, 128, 5);
                try (AllocationGroups ags = new AllocationGroups(kernel, md, 16)) {
                    md.tree().setSplitRunner(ags);
                    md.createThin(1);
                    assertEquals(4, ags.groupCount());
                    assertEquals(64, ags.freeBlocks());
                    for (int v = 0; v < 40; v++) {
                        long data;
                        try (AllocationGroups.Hold hold = ags.reserve(underHold ? 2 : 1, v)) {
                            assertNotNull(hold);
                            data = hold.allocate();
                            if (!underHold) {
                                hold.close();
                                md.insertMapping(1, v, data);
                                continue;
                            }
                            md.insertMapping(1, v, data);
                        }
                    }
                    assertEquals(24, ags.freeBlocks());
                    for (int v = 0; v < 40; v++) {
                        assertTrue(md.lookup(1, v) >= 0, "block " + v + " mapped");
                    }
                    assertEquals(List.of(), md.check());
                    AllocationGroups.Hold tooBig = ags.reserve(17, 0);
                    assertNull(tooBig, "no group has 17 free blocks");
                    md.commit();
                }
            }
            return new Run(kernel.counters().get("thin.split-inline").get(), kernel.counters().get("thin.split-offloaded").get());
        } finally {
            try {
                kernel.close();
            } finally {
                self.close();
            }
        }
    }

    @Test
    void fixedPolicySplitsInlineWithoutAReservation() {
        Run run = provision(Policies.defaults(), false);
        assertTrue(run.inline() > 0, "splits happened inline: " + run);
        assertEquals(0, run.offloaded());
    }

    @Test
    void fixedPolicyOffloadsOnlyUnderAReservedGroup() {
        Run run = provision(Policies.defaults(), true);
        assertTrue(run.offloaded() > 0, "splits under a hold were offloaded: " + run);
    }

    @Test
    void legacyPolicyAlwaysOffloads() {
        Run run = provision(Policies.defaults().with(PolicySwitch.SPLIT_OFFLOAD, "legacy"), false);
        assertTrue(run.offloaded() > 0, "legacy offloads: " + run);
        assertEquals(0, run.inline());
    }
}
