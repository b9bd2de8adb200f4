package io.blkstack.scenario;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.sim.Outcome;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Seed 001 ({@code dm-depth-first}) on the checker and on real threads: the all-targets dm loop
 * deadlocks on the mapped device's clone reserve with the snapshot's copy-out in the knot, and
 * the front split (with or without the bio-set rescuer) finds nothing. Also the scenario's layout
 * and the statistics row arithmetic.
 */
class ScenarioDmDepthFirstTest {

    static final long[] MASTER_SEEDS = {1, 2, 3};
    static final int LEGACY_SCHEDULES = 300;
    static final int FIXED_SCHEDULES = 300;

    private final Scenario scenario = ScenarioRegistry.byName("dm-depth-first");

    // Proves the seed's deadlock is reachable and is the one the seed describes: from master seeds
    // 1, 2 and 3 a legacy campaign of at most 300 schedules ends in DEADLOCK or LIVELOCK; the knot
    // shows a task waiting on m's clone pool, the copy service's task waiting on the same pool for
    // the COW write, and the snapshot's pending exception holding an origin write; the finding
    // replays from its seed to the same outcome.
    @Test
    void legacyDeadlocksOnTheClonePoolAndThePendingException() {
        Scenario.Variant legacy = scenario.variants().get(0);
        assertEquals("legacy", legacy.label());
        for (long master : MASTER_SEEDS) {
            ScenarioRun run = SimEngine.run(scenario, legacy, master, LEGACY_SCHEDULES, r -> { });
            assertTrue(run.finding(), "master " + master + ": nothing in " + run.schedules() + " schedules");
            assertTrue(run.outcome().equals(Outcome.DEADLOCK.name()) || run.outcome().equals(Outcome.LIVELOCK.name()),
                    run.outcome() + "\n" + run.knot());
            String knot = run.knot();
            assertTrue(knot.contains(scenario.seedResource()), "knot does not name m's clone pool:\n" + knot);
            assertTrue(knot.contains("(copy-out to the COW device in progress): holds 1 waiting bio(s) [bio[WRITE m "),
                    "knot does not show an origin write held by a pending exception:\n" + knot);
            assertTrue(knot.lines().anyMatch(l -> l.contains("kcopyd") && l.contains("waits on mempool dm-m-bio")),
                    "knot does not show the copy-out waiting for a clone of m:\n" + knot);
            assertTrue(knot.contains("pending on task user"), "no clone queued unsubmitted on a user's list:\n" + knot);
            long seed = Long.parseLong(run.replay().substring(run.replay().lastIndexOf(' ') + 1));
            assertEquals(run.outcome(), SimEngine.replay(scenario, legacy, seed).outcome().name(), "replay of " + seed);
        }
    }

    // Proves the fixes hold and are not vacuous: each fixed variant (front split; front split
    // without rescuer; the old loop with the rescuer) runs 300 schedules from master seed 1 with
    // no finding, and the clone reserve was used.
    @Test
    void fixedVariantsFindNothingWithTheReserveInUse() {
        List<Scenario.Variant> fixed = scenario.fixedVariants();
        assertEquals(List.of("fixed", "fixed:front-only", "legacy+rescuer"), fixed.stream().map(Scenario.Variant::label).toList());
        for (Scenario.Variant v : fixed) {
            ScenarioRun run = SimEngine.run(scenario, v, 1, FIXED_SCHEDULES, r -> { });
            assertFalse(run.finding(), v.label() + ": " + run.outcome() + "\n" + run.knot());
            assertEquals(FIXED_SCHEDULES, run.schedules());
            assertTrue(run.coverage().get("mempool.reserve-used") > 0, v.label() + " " + run.coverage());
        }
    }

