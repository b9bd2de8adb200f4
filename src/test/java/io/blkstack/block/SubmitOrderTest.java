package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.mem.Gfp;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The order in which devices of a stack see bios. The expected orders are worked out by hand from
 * the submit loop of DESIGN.md section 4: depth-first (lower devices first, then the same device,
 * then older siblings) by default, one FIFO under submit-order=legacy.
 */
class SubmitOrderTest {

    /** Runs one 8-sector discard through A -> B -> C and returns what the devices logged. */
    private static List<String> run(Policies policies, QueueLimits topLimits) {
        List<String> log = new ArrayList<>();
        try (TestKernel tk = new TestKernel("submit-order", 16L << 20, policies, Faults.NONE)) {
            RefMemoryDevice c = new RefMemoryDevice(tk.kernel, "C", 64, QueueLimits.defaults(), log);
            HalvingDevice b = new HalvingDevice(tk.kernel, "B", c, QueueLimits.defaults(), log);
            HalvingDevice a = new HalvingDevice(tk.kernel, "A", b, topLimits, log);
            BioSet set = new BioSet(tk.kernel, "client", 2, 0, null, false);
            Bio bio = set.alloc(Gfp.NOIO, 0).init(a, BioOp.DISCARD, 0, 0).setSizeBytes(8 * Bio.SECTOR_SIZE);
            assertEquals(0, Submit.submitAndWait(bio));
            assertEquals(BioStatus.OK, bio.status());
            bio.put();
        }
        return log;
    }

    @Test
    void depthFirstProcessesEachBioDownTheStackBeforeItsSiblings() {
        // A:0+8 queues B:0+4, B:4+4. B:0+4 runs next and queues C:0+2, C:2+2, which go before
        // the parked sibling B:4+4.
        assertEquals(List.of("A:0+8", "B:0+4", "C:0+2", "C:2+2", "B:4+4", "C:4+2", "C:6+2"),
                run(Policies.defaults(), QueueLimits.defaults()));
    }

    @Test
    void legacyOrderIsOneFifo() {
        assertEquals(List.of("A:0+8", "B:0+4", "B:4+4", "C:0+2", "C:2+2", "C:4+2", "C:6+2"),
                run(Policies.defaults().with(PolicySwitch.SUBMIT_ORDER, "legacy"), QueueLimits.defaults()));
    }

    @Test
    void depthFirstHandlesASplitFrontBeforeTheResubmittedRemainder() {
        // A (max 4 sectors) splits 0+8 into front 0+4 and remainder 4+4, which it resubmits to
        // itself; the front's halves (lower) go before the remainder (same device), and each of
        // them all the way down before the next.
        assertEquals(List.of("A:0+8", "B:0+2", "C:0+1", "C:1+1", "B:2+2", "C:2+1", "C:3+1",
                        "A:4+4", "B:4+2", "C:4+1", "C:5+1", "B:6+2", "C:6+1", "C:7+1"),
                run(Policies.defaults(), QueueLimits.defaults().withMaxSectors(4)));
    }

    @Test
    void legacyOrderHandlesTheRemainderBeforeTheFrontGoesDown() {
        assertEquals(List.of("A:0+8", "A:4+4", "B:0+2", "B:2+2", "B:4+2", "B:6+2",
                        "C:0+1", "C:1+1", "C:2+1", "C:3+1", "C:4+1", "C:5+1", "C:6+1", "C:7+1"),
                run(Policies.defaults().with(PolicySwitch.SUBMIT_ORDER, "legacy"),
                        QueueLimits.defaults().withMaxSectors(4)));
    }
}
