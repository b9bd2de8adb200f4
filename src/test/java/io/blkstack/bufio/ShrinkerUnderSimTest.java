package io.blkstack.bufio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.BioSet;
import io.blkstack.block.MemoryDevice;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import io.blkstack.mem.Shrinker;
import io.blkstack.sim.Outcome;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;

/**
 * The buffer cache's shrinker under the deterministic simulator (seed {@code 003_*}): a writer
 * dirties more metadata blocks than a tiny page arena holds while a second task allocates pages
 * with {@code GFP_KERNEL}, so allocations run direct reclaim (and kswapd runs) through the cache's
 * {@code scan}. The cache is registered with reclaim through {@link AtomicScan}, which runs every
 * {@code scan} in atomic context: any sleep there (a mutex wait, a wait for write-back) is
 * reported as misuse and ends the schedule with {@link Outcome#MISUSE}. Under the fixed policy 300
 * schedules find nothing, and at the end the dirty buffers are written back by the cache's
 * workqueue (kicked by a last {@code scan}) and the device holds what the writer wrote last; under
 * the legacy policy the checker catches the inline wait.
 */
class ShrinkerUnderSimTest {

    private static final int BLOCK = Page.SIZE;
    /** Metadata blocks the writer dirties per round: more than the arena can cache. */
    private static final int BLOCKS = 96;
    /** 64 pages: the writer's blocks, the hog's pages and the kernel's reserves do not all fit. */
    private static final long ARENA = 64L * Page.SIZE;

    /** Registers a cache with reclaim so that each {@code scan} runs in atomic context. */
    static final class AtomicScan implements Shrinker {
        private final BufferCache cache;
        private final AtomicLong scans = new AtomicLong();

        AtomicScan(BufferCache cache) {
            this.cache = cache;
        }

        /** The cache's name, marked as the atomic wrapper. */
        @Override
        public String name() {
            return cache.name() + " (atomic scan)";
        }

        /** The cache's count. */
        @Override
        public long count() {
            return cache.count();
        }

        /** Runs the cache's scan with the task in atomic context, where a sleep is misuse. */
        @Override
        public long scan(long toScan, int gfp) {
            Task self = Task.current();
            self.enterAtomic();
            try {
                long n = cache.scan(toScan, gfp);
                scans.incrementAndGet();
                return n;
            } finally {
                self.exitAtomic();
            }
        }
    }

    /** The pattern of {@code block} as written in round {@code round}. */
    private static long word(long block, int round, int offset) {
        return (block * 1_000_003L + round * 7_919L) ^ offset;
    }

    /**
     * The workload: a writer rewrites {@link #BLOCKS} blocks for {@code rounds} rounds; a hog takes
     * and frees {@code hogPages} pages at a time with {@code GFP_KERNEL}. Then one last atomic
     * scan kicks the workqueue, whose write-back must leave nothing dirty and the device equal to
     * the last round. A violated expectation throws, which the checker reports as a crash.
     */
    static Consumer<Kernel> pressure(int rounds, int hogPages, long[] atomicScans) {
        return k -> {
            MemoryDevice dev = new MemoryDevice(k, "meta", 1L << 20, 50_000);
            BufferCache cache = new BufferCache(dev, BLOCK, new BufferCache.Config(2, 4, 0, 0));
            k.pages().unregisterShrinker(cache);
            AtomicScan shrinker = new AtomicScan(cache);
            k.pages().registerShrinker(shrinker);
            Task writer = k.spawn("writer", TaskKind.USER, () -> {
                for (int r = 0; r < rounds; r++) {
                    for (long b = 0; b < BLOCKS; b++) {
                        Buffer buf = cache.newBuffer(b);
                        for (int off = 0; off < BLOCK; off += 512) {
                            buf.putLong(off, word(b, r, off));
                        }
                        cache.markDirty(buf);
                        cache.release(buf);
                    }
                }
            });
            Task hog = k.spawn("hog", TaskKind.USER, () -> {
                Page[] held = new Page[hogPages];
                for (int r = 0; r < rounds * 3; r++) {
                    for (int i = 0; i < hogPages; i++) {
                        held[i] = k.pages().alloc(Gfp.KERNEL);
                        if (held[i] == null) {
                            throw new IllegalStateException("GFP_KERNEL allocation " + i + " of round " + r + " failed");
                        }
                    }
                    for (int i = 0; i < hogPages; i++) {
                        k.pages().free(held[i]);
                        held[i] = null;
                    }
                }
            });
            k.scheduler().join(writer);
            k.scheduler().join(hog);

            // Write-back by the workqueue: the atomic scan frees what is clean and queues the rest.
            cache.workqueue().flush();
            shrinker.scan(Math.max(1, cache.cachedCount()), Gfp.KERNEL);
            cache.workqueue().flush();
            if (cache.dirtyCount() != 0) {
                throw new IllegalStateException("after the shrinker's work " + cache.dirtyCount()
                        + " buffers are still dirty: " + cache.describeState());
            }
            BioSet set = new BioSet(k, "verify", 2, 2, null, false);
            for (long b = 0; b < BLOCKS; b++) {
                byte[] image = DeviceBlocks.read(set, dev, b);
                for (int off = 0; off < BLOCK; off += 512) {
                    long want = word(b, rounds - 1, off);
                    long got = DeviceBlocks.longAt(image, off);
                    if (got != want) {
                        throw new IllegalStateException("device block " + b + " offset " + off + " holds " + got
                                + ", the last round wrote " + want);
                    }
                }
            }
            set.close();
            atomicScans[0] += shrinker.scans.get();
            k.pages().unregisterShrinker(shrinker);
            cache.close();
            dev.close();
        };
    }

