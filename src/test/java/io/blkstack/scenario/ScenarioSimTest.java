package io.blkstack.scenario;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.sim.Outcome;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every registered scenario on the deterministic checker with fixed master seeds: the old design
 * deadlocks (or livelocks) and the knot names the resource the seed document names; every fixed
 * variant runs its schedules with no finding and with the reserves actually used.
 */
class ScenarioSimTest {

    static final long[] MASTER_SEEDS = {1, 2, 3};
    static final int LEGACY_SCHEDULES = 300;
    static final int FIXED_SCHEDULES = 300;

    static java.util.stream.Stream<String> scenarios() {
        return ScenarioRegistry.all().stream().map(Scenario::name);
    }

    // Proves the legacy deadlock is reachable: from each of three master seeds, a campaign of at
    // most 300 schedules ends in DEADLOCK or LIVELOCK, and the wait-for knot names the seed's
    // resource (the scenario's seedResource()). The finding replays from its seed to the same trace.
    @ParameterizedTest
    @MethodSource("scenarios")
    void legacyFindsTheSeedDeadlock(String name) {
        Scenario s = ScenarioRegistry.byName(name);
        Scenario.Variant legacy = s.variants().get(0);
        for (long master : MASTER_SEEDS) {
            ScenarioRun run = SimEngine.run(s, legacy, master, LEGACY_SCHEDULES, r -> { });
            assertTrue(run.finding(), name + " master " + master + ": nothing in " + run.schedules() + " schedules");
            assertTrue(run.outcome().equals(Outcome.DEADLOCK.name()) || run.outcome().equals(Outcome.LIVELOCK.name()),
                    run.outcome() + "\n" + run.knot());
            assertTrue(run.knot().contains(s.seedResource()), "knot does not name " + s.seedResource() + ":\n" + run.knot());
            long seed = Long.parseLong(run.replay().substring(run.replay().lastIndexOf(' ') + 1));
            assertEquals(run.outcome(), SimEngine.replay(s, legacy, seed).outcome().name(), "replay of " + seed);
        }
    }

    // Proves each fix holds: every fixed variant finishes 300 schedules from master seed 1 without
    // a finding, and the campaign is not vacuous (some pool reserve was used).
    @ParameterizedTest
    @MethodSource("scenarios")
    void fixedVariantsFindNothing(String name) {
        Scenario s = ScenarioRegistry.byName(name);
        for (Scenario.Variant v : s.fixedVariants()) {
            if (v.expectFinding()) {
                continue;
            }
            ScenarioRun run = SimEngine.run(s, v, 1, FIXED_SCHEDULES, r -> { });
            assertFalse(run.finding(), name + " " + v.label() + ": " + run.outcome() + "\n" + run.knot());
            assertEquals(FIXED_SCHEDULES, run.schedules());
            assertTrue(run.coverage().get("mempool.reserve-used") > 0, name + " " + v.label() + " " + run.coverage());
        }
    }
}
