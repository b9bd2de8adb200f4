package io.blkstack.scenario;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.TaskKind;
import io.blkstack.sim.Outcome;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The scenarios' hard shapes (issue 13): the same stacks with more headroom, so that most schedules
 * pass and the checker has to search for the deadlock. Each test says what it proves; all runs are
 * seeded, so the numbers asserted are exact replays, not samples.
 */
class ScenarioHardShapeTest {

    // Proves the registry: every seed scenario has a hard shape named NAME-hard with the same seed
    // document, reachable by name, and "all" still means the five seed shapes only.
    @Test
    void everySeedScenarioHasAHardShape() {
        List<Scenario> seeds = ScenarioRegistry.all();
        List<Scenario> hard = ScenarioRegistry.hard();
        assertEquals(5, seeds.size());
        assertEquals(seeds.size(), hard.size());
        for (int i = 0; i < seeds.size(); i++) {
            assertEquals(seeds.get(i).name() + "-hard", hard.get(i).name());
            assertEquals(seeds.get(i).seed(), hard.get(i).seed());
            assertEquals(seeds.get(i).seedResource(), hard.get(i).seedResource());
            assertEquals(hard.get(i), ScenarioRegistry.byName(hard.get(i).name()));
            assertFalse(seeds.get(i).name().endsWith("-hard"), seeds.get(i).name());
        }
    }

    // Proves the hard shapes make the checker search: from master seeds 1-3, the random walk finds
    // the seed's deadlock (the knot names the seed's resource) within 200 schedules every time, but
    // schedules pass before it, where the seed shape deadlocks on its first schedule.
    @ParameterizedTest
    @ValueSource(strings = {"bioset-rescuer-hard", "dm-depth-first-hard", "map-sg-bounce-hard", "bufio-shrinker-hard",
            "split-worker-hard"})
    void hardShapeNeedsSchedulesBeforeTheDeadlock(String name) {
        Scenario s = ScenarioRegistry.byName(name);
        Scenario.Variant legacy = s.variants().get(0);
        int cleanBefore = 0;
        for (long master = 1; master <= 3; master++) {
            ScenarioRun run = SimEngine.run(s, legacy, master, 200, r -> { });
            assertTrue(ScenarioStats.isSeedFinding(s, run), name + " master " + master + ": " + run.outcome() + "\n"
                    + run.knot());
            cleanBefore += run.firstFindingAt() - 1;
        }
        assertTrue(cleanBefore > 0, name + ": every master seed found it on its first schedule");
    }

    // Proves the fix holds in the hard shape too: bioset-rescuer-hard's fixed row runs 100
    // schedules without a finding, with the reserve used.
    @Test
    void hardShapeFixedRowFindsNothing() {
        Scenario s = ScenarioRegistry.byName("bioset-rescuer-hard");
        Scenario.Variant fixed = s.fixedVariants().get(0);
        ScenarioRun run = SimEngine.run(s, fixed, 1, 100, r -> { });
        assertFalse(run.finding(), run.outcome() + "\n" + run.knot());
        assertEquals(100, run.schedules());
        assertTrue(run.coverage().get("mempool.reserve-used") > 0, run.coverage().toString());
    }

    // Proves a stats row runs under the strategy it is given and records it: PCT (depth 3) finds
    // bioset-rescuer-hard's deadlock from master seeds 1-3 within 100 schedules each.
    @Test
    void statsRowRunsUnderPct() {
        Scenario s = ScenarioRegistry.byName("bioset-rescuer-hard");
        AtomicInteger seen = new AtomicInteger();
        ScenarioStats.Row row = ScenarioStats.run(s, s.variants().get(0), "pct:3", 3, 100, 1, r -> seen.incrementAndGet());
        assertEquals("pct:3", row.strategy());
        assertEquals(3, seen.get());
        assertEquals(3, row.found(), ScenarioStats.table(List.of(row)));
        assertTrue(ScenarioStats.table(List.of(row)).contains("pct:3"), ScenarioStats.table(List.of(row)));
    }

    // Proves the hard shapes' memory pressure: exhausting the arena leaves at most one page free (the
    // allocator's floor), and asking for 3 spare pages leaves exactly 3 more.
    @Test
    void memoryPressureLeavesTheSparePages() {
        int[] free = new int[2];
        SimResult r = new SimRunner(SimConfig.builder().memory(256 * 1024).build()).runOnce(1, k ->
                k.spawn("pressure", TaskKind.USER, () -> {
                    MemoryPressure none = MemoryPressure.exhaust(k, 0);
                    free[0] = k.pages().freePages();
                    none.release();
                    MemoryPressure some = MemoryPressure.exhaust(k, 3, 0);
                    free[1] = k.pages().freePages();
                    some.release();
                }));
        assertEquals(Outcome.OK, r.outcome(), r.explanation());
        assertTrue(free[0] <= 1, "exhausted arena still has " + free[0] + " free pages");
        assertEquals(free[0] + 3, free[1]);
    }
}
