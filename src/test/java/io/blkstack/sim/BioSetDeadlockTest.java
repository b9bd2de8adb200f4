package io.blkstack.sim;

import io.blkstack.scenario.BioSetSplitStack;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.Policies;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * Seed 000 on the checker: a splitting stacking device ({@link SplittingDevice}, bcache style) that
 * allocates twice from one bio set inside the submit loop, with a 1-element reserve and memory
 * exhausted ({@link BioSetSplitStack}), built only from core components.
 */
class BioSetDeadlockTest {

    /** The old design: a single FIFO submit list and no punting to a rescuer. */
    static final Policies LEGACY = Policies.parse(List.of("submit-order=legacy", "bioset-rescuer=legacy"));

    /** A task waiting on the splitting set's bio mempool, as the knot prints it. */
    static final Pattern POOL_WAITER = Pattern.compile("task (\\S+) \\(USER\\) waits on mempool " + BioSetSplitStack.DEVICE + "-bs-bio");

    /** 256 KiB of memory, the null device's latency stretched by up to 200 us at random on half the bios. */
    static SimConfig config(Policies policies) {
        return SimConfig.builder().memory(256 * 1024).policies(policies)
                .faults("latency:" + BioSetSplitStack.LOWER + "=0.5/200us").build();
    }

    // Proves the checker finds seed 000's deadlock: without a rescuer and under the legacy policies,
    // a random-walk campaign from each of three fixed master seeds ends in DEADLOCK or LIVELOCK (the
    // mempool's 5 s retry keeps the waiters "alive") within 200 schedules, and the knot names the
    // bio set and a task that waits on its pool while holding one of its bios on its own pending
    // list. The finding replays from its seed to the same trace hash and the same explanation.
    @Test
    void legacyWithoutRescuerDeadlocks() {
        for (long master : new long[] {1, 2, 3}) {
            SimRunner runner = new SimRunner(config(LEGACY));
            SimRunner.CampaignResult c = runner.campaign(master, 200, true, false, BioSetSplitStack.standard(false));
            SimResult r = c.firstFinding();
            assertNotNull(r, "master seed " + master + ": nothing found in " + c.schedules() + " schedules " + c.outcomes());
            assertTrue(r.outcome() == Outcome.DEADLOCK || r.outcome() == Outcome.LIVELOCK, r.explanation());
            String knot = r.explanation();
            assertTrue(knot.contains(BioSetSplitStack.bioSetName() + ":"), knot);
            assertTrue(holderWaitsWithPendingFront(knot), "no task waits on the pool while holding a pending front: " + knot);
            SimResult replay = new SimRunner(config(LEGACY)).runOnce(r.seed(), BioSetSplitStack.standard(false));
            assertEquals(r.traceHash(), replay.traceHash(), "replay of seed " + r.seed());
            assertEquals(knot, replay.explanation());
            assertEquals(0, r.leakedThreads());
        }
    }

    /** Whether some task waiting on the splitting set's pool holds one of its bios on its pending list. */
    static boolean holderWaitsWithPendingFront(String knot) {
        Matcher m = POOL_WAITER.matcher(knot);
        while (m.find()) {
            if (knot.contains("pending on task " + m.group(1) + "'s submit list")) {
                return true;
            }
        }
        return false;
    }

    // Proves the fix holds: the same stack with a rescuer under the default policies (depth-first
    // submit, rescuer punting) finishes all 2,000 schedules with no finding, and the campaign is not
    // vacuous: the reserve was used, fronts were punted to the rescuer, and the rescuer ran on mayday
    // because no worker could be created without memory.
    @Test
    void defaultPoliciesWithRescuerFindNothing() {
        SimRunner runner = new SimRunner(config(Policies.defaults()));
        SimRunner.CampaignResult c = runner.campaign(1, 2_000, true, false, BioSetSplitStack.standard(true));
        assertTrue(c.findings().isEmpty(), c.firstFinding() == null ? "" : c.firstFinding().explanation());
        assertEquals(2_000, c.schedules());
        assertTrue(c.counters().getOrDefault("mempool.reserve-used", 0L) > 0, c.counters().toString());
        assertTrue(c.counters().getOrDefault("bioset.rescuer-punts", 0L) > 0, c.counters().toString());
        assertTrue(c.counters().getOrDefault("wq.maydays", 0L) > 0, c.counters().toString());
        System.out.printf("bioset-split default policies: %d schedules, %.0f schedules/s, %.0f decisions/s%n",
                c.schedules(), c.schedulesPerSecond(), c.decisionsPerSecond());
    }

    // Proves the rescuer alone is what fixes it: the same stack with a rescuer but under
    // bioset-rescuer=legacy (no punting) deadlocks again within 200 schedules.
    @Test
    void legacyRescuerPolicyDisablesPunting() {
        SimRunner runner = new SimRunner(config(Policies.parse(List.of("bioset-rescuer=legacy"))));
        SimRunner.CampaignResult c = runner.campaign(1, 200, true, false, BioSetSplitStack.standard(true));
        SimResult r = c.firstFinding();
        assertNotNull(r, "nothing found in " + c.schedules() + " schedules " + c.outcomes());
        assertTrue(holderWaitsWithPendingFront(r.explanation()), r.explanation());
        assertEquals(0L, r.counters().getOrDefault("bioset.rescuer-punts", 0L), r.counters().toString());
    }
}
