package io.blkstack.scenario;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.sim.Outcome;
import java.util.HashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Seed 004, {@code split-worker}: with no workers creatable, the legacy always-offload policy lets
 * the {@code alloc} queue's rescuer run the completion path's split, which waits for allocation
 * group 0, held by the write path, whose own split is queued on that rescuer behind it (two trees,
 * one set of groups, one queue); the checker finds that ABBA knot.
 * Under {@code reserved-only} nothing is found while the rescuer still runs the write path's splits.
 * On real threads the legacy run stalls and stops itself, the fixed one completes with verified maps.
 */
class ScenarioSplitWorkerTest {

    static final long[] MASTER_SEEDS = {1, 2, 3};
    static final int SCHEDULES = 300;
    final Scenario scenario = ScenarioRegistry.byName("split-worker");

    /** The rescuer's wait in a knot: the group lock and the task that owns it. */
    static final Pattern RESCUER_WAIT = Pattern.compile(
            "task rescuer/alloc#\\d+ \\(RESCUER\\) waits on mutex thin ag 0, held by (provision#\\d+)");
    /** The alloc queue's state in a knot: what is pending, what runs on which task. */
    static final Pattern ALLOC_QUEUE = Pattern.compile(
            "workqueue alloc \\(max_active 1, MEM_RECLAIM\\): active 1/1, pending \\d+ \\[([^\\]]*)\\], running \\[([^\\]]*)\\]");

    // Proves the legacy ABBA is reachable from three master seeds within 300 schedules, in the
    // seed's shape: the rescuer runs the completion path's split and waits on the group lock, whose
    // owner (the write path) waits on its own split, queued on the alloc queue behind the running one.
    @Test
    void legacyFindsTheRescuerWaitingOnTheGroupLock() {
        Scenario.Variant legacy = scenario.variants().get(0);
        for (long master : MASTER_SEEDS) {
            ScenarioRun run = SimEngine.run(scenario, legacy, master, SCHEDULES, r -> { });
            assertTrue(run.finding(), "master " + master + ": nothing in " + run.schedules() + " schedules");
            assertEquals(Outcome.DEADLOCK.name(), run.outcome(), run.knot());
            assertTrue(run.knot().contains(scenario.seedResource()), run.knot());
            assertSeedKnot(run.knot());
            long seed = Long.parseLong(run.replay().substring(run.replay().lastIndexOf(' ') + 1));
            assertEquals(run.outcome(), SimEngine.replay(scenario, legacy, seed).outcome().name(), "replay of " + seed);
        }
    }

    /** Asserts the seed-004 knot: rescuer -> group lock -> owner -> owner's split pending behind the rescuer's. */
    static void assertSeedKnot(String knot) {
        Matcher rescuer = RESCUER_WAIT.matcher(knot);
        assertTrue(rescuer.find(), "the rescuer does not wait on group 0's lock:\n" + knot);
        String owner = rescuer.group(1);
        String ownSplit = "btree split of " + owner;
        assertTrue(knot.contains("task " + owner + " (WORKER) waits on completion " + ownSplit + " (not completed)"),
                owner + " does not wait on its own split:\n" + knot);
        Matcher queue = ALLOC_QUEUE.matcher(knot);
        assertTrue(queue.find(), "no alloc queue state:\n" + knot);
        assertTrue(queue.group(1).contains(ownSplit), ownSplit + " is not pending on the alloc queue:\n" + knot);
        assertTrue(queue.group(2).matches("btree split of convert#\\d+ on rescuer/alloc#\\d+"),
                "the rescuer does not run the completion path's split:\n" + knot);
    }

    // Proves the fix: 300 schedules without a finding, splits both offloaded (run by the rescuer
    // after maydays, since no worker could be created) and inline.
    @Test
    void fixedFindsNothingAndTheRescuerStillRuns() {
        Scenario.Variant fixed = scenario.fixedVariants().get(0);
        Map<String, Long> sums = new HashMap<>();
        ScenarioRun run = SimEngine.run(scenario, fixed, 1, SCHEDULES,
                r -> r.counters().forEach((k, v) -> sums.merge(k, v, Long::sum)));
        assertFalse(run.finding(), run.outcome() + "\n" + run.knot());
        assertEquals(SCHEDULES, run.schedules());
        assertTrue(run.coverage().get("wq.rescuer-runs") > 0, run.coverage().toString());
        assertTrue(run.coverage().get("wq.maydays") > 0, run.coverage().toString());
        assertTrue(sums.getOrDefault("thin.split-offloaded", 0L) > 0, sums.toString());
        assertTrue(sums.getOrDefault("thin.split-inline", 0L) > 0, sums.toString());
    }

    // Proves the stall on real threads: the watchdog reports it and the engine returns by itself.
    @Test
    @Timeout(60)
    void legacyStallsOnThreads() {
        ScenarioRun run = ThreadsEngine.run(scenario, scenario.variants().get(0));
        assertEquals("STALL", run.outcome(), run.note() + "\n" + run.knot());
        assertTrue(run.coverage().get("watchdog.hung-tasks") > 0, run.coverage().toString());
    }

    // Proves the fix on real threads: both paths finish, every mapping reads back, kernel closed clean.
    @Test
    @Timeout(60)
    void fixedCompletesOnThreads() {
        ScenarioRun run = ThreadsEngine.run(scenario, scenario.fixedVariants().get(0));
        assertEquals("OK", run.outcome(), run.note() + "\n" + run.knot());
        assertTrue(run.coverage().get("wq.rescuer-runs") > 0, run.coverage().toString());
    }
}
