package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import java.util.Arrays;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The checker's stand-in for a file device: reads after writes through the cache, and what a
 * power cut keeps (flushed and FUA data) and loses (the rest), on media that outlive the device.
 */
class CachedMemoryDeviceTest {

    private static final long SIZE = 1L << 30;

    private Kernel kernel;
    private TestKernel tk;
    private BioSet set;

    @BeforeEach
    void start() {
        tk = new TestKernel("cached-memory-test", 8L << 20, Policies.defaults(), Faults.NONE);
        kernel = tk.kernel;
        set = new BioSet(kernel, "test", 4, 4, null, false);
    }

    @AfterEach
    void tearDown() {
        tk.close();
    }

    private static byte[] filled(int length, int value) {
        byte[] b = new byte[length];
        Arrays.fill(b, (byte) value);
        return b;
    }

    // A 1 GiB device holds only the chunks written; reads see the cache, the stable data, or zeros.
    @Test
    void readsSeeWritesAndTheDeviceIsSparse() {
        CachedMemoryDevice.Media media = new CachedMemoryDevice.Media("f", SIZE, false);
        CachedMemoryDevice dev = new CachedMemoryDevice(kernel, media, 10_000, 8, 512);
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 512L << 20, filled(8192, 7), 0, 0));
        assertArrayEquals(filled(8192, 7), BioBytes.readOk(set, dev, 512L << 20, 8192, 0));
        assertArrayEquals(new byte[4096], BioBytes.readOk(set, dev, 0, 4096, 0));
        assertEquals(2, media.cachedChunks());
        assertEquals(0, media.stableChunks());
        dev.close();
    }

    // A power cut keeps what a FLUSH made stable and what a FUA write wrote, and loses the rest,
    // including a write after the flush to a chunk that was flushed before; a device built again
    // over the same media reads exactly that. Writes during the cut land nowhere.
    @Test
    void powerCutKeepsFlushedAndFuaDataOnly() {
        CachedMemoryDevice.Media media = new CachedMemoryDevice.Media("f", SIZE, false);
        CachedMemoryDevice dev = new CachedMemoryDevice(kernel, media, 10_000, 8, 512);
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 0, filled(4096, 1), 0, 0));
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.FLUSH, 0, 0, 0));
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 0, filled(512, 2), 0, 0));
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 1L << 20, filled(4096, 3), 0, 0));
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 2L << 20, filled(1024, 4), 0, BioFlags.FUA));
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.WRITE_ZEROES, 8192, 4096, 0));
        media.cutPower();
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 3L << 20, filled(4096, 5), 0, 0));
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.FLUSH, 0, 0, 0));
        dev.close();
        media.restorePower();
        CachedMemoryDevice again = new CachedMemoryDevice(kernel, media, 10_000, 8, 512);
        assertArrayEquals(filled(4096, 1), BioBytes.readOk(set, again, 0, 4096, 0));
        assertArrayEquals(new byte[4096], BioBytes.readOk(set, again, 1L << 20, 4096, 0));
        assertArrayEquals(filled(1024, 4), BioBytes.readOk(set, again, 2L << 20, 1024, 0));
        assertArrayEquals(new byte[4096], BioBytes.readOk(set, again, 3L << 20, 4096, 0));
        assertEquals(2, media.stableChunks(), media.toString());
        assertTrue(again.knowsAllocation());
        assertTrue(again.allocatedExtent(0, 8) > 0);
        assertTrue(again.allocatedExtent(8, 8) < 0);
        again.close();
    }

    // Write-through media (a memory device) lose nothing in a power cut.
    @Test
    void writeThroughMediaKeepEverything() {
        CachedMemoryDevice.Media media = new CachedMemoryDevice.Media("m", 1L << 20, true);
        CachedMemoryDevice dev = new CachedMemoryDevice(kernel, media, 0, 8, 512);
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 4096, filled(4096, 9), 0, 0));
        media.cutPower();
        media.restorePower();
        assertArrayEquals(filled(4096, 9), BioBytes.readOk(set, dev, 4096, 4096, 0));
        dev.close();
    }
}
