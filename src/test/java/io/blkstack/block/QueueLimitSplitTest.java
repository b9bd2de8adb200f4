package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.mem.Gfp;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/** Splitting to a device's queue limits, and the range checks of the submit loop. */
class QueueLimitSplitTest {

    @Test
    void aMegabyteBioReachesAnEightSectorDeviceInOrderedPiecesAndCompletesOnce() {
        try (TestKernel tk = new TestKernel("limits-max-sectors");
                DataBuffers buffers = new DataBuffers(tk.kernel)) {
            List<String> log = new ArrayList<>();
            RefMemoryDevice dev = new RefMemoryDevice(tk.kernel, "small", 4096,
                    QueueLimits.defaults().withMaxSectors(8), log);
            BioSet set = new BioSet(tk.kernel, "client", 2, 2, null, false);
            int bytes = 1 << 20;
            byte[] pattern = new byte[bytes];
            new Random(1).nextBytes(pattern);
            Bio bio = buffers.bio(set, dev, BioOp.WRITE, 64, bytes, null);
            bio.copyFrom(pattern, 0);
            AtomicInteger completions = new AtomicInteger();
            bio.setEndIo(b -> completions.incrementAndGet());
            Submit.submitBio(bio);
            assertEquals(1, completions.get(), "the reference device completes synchronously");
            assertEquals(BioStatus.OK, bio.status());
            List<String> expected = new ArrayList<>();
            for (int s = 64; s < 64 + 2048; s += 8) {
                expected.add("small:" + s + "+8");
            }
            assertEquals(expected, log);
            assertArrayEquals(pattern, java.util.Arrays.copyOfRange(dev.data(), 64 * 512, 64 * 512 + bytes));
            bio.put();
        }
    }

    @Test
    void chunkBoundariesAreNeverCrossed() {
        try (TestKernel tk = new TestKernel("limits-chunk")) {
            List<String> log = new ArrayList<>();
            RefMemoryDevice dev = new RefMemoryDevice(tk.kernel, "striped", 256,
                    QueueLimits.defaults().withChunkSectors(16), log);
            BioSet set = new BioSet(tk.kernel, "client", 2, 0, null, false);
            Bio bio = set.alloc(Gfp.NOIO, 0).init(dev, BioOp.DISCARD, 0, 8).setSizeBytes(40 * Bio.SECTOR_SIZE);
            assertEquals(0, Submit.submitAndWait(bio));
            assertEquals(List.of("striped:8+8", "striped:16+16", "striped:32+16"), log);
            bio.put();
        }
    }

    @Test
    void segmentLimitsSplitBetweenPages() {
        try (TestKernel tk = new TestKernel("limits-segments");
                DataBuffers buffers = new DataBuffers(tk.kernel)) {
            List<String> log = new ArrayList<>();
            RefMemoryDevice dev = new RefMemoryDevice(tk.kernel, "sg", 256,
                    QueueLimits.defaults().withMaxSegments(2).withMaxSegmentSize(2048), log);
            BioSet set = new BioSet(tk.kernel, "client", 2, 2, null, false);
            // Four whole pages: each counts as two 2 KiB segments, so one page per piece.
            Bio bio = buffers.bio(set, dev, BioOp.WRITE, 0, 4 * 4096, null);
            assertEquals(0, Submit.submitAndWait(bio));
            assertEquals(List.of("sg:0+8", "sg:8+8", "sg:16+8", "sg:24+8"), log);
            bio.put();
        }
    }

    @Test
    void rangeBeyondTheEndOrMisalignedCompletesWithInvalAndNeverReachesTheDevice() {
        try (TestKernel tk = new TestKernel("limits-range")) {
            List<String> log = new ArrayList<>();
            RefMemoryDevice dev = new RefMemoryDevice(tk.kernel, "d4k", 64,
                    QueueLimits.defaults().withLogicalBlockSize(4096), log);
            BioSet set = new BioSet(tk.kernel, "client", 2, 0, null, false);
            Bio beyond = set.alloc(Gfp.NOIO, 0).init(dev, BioOp.DISCARD, 0, 56).setSizeBytes(16 * 512);
            assertEquals(-22, Submit.submitAndWait(beyond));
            Bio misalignedStart = set.alloc(Gfp.NOIO, 0).init(dev, BioOp.DISCARD, 0, 1).setSizeBytes(8 * 512);
            assertEquals(BioStatus.INVAL, Submit.submitAndWaitStatus(misalignedStart));
            beyond.put();
            misalignedStart.put();
            Bio misalignedSize = set.alloc(Gfp.NOIO, 0).init(dev, BioOp.DISCARD, 0, 0).setSizeBytes(512);
            assertEquals(BioStatus.INVAL, Submit.submitAndWaitStatus(misalignedSize));
            Bio fits = set.alloc(Gfp.NOIO, 0).init(dev, BioOp.DISCARD, 0, 56).setSizeBytes(8 * 512);
            assertEquals(BioStatus.OK, Submit.submitAndWaitStatus(fits));
            assertEquals(List.of("d4k:56+8"), log);
            misalignedSize.put();
            fits.put();
        }
    }

    @Test
    void limitsRejectBadValuesWithTheValueInTheMessage() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> QueueLimits.defaults().withLogicalBlockSize(1000));
        org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("1000"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> QueueLimits.defaults().withMaxSegments(0));
        assertThrows(IllegalArgumentException.class, () -> QueueLimits.defaults().withChunkSectors(-8));
    }

    @Test
    void submitAndWaitInsideTheSubmitLoopIsRefused() {
        try (TestKernel tk = new TestKernel("limits-wait-in-loop")) {
            BioSet set = new BioSet(tk.kernel, "client", 4, 0, null, false);
            RefMemoryDevice bottom = new RefMemoryDevice(tk.kernel, "bottom", 64, QueueLimits.defaults(), null);
            List<Throwable> thrown = new ArrayList<>();
            BlockDevice top = new BlockDevice(tk.kernel, "top", 64, QueueLimits.defaults()) {
                @Override
                protected void submitBio(Bio bio) {
                    Bio inner = set.alloc(Gfp.NOIO, 0).init(bottom, BioOp.FLUSH, 0, 0);
                    try {
                        Submit.submitAndWait(inner);
                    } catch (IllegalStateException e) {
                        thrown.add(e);
                        inner.put();
                    }
                    bio.endio();
                }
            };
            Bio bio = set.alloc(Gfp.NOIO, 0).init(top, BioOp.FLUSH, 0, 0);
            assertEquals(0, Submit.submitAndWait(bio));
            assertEquals(1, thrown.size());
            bio.put();
        }
    }
}