    // Proves the stall on real threads: under legacy the watchdog reports a task blocked on m's
    // clone pool, no I/O completes for the confirm window, and the engine returns by itself.
    @Test
    @Timeout(60)
    void legacyStallsOnRealThreads() {
        ScenarioRun run = ThreadsEngine.run(scenario, scenario.variants().get(0));
        assertEquals("STALL", run.outcome(), run.note() + "\n" + run.knot());
        assertTrue(run.knot().contains("mempool dm-m-bio"), run.knot());
        assertTrue(run.coverage().get("watchdog.hung-tasks") > 0, run.coverage().toString());
    }

    // Proves the fixes on real threads: every fixed variant completes, every read and the
    // snapshot's old contents verified, and the kernel closes with every page back.
    @Test
    @Timeout(60)
    void fixedVariantsCompleteOnRealThreads() {
        for (Scenario.Variant v : scenario.fixedVariants()) {
            ScenarioRun run = ThreadsEngine.run(scenario, v);
            assertEquals("OK", run.outcome(), v.label() + ": " + run.note() + "\n" + run.knot());
        }
    }

    // Proves the layout the class comment promises: write w starts 2 sectors before the end of its
    // window's origin target and is followed by linear targets of 4 and 2 sectors.
    @Test
    void writesSpanTheOriginAndTwoLinearTargets() {
        int windows = 3;
        String[] lines = DmDepthFirstScenario.mappedTable(windows).split("\n");
        assertEquals(1 + 3 * windows, lines.length);
        assertEquals("0 24 linear x0 0", lines[0]);
        for (int w = 0; w < windows; w++) {
            String[] origin = lines[1 + 3 * w].split(" ");
            String[] first = lines[2 + 3 * w].split(" ");
            String[] second = lines[3 + 3 * w].split(" ");
            assertEquals("snapshot-origin", origin[2]);
            assertEquals(String.valueOf(8 * (w + 1)), origin[1]);
            long originEnd = Long.parseLong(origin[0]) + Long.parseLong(origin[1]);
            assertEquals(originEnd - 2, DmDepthFirstScenario.writeSector(windows, w));
            assertEquals(List.of(String.valueOf(originEnd), "4", "linear"), List.of(first[0], first[1], first[2]));
            assertEquals(List.of(String.valueOf(originEnd + 4), "2", "linear"), List.of(second[0], second[1], second[2]));
        }
    }

    // Proves the statistics arithmetic: seed findings, other findings, clean schedules and the
    // median over all master seeds (a seed without a finding counts as beyond the budget).
    @Test
    void statsRowCountsFindingsAndTheMedian() {
        Scenario.Variant legacy = scenario.variants().get(0);
        List<ScenarioRun> runs = List.of(run(true, "DEADLOCK", 3, scenario.seedResource()),
                run(true, "LIVELOCK", 7, "x " + scenario.seedResource()), run(true, "CRASH", 1, "boom"),
                run(false, "OK", 0, ""));
        ScenarioStats.Row row = ScenarioStats.summarize(scenario, legacy, runs, 10, Duration.ofSeconds(1).toNanos());
        assertEquals(2, row.found());
        assertEquals(1, row.otherFindings());
        assertEquals(2 + 6 + 0 + 10, row.cleanSchedules());
        assertEquals(5.0, row.medianToFirst());
        assertEquals(7, row.maxToFirst());
        ScenarioStats.Row worse = ScenarioStats.summarize(scenario, legacy,
                List.of(run(true, "DEADLOCK", 4, scenario.seedResource()), run(false, "OK", 0, "")), 10, 0);
        assertEquals(-1, worse.medianToFirst());
        assertTrue(ScenarioStats.table(List.of(row, worse)).contains(">10"), ScenarioStats.table(List.of(row, worse)));
    }

    private ScenarioRun run(boolean finding, String outcome, int at, String knot) {
        return new ScenarioRun(scenario.name(), scenario.seed(), "legacy", true, true, Scenario.Engine.SIM, outcome, finding,
                finding ? at : 10, finding ? at : 0, 0, knot, "", Map.of(), "");
    }
}
