package io.blkstack.dm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.DataBuffers;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.SpinLock;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Seed 001: a bio spanning three linear targets. Under the fixed design the mapped device handles
 * one fragment per call: the front becomes the one clone it holds, goes all the way down, and the
 * remainder comes back through the submit loop; so each bottom device sees its fragment while the
 * mapped device holds exactly one clone, and the device is called three times. Under
 * {@code dm-split=legacy} all three clones are made in one call: the first bottom bio arrives while
 * three clones are held. Both designs write the same data.
 */
class DmSplitOrderTest {

    private static final String TABLE = "0 16 linear a 0\n16 16 linear b 0\n32 16 linear c 0\n";

    /** What the bottoms saw for one 40-sector write from sector 4, and the device's call count. */
    private record Run(List<String> log, long submitCalls, long frontSplits, byte[] a, byte[] b, byte[] c) {
    }

    private static Run run(Policies policies) throws TableException {
        try (TestKernel tk = new TestKernel("dm-split", 16L << 20, policies, Faults.NONE);
                DataBuffers buffers = new DataBuffers(tk.kernel)) {
            List<String> log = new ArrayList<>();
            SpinLock logLock = new SpinLock("log");
            RecordingDevice a = new RecordingDevice(tk.kernel, "a", 64, log, logLock);
            RecordingDevice b = new RecordingDevice(tk.kernel, "b", 64, log, logLock);
            RecordingDevice c = new RecordingDevice(tk.kernel, "c", 64, log, logLock);
            Map<String, BlockDevice> devs = Map.of("a", a, "b", b, "c", c);
            MappedDevice md = new MappedDevice(tk.kernel, "dm", Table.parse(tk.kernel, "dm", TABLE, devs::get));
            for (RecordingDevice d : List.of(a, b, c)) {
                d.probe(() -> "clones=" + md.cloneSet().outstanding());
            }
            BioSet client = new BioSet(tk.kernel, "client", 2, 2, null, false);
            byte[] data = new byte[40 * Bio.SECTOR_SIZE];
            new Random(5).nextBytes(data);
            assertEquals(BioStatus.OK, new DmIo(client, buffers).write(md, 4, data, 0, null));
            return new Run(List.copyOf(log), md.submitCalls(), md.frontSplits(), a.data().clone(), b.data().clone(),
                    c.data().clone());
        }
    }

    @Test
    void frontCloneGoesDownFirstAndTheRemainderReturnsThroughTheSubmitLoop() throws TableException {
        Run fixed = run(Policies.defaults());
        assertEquals(List.of("a:WRITE:4+12@clones=1", "b:WRITE:0+16@clones=1", "c:WRITE:0+12@clones=1"), fixed.log());
        assertEquals(3, fixed.submitCalls(), "the remainder came back twice");
        assertEquals(2, fixed.frontSplits());

        Run legacy = run(Policies.defaults().with(PolicySwitch.DM_SPLIT, PolicySwitch.LEGACY));
        assertEquals(List.of("a:WRITE:4+12@clones=3", "b:WRITE:0+16@clones=2", "c:WRITE:0+12@clones=1"), legacy.log());
        assertEquals(1, legacy.submitCalls(), "every fragment mapped in one call");
        assertEquals(0, legacy.frontSplits());

        assertArrayEquals(fixed.a(), legacy.a());
        assertArrayEquals(fixed.b(), legacy.b());
        assertArrayEquals(fixed.c(), legacy.c());
    }
}
