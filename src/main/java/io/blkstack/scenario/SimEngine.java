package io.blkstack.scenario;

import io.blkstack.sim.Coverage;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import java.util.Map;
import java.util.function.Consumer;

/**
 * The {@code sim} engine: a campaign of seeded schedules on the deterministic checker
 * ({@link SimRunner}). Under legacy it stops at the first deadlock or livelock and reports its
 * knot, replay command and the number of schedules it took; under a fixed variant it runs every
 * schedule and reports the coverage counters that show the reserves and rescuers were used.
 */
public final class SimEngine {

    private SimEngine() {
    }

    /** The strategy of {@code scenario run} and of tests: the random walk. */
    public static final String DEFAULT_STRATEGY = "random";

    /** The checker configuration of a scenario's variant, under the random walk. */
    public static SimConfig config(Scenario scenario, Scenario.Variant variant) {
        return config(scenario, variant, DEFAULT_STRATEGY);
    }

    /** The checker configuration of a scenario's variant under {@code strategy} ({@code random} or {@code pct:D}). */
    public static SimConfig config(Scenario scenario, Scenario.Variant variant, String strategy) {
        SimConfig.Builder b = SimConfig.builder().memory(scenario.memoryBytes()).policies(variant.policies()).strategy(strategy);
        if (!scenario.faults().isEmpty()) {
            b.faults(scenario.faults());
        }
        return b.build();
    }

    /** Runs a campaign of {@code schedules} from {@code masterSeed}; legacy stops at the first finding. */
    public static ScenarioRun run(Scenario scenario, Scenario.Variant variant, long masterSeed, int schedules,
            Consumer<SimResult> afterEach) {
        return run(scenario, variant, DEFAULT_STRATEGY, masterSeed, schedules, afterEach);
    }

    /** As {@link #run(Scenario, Scenario.Variant, long, int, Consumer)} under {@code strategy}. */
    public static ScenarioRun run(Scenario scenario, Scenario.Variant variant, String strategy, long masterSeed,
            int schedules, Consumer<SimResult> afterEach) {
        return run(scenario, variant, strategy, masterSeed, schedules, 1, afterEach);
    }

    /**
     * As {@link #run(Scenario, Scenario.Variant, String, long, int, Consumer)}, running {@code jobs}
     * schedules at once (the same rows as one at a time; see {@link SimRunner#campaign}).
     */
    public static ScenarioRun run(Scenario scenario, Scenario.Variant variant, String strategy, long masterSeed,
            int schedules, int jobs, Consumer<SimResult> afterEach) {
        SimRunner runner = new SimRunner(config(scenario, variant, strategy), jobs);
        SimRunner.CampaignResult c = runner.campaign(masterSeed, schedules, true, false,
                scenario.workload(Scenario.Engine.SIM, Probe.none()), afterEach);
        Map<String, Long> coverage = Coverage.of(c.counters());
        SimResult first = c.firstFinding();
        if (first == null) {
            long reserveUsed = coverage.get("mempool.reserve-used");
            String note = reserveUsed == 0 ? "VACUOUS: no reserve was ever used" : "no finding; reserves used " + reserveUsed
                    + " times";
            return new ScenarioRun(scenario.name(), scenario.seed(), variant.label(), variant.legacy(), variant.expectFinding(), Scenario.Engine.SIM,
                    "OK", false, c.schedules(), 0, c.elapsedNanos(), "", "", coverage, note);
        }
        String replay = "blkstack scenario run " + scenario.name() + " --variant " + variant.label() + " --engine sim --replay "
                + first.seed();
        String note = first.summary();
        return new ScenarioRun(scenario.name(), scenario.seed(), variant.label(), variant.legacy(), variant.expectFinding(), Scenario.Engine.SIM,
                first.outcome().name(), true, c.schedules(), c.schedules(), c.elapsedNanos(), first.explanation(), replay,
                coverage, note);
    }

    /** Replays one schedule from its seed. */
    public static SimResult replay(Scenario scenario, Scenario.Variant variant, long seed) {
        return new SimRunner(config(scenario, variant)).runOnce(seed, scenario.workload(Scenario.Engine.SIM, Probe.none()));
    }

    /** Runs one schedule with a probe and returns its samples (virtual time) and result. */
    public static Sampled sample(Scenario scenario, Scenario.Variant variant, long seed, long periodNanos) {
        Probe probe = new Probe(periodNanos);
        SimResult r = new SimRunner(config(scenario, variant)).runOnce(seed, scenario.workload(Scenario.Engine.SIM, probe));
        return new Sampled(r, probe.series());
    }

    /** A sampled run. */
    public record Sampled(SimResult result, Probe.Series series) {
    }
}
