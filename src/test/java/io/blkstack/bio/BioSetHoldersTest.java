package io.blkstack.bio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.TestKernel;
import io.blkstack.mem.Gfp;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** A bio set names where its outstanding bios are, for the checker's explanations. */
class BioSetHoldersTest {

    // Proves the holder registry follows allocations, hand-overs and frees: two bios allocated by
    // the test task, one moved to a rescue-style holder, are listed by holder in holders() and in
    // describeState(); after both are put nothing is listed.
    @Test
    void outstandingBiosAreListedByHolder() {
        try (TestKernel tk = new TestKernel("bioset-holders")) {
            BioSet set = new BioSet(tk.kernel, "h", 2, 0, null, false);
            Bio a = set.alloc(Gfp.NOIO, 0);
            Bio b = set.alloc(Gfp.NOIO, 0);
            Map<String, Integer> held = set.holders();
            assertEquals(1, held.size(), held.toString());
            assertEquals(2, held.values().iterator().next(), held.toString());
            assertTrue(held.keySet().iterator().next().startsWith("allocated by task test"), held.toString());
            b.setState(BioState.RESCUE, set);
            held = set.holders();
            assertEquals(1, held.get("queued for the rescuer of bioset h"), held.toString());
            assertTrue(set.describeState().contains("outstanding bios by holder:"), set.describeState());
            assertTrue(set.describeState().contains("1 x queued for the rescuer of bioset h"), set.describeState());
            b.setState(BioState.ALLOCATED, null);
            a.put();
            b.put();
            assertTrue(set.holders().isEmpty(), set.holders().toString());
            assertFalse(set.describeState().contains("by holder"), set.describeState());
        }
    }
}
