package io.blkstack.scenario;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.sim.Outcome;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Seed 003, {@code bufio-shrinker}: under the legacy shrinker the checker finds reclaim (the
 * {@code reclaim} mutex's owner) waiting on the buffer cache's write-back, whose next write waits
 * for reclaim; under the fixed shrinker nothing is found and the shrinker really ran and kicked its
 * workqueue. On real threads the legacy run stalls and stops itself, the fixed one completes.
 */
class ScenarioBufioShrinkerTest {

    static final long[] MASTER_SEEDS = {1, 2, 3};
    static final int SCHEDULES = 300;
    final Scenario scenario = ScenarioRegistry.byName("bufio-shrinker");

    // Proves the legacy deadlock is reachable from three master seeds within 300 schedules and the
    // knot names the reclaim mutex held by a task inside the buffer cache's shrinker.
    @Test
    void legacyFindsReclaimWaitingOnTheShrinker() {
        Scenario.Variant legacy = scenario.variants().get(0);
        for (long master : MASTER_SEEDS) {
            ScenarioRun run = SimEngine.run(scenario, legacy, master, SCHEDULES, r -> { });
            assertTrue(run.finding(), "master " + master + ": nothing in " + run.schedules() + " schedules");
            assertEquals(Outcome.DEADLOCK.name(), run.outcome(), run.knot());
            assertTrue(run.knot().contains(scenario.seedResource()), run.knot());
            assertTrue(run.knot().contains("BufferCache.scanLegacy"), run.knot());
            long seed = Long.parseLong(run.replay().substring(run.replay().lastIndexOf(' ') + 1));
            assertEquals(run.outcome(), SimEngine.replay(scenario, legacy, seed).outcome().name(), "replay of " + seed);
        }
    }

    // Proves the fix: 300 schedules without a finding, with the shrinker's workqueue kicked and
    // the bio set's reserve used (the campaign really ran under memory pressure).
    @Test
    void fixedFindsNothingAndKicksTheWorkqueue() {
        Scenario.Variant fixed = scenario.fixedVariants().get(0);
        java.util.Map<String, Long> sums = new java.util.HashMap<>();
        ScenarioRun run = SimEngine.run(scenario, fixed, 1, SCHEDULES,
                r -> r.counters().forEach((k, v) -> sums.merge(k, v, Long::sum)));
        assertFalse(run.finding(), run.outcome() + "\n" + run.knot());
        assertEquals(SCHEDULES, run.schedules());
        assertTrue(sums.getOrDefault("bufio.shrinker-work-kicks", 0L) > 0, sums.toString());
        assertTrue(run.coverage().get("mempool.reserve-used") > 0, run.coverage().toString());
    }

    // Proves the stall on real threads: the watchdog reports it and the engine returns by itself.
    @Test
    @Timeout(60)
    void legacyStallsOnThreads() {
        ScenarioRun run = ThreadsEngine.run(scenario, scenario.variants().get(0));
        assertEquals("STALL", run.outcome(), run.note() + "\n" + run.knot());
        assertTrue(run.coverage().get("watchdog.hung-tasks") > 0, run.coverage().toString());
    }

    // Proves the fix on real threads: the workload completes, every mapping read back, kernel closed clean.
    @Test
    @Timeout(60)
    void fixedCompletesOnThreads() {
        ScenarioRun run = ThreadsEngine.run(scenario, scenario.fixedVariants().get(0));
        assertEquals("OK", run.outcome(), run.note() + "\n" + run.knot());
    }
}
