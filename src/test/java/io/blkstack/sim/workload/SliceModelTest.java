package io.blkstack.sim.workload;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import io.blkstack.bio.Bio;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** The model's stamps stand for the bytes: what {@link SliceModel#fill} writes is what it compares and reports. */
class SliceModelTest {

    private static SliceModel model() {
        return new SliceModel(WorkloadSpec.parse("tasks=2,ops=4,size=4k-8k,region=0-64k"), 1, new SplittableRandom(7));
    }

    // Data filled from the model compares equal sector by sector; a byte changed anywhere in a
    // sector is found at its index, and the model names the byte that should be there.
    @Test
    void filledDataMatchesAndAChangedByteIsFoundWhereItIs() {
        SliceModel m = model();
        m.stamp(0x1234_5678_9abcL, 4096, 8192);
        ByteBuffer data = ByteBuffer.allocate(8192);
        m.fill(data, 0, 4096, 8192);
        byte[] sector = new byte[Bio.SECTOR_SIZE];
        for (int pos = 0; pos < 8192; pos += Bio.SECTOR_SIZE) {
            data.get(pos, sector);
            assertEquals(-1, m.mismatch(sector, 4096 + pos));
        }
        data.get(1024, sector);
        for (int k : new int[] {0, 5, 8, 511}) {
            byte[] bad = sector.clone();
            bad[k] ^= 1;
            assertEquals(k, m.mismatch(bad, 4096 + 1024));
            assertEquals(sector[k], m.expectedByte(4096 + 1024 + k));
        }
        // Another stamp's data, or the same data at another offset, is not this sector's.
        assertNotEquals(-1, m.mismatch(sector, 0x1234_5678_9abdL, 4096 + 1024));
        assertNotEquals(-1, m.mismatch(sector, 4096 + 1024 + Bio.SECTOR_SIZE));
    }

    // A sector stamped ZEROS fills as zeros and only zeros match it; the byte order of the
    // buffer filled does not change the bytes.
    @Test
    void zerosAndByteOrder() {
        SliceModel m = model();
        m.stamp(99, 0, 1024);
        m.stamp(SliceModel.ZEROS, 512, 512);
        ByteBuffer little = ByteBuffer.allocateDirect(1024).order(ByteOrder.LITTLE_ENDIAN);
        ByteBuffer big = ByteBuffer.allocateDirect(1024).order(ByteOrder.BIG_ENDIAN);
        m.fill(little, 0, 0, 1024);
        m.fill(big, 0, 0, 1024);
        byte[] a = new byte[1024];
        byte[] b = new byte[1024];
        little.get(0, a);
        big.get(0, b);
        assertArrayEquals(a, b);
        byte[] zeros = new byte[Bio.SECTOR_SIZE];
        byte[] second = new byte[Bio.SECTOR_SIZE];
        System.arraycopy(a, 512, second, 0, 512);
        assertArrayEquals(zeros, second);
        assertEquals(-1, m.mismatch(zeros, 512));
        assertEquals(0, m.expectedByte(700));
        assertNotEquals(-1, m.mismatch(zeros, 0));
    }
}