    // Under the fixed policy no schedule of 300 finds misuse (a sleep inside scan), deadlock or a
    // wrong block, reclaim really called the cache's scan in atomic context, and the shrinker really
    // kicked its workqueue.
    @Test
    void fixedShrinkerNeverSleepsAndTheWorkqueueWritesBack() {
        SimRunner runner = new SimRunner(SimConfig.builder().memory(ARENA).build());
        long[] atomicScans = {0};
        SimRunner.CampaignResult c = runner.campaign(3003, 300, true, false, pressure(2, 8, atomicScans));
        SimResult first = c.firstFinding();
        assertTrue(c.findings().isEmpty(), first == null ? "" : first.summary() + "\n" + first.explanation()
                + "\nreplay: " + runner.replayArguments(first));
        assertEquals(300, c.schedules());
        System.out.printf("bufio shrinker under sim: %d schedules, %d atomic scans, counters %s%n", c.schedules(),
                atomicScans[0], c.counters());
        assertEquals(300, c.outcomes().get(Outcome.OK));
        assertTrue(c.counters().getOrDefault("pages.direct-reclaims", 0L) > 0, "no direct reclaim ran: " + c.counters());
        assertTrue(atomicScans[0] > 300, "reclaim called the atomic scan only " + atomicScans[0] + " times");
        assertTrue(c.counters().getOrDefault("bufio.shrinker-work-kicks", 0L) > 0,
                "the shrinker never queued write-back: " + c.counters());
        assertTrue(c.counters().getOrDefault("bufio.shrinker-freed", 0L) > 0, "the shrinker freed nothing: " + c.counters());
    }

    // The same under PCT (depth 3), which reaches the orderings a random walk rarely picks: a scan
    // while the writer holds the cache mutex, a scan racing the workqueue's write-back.
    @Test
    void fixedShrinkerUnderPctFindsNothing() {
        SimRunner runner = new SimRunner(SimConfig.builder().memory(ARENA).strategy("pct:3").build());
        long[] atomicScans = {0};
        SimRunner.CampaignResult c = runner.campaign(3004, 100, true, false, pressure(2, 8, atomicScans));
        SimResult first = c.firstFinding();
        assertTrue(c.findings().isEmpty(), first == null ? "" : first.summary() + "\n" + first.explanation()
                + "\nreplay: " + runner.replayArguments(first));
        assertEquals(100, c.schedules());
        assertTrue(atomicScans[0] > 0, "reclaim never called the atomic scan");
    }

    // The same workload under bufio-shrinker=legacy: scan writes dirty buffers and waits inline, and
    // the checker reports that sleep in reclaim as misuse (so the fixed test above can fail).
    @Test
    void legacyShrinkerIsCaughtSleepingInReclaim() {
        SimConfig config = SimConfig.builder().memory(ARENA)
                .policies(Policies.defaults().with(PolicySwitch.BUFIO_SHRINKER, "legacy")).build();
        SimRunner runner = new SimRunner(config);
        SimRunner.CampaignResult c = runner.campaign(3003, 50, true, false, pressure(2, 8, new long[1]));
        SimResult first = c.firstFinding();
        assertNotNull(first, "legacy shrinker not caught in 50 schedules: " + c.outcomes());
        assertEquals(Outcome.MISUSE, first.outcome(), first.summary() + "\n" + first.explanation());
        assertFalse(first.explanation().isEmpty());
    }
}
