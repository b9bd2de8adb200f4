package io.blkstack.bufio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.BioSet;
import io.blkstack.block.MemoryDevice;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The buffer cache: get/read/new/release/dirty/write round trips over a memory device, prefetch,
 * and the shrinker under both policies. The shrinker tests run {@code scan} in atomic context
 * (as a completion callback would), where any sleep is reported as misuse and throws: the fixed
 * policy must pass that, the legacy policy (seed 003) must be caught by it.
 */
class BufferCacheTest {

    private static final int BLOCK = 4096;
    private static final BufferCache.Config NO_AGING = BufferCache.Config.defaults().withAge(0, 0);

    private Kernel kernel;
    private Kernel.Attachment self;
    private BioSet set;

    private MemoryDevice start(Policies policies, long memoryBytes, long latencyNanos) {
        kernel = Kernel.builder().name("bufio-test").memory(memoryBytes).policies(policies).faults(Faults.NONE).build();
        self = kernel.attach("test");
        set = new BioSet(kernel, "test", 4, 4, null, false);
        return new MemoryDevice(kernel, "meta", 4L << 20, latencyNanos);
    }

    @AfterEach
    void tearDown() {
        try {
            kernel.close();
        } finally {
            self.close();
        }
    }

    private static void fill(BufferCache cache, long block, long tag) {
        Buffer b = cache.newBuffer(block);
        for (int off = 0; off < BLOCK; off += 8) {
            b.putLong(off, tag * 1_000_003L + off);
        }
        cache.markDirty(b);
        cache.release(b);
    }

    private static void checkImage(byte[] image, long tag) {
        for (int off = 0; off < BLOCK; off += 8) {
            assertEquals(tag * 1_000_003L + off, DeviceBlocks.longAt(image, off), "offset " + off);
        }
    }

