package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.TaskKind;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** The sparse memory device: reads after writes, holes, discard and write-zeroes, timer completion. */
class MemoryDeviceTest {

    private static final long SIZE = 8L << 20;

    private Kernel kernel;
    private TestKernel tk;
    private BioSet set;

    private void start(Faults faults) {
        tk = new TestKernel("memory-test", 8L << 20, Policies.defaults(), faults);
        kernel = tk.kernel;
        set = new BioSet(kernel, "test", 4, 4, null, false);
    }

    @AfterEach
    void tearDown() {
        if (tk != null) {
            tk.close();
        }
    }

    @Test
    void readsReturnWhatWasWrittenAndZerosElsewhere() {
        start(Faults.NONE);
        MemoryDevice dev = new MemoryDevice(kernel, "m", SIZE, 0);
        Random random = new Random(1);
        byte[] model = new byte[(int) SIZE];
        for (int i = 0; i < 200; i++) {
            int length = 512 * (1 + random.nextInt(64));
            long position = 512L * random.nextInt((int) ((SIZE - length) / 512));
            byte[] data = new byte[length];
            random.nextBytes(data);
            int pageOffset = 512 * random.nextInt(8);
            assertEquals(BioStatus.OK, BioBytes.write(set, dev, position, data, pageOffset, 0));
            System.arraycopy(data, 0, model, (int) position, length);
        }
        for (int i = 0; i < 100; i++) {
            int length = 512 * (1 + random.nextInt(64));
            long position = 512L * random.nextInt((int) ((SIZE - length) / 512));
            byte[] got = BioBytes.readOk(set, dev, position, length, 512 * random.nextInt(8));
            byte[] want = new byte[length];
            System.arraycopy(model, (int) position, want, 0, length);
            assertArrayEquals(want, got, "read at " + position + " length " + length);
        }
    }

    /**
     * Proves the heap quota: with room for two chunks, writes to two new chunks succeed, one to a
     * third fails with ENOSPC (nothing written there), overwrites of the two still succeed, a
     * DISCARD of one gives its room back for the third, and closing the device gives everything
     * back. Before, a memory device larger than the heap grew until an OutOfMemoryError took the
     * server down (found by an adversarial test: a 64 GiB memory device and an 8 GiB write).
     */
    @Test
    void writesPastTheHeapQuotaFailWithNoSpaceAndDroppedChunksGiveRoomBack() {
        Kernel small = Kernel.builder().name("quota-test").memory(8L << 20).heapQuota(2 * MemoryDevice.CHUNK_SIZE).build();
        try (Kernel.Attachment self = small.attach("test")) {
            BioSet bios = new BioSet(small, "test", 4, 4, null, false);
            MemoryDevice dev = new MemoryDevice(small, "m", SIZE, 0);
            byte[] data = filled(4096, (byte) 3);
            assertEquals(BioStatus.OK, BioBytes.write(bios, dev, 0, data, 0, 0));
            assertEquals(BioStatus.OK, BioBytes.write(bios, dev, 4096, data, 0, 0));
            assertEquals(BioStatus.NOSPC, BioBytes.write(bios, dev, 8192, data, 0, 0));
            assertArrayEquals(new byte[4096], BioBytes.readOk(bios, dev, 8192, 4096, 0), "the refused write wrote nothing");
            assertEquals(BioStatus.OK, BioBytes.write(bios, dev, 512, filled(512, (byte) 4), 0, 0), "an overwrite");
            assertEquals(BioStatus.OK, BioBytes.range(bios, dev, BioOp.DISCARD, 4096, 4096, 0));
            assertEquals(BioStatus.OK, BioBytes.write(bios, dev, 8192, data, 0, 0), "room given back by the discard");
            assertEquals(2 * MemoryDevice.CHUNK_SIZE, small.heapQuota().usedBytes());
            dev.close();
            assertEquals(0, small.heapQuota().usedBytes(), "the closed device's chunks");
            bios.close();
        } finally {
            small.close();
        }
    }

