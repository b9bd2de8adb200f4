package io.blkstack.dm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Remap-only targets report the holes of the devices under them, at the remapped sectors
 * (linear, striped, snapshot-origin), so NBD block status over a stack shows the bottom device's
 * holes; a target over devices that know no holes reports data. Memory devices stand in for
 * sparse files (they know their holes at 4 KiB chunk granularity).
 */
class HolesPassUpTest {

    private static final long SECTORS = 2048; // 1 MiB

    /**
     * The runs of {@code dev} from {@code start} to {@code end}, as signed sector counts, adjacent
     * runs of one kind merged (as NBD block status merges them).
     */
    private static List<Long> map(BlockDevice dev, long start, long end) {
        List<Long> runs = new ArrayList<>();
        for (long s = start; s < end; ) {
            long run = dev.allocatedExtent(s, end - s);
            int last = runs.size() - 1;
            if (last >= 0 && (runs.get(last) < 0) == (run < 0)) {
                runs.set(last, runs.get(last) + run);
            } else {
                runs.add(run);
            }
            s += Math.abs(run);
        }
        return runs;
    }

    /** Writes one 4 KiB chunk of non-zero bytes at {@code sector}. */
    private static void writeChunk(TargetBench b, BlockDevice dev, long sector) {
        byte[] data = new byte[4096];
        Arrays.fill(data, (byte) 0x6b);
        assertEquals(BioStatus.OK, b.write(dev, sector, data, 0));
    }

    @Test
    void linearReportsTheHolesOfItsDeviceAtTheRemappedSectors() throws TableException {
        try (TestKernel tk = new TestKernel("holes-linear"); TargetBench b = new TargetBench(tk.kernel)) {
            MemoryDevice m = b.add("m", new MemoryDevice(tk.kernel, "m", SECTORS << 9, 0));
            writeChunk(b, m, 1024); // data at device sectors 1024..1031
            MappedDevice dm = b.mapped("0 1024 linear m 512\n");
            assertTrue(dm.knowsAllocation());
            // Target sector s is device sector 512 + s: the data is at target 512..519.
            assertEquals(List.of(-512L, 8L, -504L), map(dm, 0, 1024));
            assertEquals(List.of(-12L), map(dm, 500, 512), "a query is cut at its maximum");
        }
    }

    @Test
    void stripedReportsEachStripesHolesChunkByChunk() throws TableException {
        try (TestKernel tk = new TestKernel("holes-striped"); TargetBench b = new TargetBench(tk.kernel)) {
            MemoryDevice s0 = b.add("s0", new MemoryDevice(tk.kernel, "s0", SECTORS << 9, 0));
            b.add("s1", new MemoryDevice(tk.kernel, "s1", SECTORS << 9, 0));
            writeChunk(b, s0, 8); // stripe 0, its second 8-sector piece of chunk 0
            MappedDevice dm = b.mapped("0 256 striped 2 16 s0 0 s1 0\n");
            // Chunks of 16 sectors: target 0..15 is s0 0..15 (data at 8..15), 16..31 is s1 (hole), ...
            assertEquals(List.of(-8L, 8L, -240L), map(dm, 0, 256));
        }
    }

    @Test
    void snapshotOriginReportsTheOriginsHoles() throws TableException {
        try (TestKernel tk = new TestKernel("holes-origin"); TargetBench b = new TargetBench(tk.kernel)) {
            MemoryDevice origin = b.add("o", new MemoryDevice(tk.kernel, "o", SECTORS << 9, 0));
            writeChunk(b, origin, 64);
            MappedDevice dm = b.mapped("0 " + SECTORS + " snapshot-origin o\n");
            assertEquals(List.of(-64L, 8L, -(SECTORS - 72)), map(dm, 0, SECTORS));
        }
    }

    @Test
    void mirrorReportsTheHolesOfTheLegItReadsFrom() throws TableException {
        try (TestKernel tk = new TestKernel("holes-mirror"); TargetBench b = new TargetBench(tk.kernel)) {
            MemoryDevice l0 = b.add("l0", new MemoryDevice(tk.kernel, "l0", SECTORS << 9, 0));
            b.add("l1", new MemoryDevice(tk.kernel, "l1", SECTORS << 9, 0));
            writeChunk(b, l0, 256 + 16); // leg 0 at its offset 256: target sectors 16..23
            MappedDevice dm = b.mapped("0 1024 mirror core 2 64 nosync 2 l0 256 l1 0\n");
            assertTrue(dm.knowsAllocation());
            assertEquals(List.of(-16L, 8L, -1000L), map(dm, 0, 1024));
        }
    }

    @Test
    void devicesThatKnowNoHolesMakeEverythingData() throws TableException {
        try (TestKernel tk = new TestKernel("holes-none"); TargetBench b = new TargetBench(tk.kernel)) {
            b.bottom("d", SECTORS);
            MappedDevice dm = b.mapped("0 1024 linear d 0\n");
            assertFalse(dm.knowsAllocation());
            assertEquals(List.of(1024L), map(dm, 0, 1024));
        }
    }
}