    @Test
    void writeDirtyBuffersWaitReachesTheDeviceAndReadSeesIt() {
        MemoryDevice dev = start(Policies.defaults(), 16L << 20, 0);
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            fill(cache, 7, 7);
            fill(cache, 9, 9);
            assertEquals(2, cache.dirtyCount());
            byte[] before = DeviceBlocks.read(set, dev, 7);
            assertEquals(0, DeviceBlocks.longAt(before, 8), "not written before write-back");
            cache.writeDirtyBuffersWait();
            assertEquals(0, cache.dirtyCount());
            checkImage(DeviceBlocks.read(set, dev, 7), 7);
            checkImage(DeviceBlocks.read(set, dev, 9), 9);
            Buffer b = cache.get(9);
            assertNotNull(b);
            assertEquals(9 * 1_000_003L + 16, b.getLong(16));
            cache.release(b);
        }
        // A fresh cache reads what the first one wrote.
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            assertFalse(cache.isCached(7));
            Buffer b = cache.read(7);
            assertEquals(7 * 1_000_003L + 4088, b.getLong(4088));
            cache.release(b);
            assertThrows(IllegalStateException.class, () -> cache.release(b));
        }
    }

    @Test
    void closeWritesDirtyBuffers() {
        MemoryDevice dev = start(Policies.defaults(), 16L << 20, 0);
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            fill(cache, 3, 3);
        }
        checkImage(DeviceBlocks.read(set, dev, 3), 3);
    }

    @Test
    void asynchronousWritesCompleteWithLatency() {
        MemoryDevice dev = start(Policies.defaults(), 16L << 20, 1_000_000);
        try (BufferCache cache = new BufferCache(dev, BLOCK, new BufferCache.Config(2, 2, 0, 0))) {
            for (int i = 0; i < 20; i++) {
                fill(cache, i, i + 100);
            }
            cache.writeDirtyBuffers(); // at most 2 in flight; returns before the last ones complete
            cache.writeDirtyBuffersWait();
            for (int i = 0; i < 20; i++) {
                checkImage(DeviceBlocks.read(set, dev, i), i + 100);
            }
        }
    }

    @Test
    void prefetchReadsAheadWithoutHolding() {
        MemoryDevice dev = start(Policies.defaults(), 16L << 20, 1_000_000);
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            fill(cache, 20, 20);
            cache.writeDirtyBuffersWait();
        }
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            cache.prefetch(18, 4);
            for (long i = 18; i < 22; i++) {
                assertTrue(cache.isCached(i), "block " + i + " prefetched");
            }
            Buffer b = cache.get(20); // waits for the prefetch read
            assertEquals(20 * 1_000_003L, b.getLong(0));
            cache.release(b);
        }
    }

    @Test
    void fixedShrinkerInAtomicContextFreesCleanAndQueuesDirtyToTheWorkqueue() {
        MemoryDevice dev = start(Policies.defaults(), 16L << 20, 1_000_000);
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            for (int i = 0; i < 10; i++) {
                fill(cache, i, i + 1);
            }
            for (int i = 10; i < 20; i++) {
                cache.release(cache.read(i)); // clean
            }
            assertEquals(20, cache.cachedCount());
            Task me = Task.current();
            me.enterAtomic();
            long freed;
            try {
                freed = cache.scan(20, Gfp.KERNEL);
            } finally {
                me.exitAtomic();
            }
            assertEquals(10, freed, "only the clean buffers are freed inline");
            assertTrue(kernel.misuses().isEmpty(), "misuse: " + kernel.misuses());
            cache.workqueue().flush();
            assertEquals(0, cache.dirtyCount(), "the workqueue wrote the dirty buffers back");
            assertEquals(0, cache.cachedCount(), "and freed them");
            for (int i = 0; i < 10; i++) {
                checkImage(DeviceBlocks.read(set, dev, i), i + 1);
            }
        }
    }

    @Test
    void fixedShrinkerDoesNotWaitForTheCacheMutex() {
        MemoryDevice dev = start(Policies.defaults(), 16L << 20, 0);
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            cache.release(cache.read(1));
            Completion locked = new Completion("holder locked");
            Completion letGo = new Completion("let go");
            Task holder = kernel.spawn("holder", TaskKind.WORKER, () -> {
                cache.mutex().lock();
                locked.complete();
                letGo.await();
                cache.mutex().unlock();
            });
            locked.await();
            Task me = Task.current();
            me.enterAtomic();
            long freed;
            try {
                freed = cache.scan(10, Gfp.KERNEL);
            } finally {
                me.exitAtomic();
            }
            assertEquals(0, freed, "mutex busy: give up, do not sleep");
            assertTrue(kernel.misuses().isEmpty(), "misuse: " + kernel.misuses());
            letGo.complete();
            kernel.scheduler().join(holder);
            assertEquals(1, cache.scan(10, Gfp.KERNEL));
        }
    }

    @Test
    void legacyShrinkerWaitsForWriteBackInline() {
        // The writes the scan starts must still be in flight when it checks for them: with a 1 ms
        // device the check lost that race on a loaded machine (the writes had completed, nothing
        // to wait for, no misuse); a 1 s device keeps them in flight however the threads run.
        MemoryDevice dev = start(Policies.defaults().with(PolicySwitch.BUFIO_SHRINKER, "legacy"), 16L << 20,
                1_000_000_000L);
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            for (int i = 0; i < 4; i++) {
                fill(cache, i, i + 1);
            }
            Task me = Task.current();
            me.enterAtomic();
            try {
                assertThrows(IllegalStateException.class, () -> cache.scan(4, Gfp.KERNEL));
            } finally {
                me.exitAtomic();
            }
            assertFalse(kernel.misuses().isEmpty(), "the legacy shrinker sleeps on write-back in reclaim");
            // Outside atomic context it completes: writes, waits, frees.
            cache.writeDirtyBuffersWait(); // settle the writes the failed scan started
            for (int i = 0; i < 4; i++) {
                fill(cache, i, i + 11);
            }
            assertEquals(4, cache.scan(4, Gfp.KERNEL));
            assertEquals(0, cache.cachedCount());
            for (int i = 0; i < 4; i++) {
                checkImage(DeviceBlocks.read(set, dev, i), i + 11);
            }
        }
    }

    @Test
    void tinyArenaManyMoreBlocksThanMemoryStillRoundTrips() {
        // 1 MiB arena (256 pages) against 600 dirty 4 KiB metadata blocks: the cache must evict and
        // write back to make room, through its reserve, clean eviction and the shrinker.
        MemoryDevice dev = start(Policies.defaults(), 1L << 20, 0);
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            for (int i = 0; i < 600; i++) {
                fill(cache, i, i + 5);
            }
            for (int i = 0; i < 600; i += 7) {
                Buffer b = cache.read(i);
                assertEquals((i + 5) * 1_000_003L + 64, b.getLong(64), "block " + i);
                cache.release(b);
            }
            cache.writeDirtyBuffersWait();
            for (int i = 0; i < 600; i += 13) {
                checkImage(DeviceBlocks.read(set, dev, i), i + 5);
            }
            assertTrue(kernel.misuses().isEmpty(), "misuse: " + kernel.misuses());
        }
    }

    @Test
    void bulkLongsCrossPagesAndMatchSingleAccess() {
        MemoryDevice dev = start(Policies.defaults(), 16L << 20, 0);
        int block = 2 * BLOCK; // two pages: a run of longs crosses from one into the other
        try (BufferCache cache = new BufferCache(dev, block, NO_AGING)) {
            Buffer b = cache.newBuffer(3);
            long[] written = new long[300];
            for (int i = 0; i < written.length; i++) {
                written[i] = 0x0102030405060708L * (i + 1) ^ -i;
            }
            int at = BLOCK - 8 * 100; // 100 longs in the first page, 200 in the second
            b.putLongs(at, written, written.length);
            for (int i = 0; i < written.length; i++) {
                assertEquals(written[i], b.getLong(at + 8 * i), "long " + i + " read singly");
            }
            b.putLong(at + 8 * 150, 42);
            long[] read = new long[written.length];
            b.getLongs(at, read, read.length);
            written[150] = 42;
            assertArrayEquals(written, read);
            // Moves overlap like memmove, up and down, within a page and across the page boundary.
            long[] model = new long[block / 8];
            b.getLongs(0, model, model.length);
            int[][] moves = {{8, 16, 40}, {16, 8, 40}, {BLOCK - 80, BLOCK - 72, 30}, {BLOCK + 8, BLOCK - 16, 12}};
            for (int[] m : moves) {
                b.moveLongs(m[0], m[1], m[2]);
                System.arraycopy(model, m[0] / 8, model, m[1] / 8, m[2]);
                long[] now = new long[model.length];
                b.getLongs(0, now, now.length);
                assertArrayEquals(model, now, "after moving " + m[2] + " longs from " + m[0] + " to " + m[1]);
            }
            b.getLongs(at, read, read.length);
            System.arraycopy(model, at / 8, written, 0, written.length);
            assertThrows(IllegalArgumentException.class, () -> b.getLongs(at + 4, read, 2), "not a multiple of 8");
            assertThrows(IllegalArgumentException.class, () -> b.getLongs(block - 8, read, 2), "past the block");
            cache.release(b);
        }
    }

    @Test
    void validatedLastsUntilTheBlockIsReadAgainOrZeroed() {
        MemoryDevice dev = start(Policies.defaults(), 16L << 20, 0);
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            fill(cache, 5, 5);
            cache.writeDirtyBuffersWait();
            Buffer b = cache.read(5);
            assertFalse(b.isValidated(), "a new buffer starts unchecked");
            b.markValidated();
            cache.release(b);
            b = cache.read(5);
            assertTrue(b.isValidated(), "a cached buffer keeps its check");
            cache.release(b);
            assertEquals(1, cache.scan(10, Gfp.KERNEL), "the clean buffer is evicted");
            b = cache.read(5);
            assertFalse(b.isValidated(), "read from the device again: unchecked");
            assertEquals(5 * 1_000_003L + 8, b.getLong(8));
            b.markValidated();
            cache.release(b);
            b = cache.newBuffer(5);
            assertFalse(b.isValidated(), "zeroed: unchecked");
            cache.release(b);
        }
    }
}
