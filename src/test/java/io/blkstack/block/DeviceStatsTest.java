package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * A device's statistics count what its submitter asked for: a bio split to the device's limits
 * counts once with its whole size, a range the submit loop refuses counts as an error of its
 * status, and a bio the device still holds counts as in flight until it completes.
 */
class DeviceStatsTest {

    @Test
    void aSplitBioCountsOnceWithItsWholeSize() {
        try (TestKernel tk = new TestKernel("stats-split");
                DataBuffers buffers = new DataBuffers(tk.kernel)) {
            List<String> log = new ArrayList<>();
            RefMemoryDevice dev = new RefMemoryDevice(tk.kernel, "small", 4096,
                    QueueLimits.defaults().withMaxSectors(8), log);
            BioSet set = new BioSet(tk.kernel, "client", 2, 2, null, false);
            Bio write = buffers.bio(set, dev, BioOp.WRITE, 64, 1 << 20, null);
            assertEquals(0, Submit.submitAndWait(write));
            write.put();
            Bio discard = set.alloc(Gfp.NOIO, 0).init(dev, BioOp.DISCARD, 0, 8).setSizeBytes(40 * Bio.SECTOR_SIZE);
            assertEquals(0, Submit.submitAndWait(discard));
            discard.put();
            assertEquals(256 + 5, log.size(), "the device saw the pieces of 8 sectors each");

            DeviceStats.Snapshot s = dev.stats().snapshot();
            assertEquals(1, s.ios(BioOp.WRITE));
            assertEquals(2048, s.sectors(BioOp.WRITE));
            assertEquals(1, s.ios(BioOp.DISCARD));
            assertEquals(40, s.sectors(BioOp.DISCARD));
            assertEquals(0, s.ios(BioOp.READ));
            assertEquals(1, s.latency(DeviceStats.LatencyClass.WRITE).count());
            assertEquals(1, s.latency(DeviceStats.LatencyClass.OTHER).count());
            assertEquals(0, s.inFlight());
        }
    }

    @Test
    void aRefusedRangeCountsAsAnErrorOfItsStatus() {
        try (TestKernel tk = new TestKernel("stats-inval")) {
            RefMemoryDevice dev = new RefMemoryDevice(tk.kernel, "d", 64, QueueLimits.defaults(), new ArrayList<>());
            BioSet set = new BioSet(tk.kernel, "client", 2, 0, null, false);
            Bio beyond = set.alloc(Gfp.NOIO, 0).init(dev, BioOp.DISCARD, 0, 56).setSizeBytes(16 * 512);
            assertEquals(BioStatus.INVAL, Submit.submitAndWaitStatus(beyond));
            beyond.put();
            DeviceStats.Snapshot s = dev.stats().snapshot();
            assertEquals(1, s.errors(BioStatus.INVAL));
            assertEquals(0, s.errors(BioStatus.IOERR));
            assertEquals(1, s.ios(BioOp.DISCARD));
        }
    }

    @Test
    void aHeldBioIsInFlightUntilItCompletes() {
        try (TestKernel tk = new TestKernel("stats-held")) {
            HoldingDevice dev = new HoldingDevice(tk.kernel);
            BioSet set = new BioSet(tk.kernel, "client", 2, 0, null, false);
            Bio flush = set.alloc(Gfp.NOIO, 0).init(dev, BioOp.FLUSH, 0, 0);
            Submit.submitBio(flush);
            assertEquals(1, dev.stats().snapshot().inFlight());
            assertEquals(0, dev.stats().snapshot().ios(BioOp.FLUSH), "counted when it completes");
            dev.held.setStatus(BioStatus.IOERR);
            dev.held.endio();
            DeviceStats.Snapshot s = dev.stats().snapshot();
            assertEquals(0, s.inFlight());
            assertEquals(1, s.ios(BioOp.FLUSH));
            assertEquals(1, s.errors(BioStatus.IOERR));
            assertTrue(s.latency(DeviceStats.LatencyClass.OTHER).sumNanos() >= 0);
            flush.put();
        }
    }

    /** Keeps the one bio it is given until the test completes it. */
    private static final class HoldingDevice extends BlockDevice {
        Bio held;

        HoldingDevice(Kernel kernel) {
            super(kernel, "holding", 64, QueueLimits.defaults());
        }

        @Override
        protected void submitBio(Bio bio) {
            held = bio;
        }
    }
}
