package io.blkstack.bufio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.BioSet;
import io.blkstack.block.MemoryDevice;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * A failed metadata read must leave the buffer cache as if the block had never been asked for:
 * the read throws {@link MetadataIoException}, the block is not cached, the next read goes to the
 * device again and gets the right data, and the buffer's memory is neither aliased to another
 * block nor freed twice. (The old cache freed the buffer but left it in its map: the next access
 * got a buffer of block -1 that also sat in the reserve, and a later write went to sector -8.)
 * A failed write-back nobody waits for is counted at once and reported to the owner by the next
 * {@link BufferCache#writeDirtyBuffersWait}, even when that call's rewrite succeeded.
 */
class BufferCacheReadErrorTest {

    private static final int BLOCK = 4096;
    private static final BufferCache.Config NO_AGING = BufferCache.Config.defaults().withAge(0, 0);

    /** Fails exactly the {@code nth} I/O of device {@code meta} (1-based) once it is armed; counts the rest. */
    private static final class FailNth implements Faults {
        final AtomicLong attempts = new AtomicLong();
        volatile long nth = Long.MAX_VALUE;

        void failNextIo() {
            nth = attempts.get() + 1;
        }

        @Override
        public boolean shouldFail(String site) {
            return site.equals("io:meta") && attempts.incrementAndGet() == nth;
        }

        @Override
        public long extraLatencyNanos(String site) {
            return 0;
        }
    }

    private Kernel kernel;
    private Kernel.Attachment self;
    private final FailNth faults = new FailNth();

    private MemoryDevice start(long latencyNanos) {
        kernel = Kernel.builder().name("bufio-read-error").memory(16L << 20).policies(Policies.defaults()).faults(faults)
                .build();
        self = kernel.attach("test");
        return new MemoryDevice(kernel, "meta", 4L << 20, latencyNanos);
    }

    @AfterEach
    void tearDown() {
        try {
            kernel.close();
        } finally {
            self.close();
        }
        assertEquals(List.of(), kernel.misuses(), "misuse reported");
    }

    private static void fill(BufferCache cache, long block, long tag) {
        Buffer b = cache.newBuffer(block);
        for (int off = 0; off < BLOCK; off += 8) {
            b.putLong(off, tag * 1_000_003L + off);
        }
        cache.markDirty(b);
        cache.release(b);
    }

    private static void checkBuffer(Buffer b, long tag) {
        for (int off = 0; off < BLOCK; off += 8) {
            assertEquals(tag * 1_000_003L + off, b.getLong(off), "block " + b.block() + " offset " + off);
        }
    }

    /** Writes blocks 0..count-1 tagged with their number through one cache and closes it. */
    private static void format(MemoryDevice dev, int count) {
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            for (int i = 0; i < count; i++) {
                fill(cache, i, i);
            }
        }
    }

    @Test
    void failedReadIsForgottenAndTheNextReadGoesToTheDevice() {
        MemoryDevice dev = start(0);
        format(dev, 8);
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            faults.failNextIo();
            assertThrows(MetadataIoException.class, () -> cache.read(5));
            assertFalse(cache.isCached(5), "a block whose read failed stays cached");
            assertEquals(0, cache.cachedCount());
            assertEquals(0, cache.count(), "shrinker count after the failed read");

            Buffer again = cache.read(5);
            assertEquals(5, again.block());
            checkBuffer(again, 5);
            cache.release(again);
            // The failed buffer's memory went back to the reserve: reuse it for other blocks and
            // make sure none of them is block 5's buffer in disguise.
            for (long i = 0; i < 8; i++) {
                Buffer b = cache.read(i);
                checkBuffer(b, i);
                cache.release(b);
            }
            fill(cache, 6, 66);
            cache.writeDirtyBuffersWait();
            Buffer b5 = cache.read(5);
            checkBuffer(b5, 5);
            cache.release(b5);
        }
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            Buffer b6 = cache.read(6);
            checkBuffer(b6, 66);
            cache.release(b6);
        }
    }

    @Test
    void failedReadWithManyBlocksNeverWritesOrFreesTwice() {
        // Every one of 8 reads fails in turn; the reserve (4) is smaller than the number of failures,
        // so a leaked map entry would be handed out again and freed twice at close.
        MemoryDevice dev = start(0);
        format(dev, 16);
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            for (long i = 0; i < 8; i++) {
                faults.failNextIo();
                long block = i;
                assertThrows(MetadataIoException.class, () -> cache.read(block));
                Buffer b = cache.read(block + 8);
                checkBuffer(b, block + 8);
                cache.markDirty(b);
                cache.release(b);
            }
            cache.writeDirtyBuffersWait();
            for (long i = 0; i < 16; i++) {
                Buffer b = cache.read(i);
                checkBuffer(b, i);
                cache.release(b);
            }
        }
    }

    @Test
    void failedPrefetchIsRetriedByTheNextRead() {
        MemoryDevice dev = start(0); // no latency: the prefetch read has completed when prefetch returns
        format(dev, 4);
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            faults.failNextIo();
            cache.prefetch(2, 1);
            assertTrue(cache.isCached(2), "prefetch inserted the block");
            Buffer b = cache.read(2); // the prefetch failed before anyone asked for it: read again
            checkBuffer(b, 2);
            cache.release(b);
        }
    }

    @Test
    void failedWriteBackIsReportedByTheNextWaitEvenWhenTheRewriteSucceeds() {
        MemoryDevice dev = start(0); // no latency: a write has completed when its submit returns
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            fill(cache, 3, 3);
            faults.failNextIo();
            cache.writeDirtyBuffers(); // a write-back nobody waits for, as the shrinker's work starts
            assertEquals(1, kernel.counters().value("bufio.write-errors"), "the failed write-back is counted");

            MetadataIoException e = assertThrows(MetadataIoException.class, cache::writeDirtyBuffersWait);
            assertTrue(e.getMessage().contains("earlier write-back of block 3"), e.getMessage());
            cache.writeDirtyBuffersWait(); // reported once
            assertEquals(0, cache.dirtyCount(), "the rewrite succeeded");
        }
        try (BufferCache cache = new BufferCache(dev, BLOCK, NO_AGING)) {
            Buffer b3 = cache.read(3);
            checkBuffer(b3, 3);
            cache.release(b3);
        }
    }
}