    @Test
    void freshDeviceIsOneHoleAndWritesAllocateChunks() {
        start(Faults.NONE);
        MemoryDevice dev = new MemoryDevice(kernel, "m", SIZE, 0);
        long sectors = SIZE >>> 9;
        assertTrue(dev.knowsAllocation());
        assertEquals(-sectors, dev.allocatedExtent(0, sectors));
        assertArrayEquals(new byte[8192], BioBytes.readOk(set, dev, 4096, 8192, 0));

        // Write one sector in chunk 2 (sectors 16..23): that whole chunk is now data.
        byte[] sector = filled(512, (byte) 7);
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 2 * 4096 + 1024, sector, 0, 0));
        assertEquals(1, dev.allocatedChunks());
        assertEquals(-16, dev.allocatedExtent(0, sectors));
        assertEquals(8, dev.allocatedExtent(16, sectors));
        assertEquals(6, dev.allocatedExtent(18, sectors));
        assertEquals(-(sectors - 24), dev.allocatedExtent(24, sectors));
        assertEquals(-3, dev.allocatedExtent(0, 3));
        // The rest of the chunk still reads as zeros.
        byte[] chunk = BioBytes.readOk(set, dev, 2 * 4096, 4096, 0);
        byte[] want = new byte[4096];
        System.arraycopy(sector, 0, want, 1024, 512);
        assertArrayEquals(want, chunk);
    }

    @Test
    void discardAndWriteZeroesMakeRangesReadAsZerosAndFreeWholeChunks() {
        start(Faults.NONE);
        MemoryDevice dev = new MemoryDevice(kernel, "m", SIZE, 0);
        byte[] data = filled(4 * 4096, (byte) 0x33);
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 0, data, 0, 0));
        assertEquals(4, dev.allocatedChunks());

        // Discard chunk 1 entirely and half of chunk 2.
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.DISCARD, 4096, 4096 + 2048, 0));
        assertEquals(3, dev.allocatedChunks());
        byte[] got = BioBytes.readOk(set, dev, 0, 4 * 4096, 0);
        for (int i = 0; i < got.length; i++) {
            byte expected = i >= 4096 && i < 4096 + 4096 + 2048 ? 0 : (byte) 0x33;
            assertEquals(expected, got[i], "byte " + i);
        }
        assertEquals(-8, dev.allocatedExtent(8, 100));

        // Zero the other half of chunk 2: it is all zero now, so it becomes a hole.
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.WRITE_ZEROES, 2 * 4096 + 2048, 2048, 0));
        assertEquals(2, dev.allocatedChunks());
        assertEquals(-16, dev.allocatedExtent(8, 100));
        assertArrayEquals(new byte[8192], BioBytes.readOk(set, dev, 4096, 8192, 512));
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.FLUSH, 0, 0, 0));
    }

    @Test
    void latencyCompletesFromATimerAfterTheDelayOnTheKernelClock() {
        start(Faults.NONE);
        long latency = 5_000_000L;
        MemoryDevice dev = new MemoryDevice(kernel, "m", SIZE, latency);
        byte[] data = filled(8192, (byte) 9);
        long t0 = kernel.scheduler().nanoTime();
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 8192, data, 0, 0));
        assertTrue(kernel.scheduler().nanoTime() - t0 >= latency, "completed before the latency passed");
        assertArrayEquals(data, BioBytes.readOk(set, dev, 8192, 8192, 0));
        dev.close();
        assertEquals(0, dev.inFlight());
    }

    @Test
    void ioFaultFailsTheBioWithoutTouchingTheData() {
        start(new Faults() {
            @Override
            public boolean shouldFail(String site) {
                return site.equals("io:bad");
            }

            @Override
            public long extraLatencyNanos(String site) {
                return 0;
            }
        });
        MemoryDevice bad = new MemoryDevice(kernel, "bad", SIZE, 0);
        MemoryDevice good = new MemoryDevice(kernel, "good", SIZE, 0);
        assertEquals(BioStatus.IOERR, BioBytes.write(set, bad, 0, filled(512, (byte) 1), 0, 0));
        assertEquals(0, bad.allocatedChunks());
        assertEquals(BioStatus.OK, BioBytes.write(set, good, 0, filled(512, (byte) 1), 0, 0));
    }

    @Test
    void concurrentWritersAndReadersKeepThePageBudget() {
        start(Faults.NONE);
        MemoryDevice dev = new MemoryDevice(kernel, "m", SIZE, 0);
        MemoryDevice slow = new MemoryDevice(kernel, "slow", SIZE, 100_000L);
        int tasks = 6;
        io.blkstack.kernel.Completion done = new io.blkstack.kernel.Completion("writers");
        java.util.concurrent.atomic.AtomicInteger mismatches = new java.util.concurrent.atomic.AtomicInteger();
        long region = SIZE / tasks / 4096 * 4096;
        for (int t = 0; t < tasks; t++) {
            final int id = t;
            kernel.spawn("load" + t, TaskKind.USER, () -> {
                try {
                    runLoad(id, id % 2 == 0 ? dev : slow, id * region, region, mismatches);
                } finally {
                    done.complete();
                }
            });
        }
        for (int t = 0; t < tasks; t++) {
            assertTrue(done.await(60_000_000_000L), "load tasks did not finish: " + kernel.crashes());
        }
        assertEquals(0, mismatches.get());
        assertTrue(kernel.crashes().isEmpty(), kernel.crashes().toString());
        kernel.pages().checkInvariants();
        // A timer's slot counts until its completion callback has returned; close waits for that.
        slow.close();
        assertEquals(0, slow.inFlight());
        assertEquals(0, dev.inFlight());
    }

    /** One load task: random writes in its own region, each read back and compared at once. */
    private void runLoad(int id, MemoryDevice dev, long base, long region, java.util.concurrent.atomic.AtomicInteger bad) {
        Random random = new Random(100 + id);
        for (int i = 0; i < 150; i++) {
            int length = 512 * (1 + random.nextInt(32));
            long position = base + 512L * random.nextInt((int) ((region - length) / 512));
            byte[] data = new byte[length];
            random.nextBytes(data);
            if (BioBytes.write(set, dev, position, data, 512 * random.nextInt(8), 0) != BioStatus.OK) {
                bad.incrementAndGet();
                continue;
            }
            byte[] got = BioBytes.readOk(set, dev, position, length, 512 * random.nextInt(8));
            if (!java.util.Arrays.equals(data, got)) {
                bad.incrementAndGet();
            }
        }
    }

    static byte[] filled(int length, byte value) {
        byte[] b = new byte[length];
        java.util.Arrays.fill(b, value);
        return b;
    }
}
