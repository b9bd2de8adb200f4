package io.blkstack.bufio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.MemoryDevice;
import io.blkstack.dm.thin.Pool;
import io.blkstack.dm.thin.metadata.ThinMetadata;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import io.blkstack.sim.Outcome;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;

/**
 * The legacy bufio shrinker's stall (seed 003) as the checker explains it, with the buffer cache's
 * default configuration: thin metadata in a cache that also runs its periodic eviction work every
 * 30 s, as a thin pool's does.
 */
class ShrinkerStallExplainedTest {

    static final long DATA_BLOCKS = 4096;

    /** Two tasks map blocks of their thin devices and commit, with every free page taken. */
    static Consumer<Kernel> metadataUnderPressure(int rounds, int perRound) {
        return k -> {
            MemoryDevice meta = new MemoryDevice(k, "meta0", 4L << 20, 50_000);
            BufferCache cache = new BufferCache(meta, Pool.METADATA_BLOCK_SIZE, BufferCache.Config.defaults()
                    .withAge(300_000_000_000L, 30_000_000_000L));
            ThinMetadata md = ThinMetadata.format(cache, DATA_BLOCKS, 128, 5);
            md.createThin(0);
            md.createThin(1);
            md.commit();
            List<Page> hoard = new ArrayList<>();
            for (Page p = k.pages().alloc(Gfp.NOWAIT); p != null; p = k.pages().alloc(Gfp.NOWAIT)) {
                hoard.add(p);
            }
            List<Task> workers = new ArrayList<>();
            for (int t = 0; t < 2; t++) {
                int dev = t;
                workers.add(k.spawn("thin-md" + t, TaskKind.WORKER, () -> {
                    for (int r = 0; r < rounds; r++) {
                        for (int i = 0; i < perRound; i++) {
                            md.insertMapping(dev, (long) r * perRound + i, md.allocDataBlock(0, DATA_BLOCKS));
                        }
                        md.commit();
                    }
                }));
            }
            for (Task w : workers) {
                k.scheduler().join(w);
            }
            hoard.forEach(k.pages()::free);
            cache.close();
        };
    }

    static SimConfig legacy() {
        return SimConfig.builder().memory(512 * 1024)
                .policies(Policies.defaults().with(PolicySwitch.BUFIO_SHRINKER, "legacy"))
                .faults("latency:meta0=0.5/200us").build();
    }

    // Proves the legacy shrinker's stall is classified and explained even while periodic work keeps
    // changing the kernel's state (it used to surface as TIME_LIMIT after a simulated day): the reclaim task, holding the reclaim mutex inside the cache's
    // scan, waits for the cache's mutex, whose holder waits for reclaim; the cache's eviction work
    // (every 30 s) and the worker pool's mayday timer keep firing, so the state fingerprint never
    // settles. A campaign's first finding is a DEADLOCK or LIVELOCK whose headline names the
    // innermost wait inside the shrinker (BufferCache.scanLegacy), and replaying its seed with the
    // stuck-wait rule disabled shows what it used to be: a run that goes on to a limit.
    @Test
    void legacyStallIsClassifiedWithTheShrinkerInItsHeadline() {
        SimRunner.CampaignResult c = new SimRunner(legacy()).campaign(1, 200, true, false, metadataUnderPressure(2, 6));
        SimResult first = c.firstFinding();
        assertNotNull(first, "no finding in " + c.schedules() + " schedules: " + c.outcomes());
        assertTrue(first.outcome() == Outcome.DEADLOCK || first.outcome() == Outcome.LIVELOCK,
                first.summary() + "\n" + first.explanation());
        String headline = first.explanation().lines().findFirst().orElseThrow();
        assertTrue(headline.contains("inside shrinker BufferCache.scanLegacy"), headline);
        assertTrue(first.explanation().contains("mutex reclaim"), first.explanation());

        SimConfig withoutRule = legacy().toBuilder().stuckWaitNanosMax(Long.MAX_VALUE).maxSteps(200_000).build();
        SimResult before = new SimRunner(withoutRule).runOnce(first.seed(), metadataUnderPressure(2, 6));
        assertEquals(Outcome.TIME_LIMIT, before.outcome(), before.summary());
        System.out.println("bufio legacy stall: " + first.summary() + "; without the stuck-wait rule: " + before.summary());
    }
}
