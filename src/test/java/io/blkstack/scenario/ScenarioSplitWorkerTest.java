package io.blkstack.scenario;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.sim.Outcome;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Seed 004, {@code split-worker}: with no workers creatable, the legacy always-offload policy lets
 * the {@code alloc} queue's rescuer run a split that waits for allocation group 0, held by the write
 * path, which waits for the completion path that waits for that split; the checker finds the knot.
 * Under {@code reserved-only} nothing is found while the rescuer still runs the write path's splits.
 * On real threads the legacy run stalls and stops itself, the fixed one completes with verified maps.
 */
class ScenarioSplitWorkerTest {

    static final long[] MASTER_SEEDS = {1, 2, 3};
    static final int SCHEDULES = 300;
    final Scenario scenario = ScenarioRegistry.byName("split-worker");

    // Proves the legacy ABBA is reachable from three master seeds within 300 schedules; the knot
    // names the allocation-group lock and the alloc queue's rescuer that waits for it.
    @Test
    void legacyFindsTheRescuerWaitingOnTheGroupLock() {
        Scenario.Variant legacy = scenario.variants().get(0);
        for (long master : MASTER_SEEDS) {
            ScenarioRun run = SimEngine.run(scenario, legacy, master, SCHEDULES, r -> { });
            assertTrue(run.finding(), "master " + master + ": nothing in " + run.schedules() + " schedules");
            assertEquals(Outcome.DEADLOCK.name(), run.outcome(), run.knot());
            assertTrue(run.knot().contains(scenario.seedResource()), run.knot());
            assertTrue(run.knot().contains("rescuer/alloc"), run.knot());
            long seed = Long.parseLong(run.replay().substring(run.replay().lastIndexOf(' ') + 1));
            assertEquals(run.outcome(), SimEngine.replay(scenario, legacy, seed).outcome().name(), "replay of " + seed);
        }
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
