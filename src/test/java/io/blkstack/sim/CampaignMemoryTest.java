package io.blkstack.sim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.MemoryDevice;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.scenario.SplittingDevice;
import io.blkstack.sim.workload.Workload;
import io.blkstack.sim.workload.WorkloadSpec;
import java.lang.ref.WeakReference;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;

/**
 * Long campaigns keep their memory flat: a finding keeps its seed, kind, trace hash and knot text,
 * never the kernel of its run, and a campaign keeps only the first few findings of each kind.
 */
class CampaignMemoryTest {

    /**
     * Schedules of the long campaign: what fits in about a minute on a loaded CI machine. The
     * 100,000-schedule run is {@code bench/check-campaign-memory.sh}; override with
     * {@code -Dblkstack.campaignMemorySchedules=N}.
     */
    static final int LONG_SCHEDULES = Integer.getInteger("blkstack.campaignMemorySchedules", 2_000);

    /** The legacy split-memory stack of {@code blkstack check} (seed 000): most schedules end in a finding. */
    static SimConfig legacy() {
        return SimConfig.builder().memory(256 * 1024).policies(Policies.parse(List.of("bioset-rescuer=legacy")))
                .faults("latency:mem0=0.5/200us").build();
    }

    /** The examples' check workload over a splitting device (4 KiB pieces, 1-bio reserve) over a memory device. */
    static Workload splitOverMemory() {
        WorkloadSpec spec = WorkloadSpec.parse("tasks=3,ops=8,mix=write:60,read:30,flush:10,size=4k-64k,region=0-1m,"
                + "flushEvery=4,pressure=on");
        return new Workload(k -> new SplittingDevice(k, "splitter", new MemoryDevice(k, "mem0", 4L << 20, 50_000), 8, 1,
                true), spec);
    }

    // Proves that the kernel of a run that ends in a finding becomes unreachable once the run is over
    // (before, a static table of worker pools kept every unclosed kernel alive): a 60-schedule legacy
    // campaign records a weak reference to each run's kernel, and after the campaign and a few
    // explicit collections every one of them is cleared, while the campaign still has its findings.
    @Test
    void findingsDoNotKeepTheirKernels() {
        List<WeakReference<Kernel>> kernels = new ArrayList<>();
        Workload workload = splitOverMemory();
        Consumer<Kernel> recorded = k -> {
            kernels.add(new WeakReference<>(k));
            workload.accept(k);
        };
        SimRunner.CampaignResult c = new SimRunner(legacy()).campaign(7, 60, false, false, recorded);
        assertTrue(c.findingCount() > 10, "the legacy campaign should find the deadlock often: " + c.outcomes());
        assertEquals(60, kernels.size());
        for (int i = 0; i < 10 && anyAlive(kernels); i++) {
            System.gc();
        }
        for (WeakReference<Kernel> ref : kernels) {
            assertNull(ref.get(), "a run's kernel is still reachable after the campaign: " + ref.get());
        }
    }

    private static boolean anyAlive(List<WeakReference<Kernel>> refs) {
        return refs.stream().anyMatch(r -> r.get() != null);
    }

    // Proves the campaign counts every finding but keeps only the first FINDINGS_KEPT_PER_KIND of each
    // kind in full, and that a long legacy campaign completes in the test's heap. The heap in use
    // after a collection is printed at the start, every quarter and the end (a figure to read, not
    // to assert: the bench script runs 100,000 schedules).
    @Test
    void longLegacyCampaignRunsInTheDefaultHeap() {
        Runtime rt = Runtime.getRuntime();
        long[] done = new long[1];
        int quarter = Math.max(1, LONG_SCHEDULES / 4);
        System.out.printf("campaign memory: %d schedules, max heap %d MiB, used at start %d MiB%n", LONG_SCHEDULES,
                rt.maxMemory() >> 20, usedAfterGc(rt) >> 20);
        SimRunner.CampaignResult c = new SimRunner(legacy()).campaign(11, LONG_SCHEDULES, false, false, splitOverMemory(),
                r -> {
                    if (++done[0] % quarter == 0) {
                        System.out.printf("campaign memory: after %d schedules, %d MiB used after GC%n", done[0],
                                usedAfterGc(rt) >> 20);
                    }
                });
        System.out.printf("campaign memory: %s, %.1f schedules/s, %d MiB used after GC at the end%n", c.outcomes(),
                c.schedulesPerSecond(), usedAfterGc(rt) >> 20);
        assertEquals(LONG_SCHEDULES, c.schedules());
        long kept = 0;
        for (Map.Entry<Outcome, Integer> e : c.outcomes().entrySet()) {
            long ofKind = c.findings().stream().filter(r -> r.outcome() == e.getKey()).count();
            if (e.getKey().isFinding()) {
                assertEquals(Math.min(e.getValue(), SimRunner.FINDINGS_KEPT_PER_KIND), ofKind, e.getKey().toString());
                kept += ofKind;
            }
        }
        assertEquals(kept, c.findings().size());
        assertTrue(c.findingCount() > SimRunner.FINDINGS_KEPT_PER_KIND, "too few findings to test the bound: " + c.outcomes());
    }

    private static long usedAfterGc(Runtime rt) {
        System.gc();
        return rt.totalMemory() - rt.freeMemory();
    }

    // Proves heap exhaustion of the checker is not reported as a CRASH of the stack: a task that dies
    // of OutOfMemoryError (thrown here, as a full heap would) makes the run throw with a message
    // saying so, while a task that dies of another error is still a CRASH finding.
    @Test
    void heapExhaustionIsNotAFinding() {
        SimRunner runner = new SimRunner(SimConfig.builder().build());
        IllegalStateException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class,
                () -> runner.runOnce(1, k -> {
                    throw new OutOfMemoryError("Java heap space (simulated)");
                }));
        assertTrue(e.getMessage().contains("ran out of heap"), e.getMessage());
        SimResult crash = runner.runOnce(1, k -> {
            throw new IllegalArgumentException("a real bug");
        });
        assertEquals(Outcome.CRASH, crash.outcome(), crash.explanation());
    }
}
