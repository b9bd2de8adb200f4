package io.blkstack.cli;

import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.sim.BioSetSplitStack;
import io.blkstack.sim.Outcome;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.function.Consumer;

import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code blkstack check}: explores a built-in stack and its workload on the deterministic
 * simulator (DESIGN.md section 7) for a number of seeded schedules, and reports deadlocks,
 * livelocks and misuse with a replay command for each and the wait-for knot of the first.
 *
 * <p>Stacks are built in for now ({@code --stack}); YAML configurations come later. A campaign
 * that never used a pool reserve and never fired a fault is flagged VACUOUS: it did not reach the
 * conditions the checker exists to explore. Exit 3 when something was found, 0 otherwise.
 */
@Command(
        name = "check",
        mixinStandardHelpOptions = true,
        versionProvider = BlkstackVersion.class,
        description = "Explore a stack under the deterministic simulator and report deadlocks,"
                + " livelocks and misuse, each with a replay command.")
final class CheckCommand implements Callable<Integer> {

    /** Bounds on the options. */
    static final int SCHEDULES_MAX = 10_000_000;
    /** Replay commands printed per kind of finding. */
    static final int REPLAYS_SHOWN_MAX = 5;
    /** The counters the coverage line shows, in order. */
    static final List<String> COVERAGE_COUNTERS = List.of("mempool.reserve-used", "mempool.waits",
            "bioset.rescuer-punts", "wq.maydays", "wq.rescuer-runs", "wq.worker-create-failures", "pages.alloc-failures");

    /** The built-in stacks: name to workload. */
    static final Map<String, Consumer<Kernel>> STACKS = new LinkedHashMap<>();

    static {
        STACKS.put("bioset-split", BioSetSplitStack.standard(true));
        STACKS.put("bioset-split-no-rescuer", BioSetSplitStack.standard(false));
    }

    @Spec
    private CommandSpec spec;

    @Option(names = "--stack", paramLabel = "NAME", defaultValue = "bioset-split",
            description = "Built-in stack and workload: bioset-split (a bcache-style splitting device whose bio set"
                    + " has a rescuer) or bioset-split-no-rescuer (default: ${DEFAULT-VALUE}).")
    String stack;

    @Option(names = "--schedules", paramLabel = "N", defaultValue = "200",
            description = "Schedules to explore (default: ${DEFAULT-VALUE}).")
    int schedules;

    @Option(names = "--seed", paramLabel = "S", defaultValue = "1",
            description = "Master seed; each schedule's seed derives from it (default: ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--strategy", paramLabel = "random|pct:D", defaultValue = "random",
            description = "Scheduling strategy (default: ${DEFAULT-VALUE}).")
    String strategy;

    @Option(names = "--pct-bound", paramLabel = "N", defaultValue = "0",
            description = "Fixed PCT decision bound, as printed in replay commands (default: learned).")
    long pctBound;

    @Option(names = "--memory", paramLabel = "SIZE", defaultValue = "256KiB", converter = SizeConverter.class,
            description = "Simulated page arena (default: ${DEFAULT-VALUE}).")
    long memoryBytes;

    @Option(names = "--faults", paramLabel = "SPEC", defaultValue = "latency:" + BioSetSplitStack.LOWER + "=0.5/200us",
            description = "Fault rules: SITE=P, SITE@N, latency:DEV=P/MAX, swarm (default: ${DEFAULT-VALUE}).")
    String faults;

    @Option(names = "--policy", paramLabel = "NAME=VALUE",
            description = "Switch a mechanism to its old design, e.g. bioset-rescuer=legacy (repeatable).")
    List<String> policies = new ArrayList<>();

    @Option(names = "--replay", paramLabel = "SEED",
            description = "Run exactly this schedule seed (from a replay command) and print its knot.")
    Long replay;

    @Override
    public Integer call() {
        Consumer<Kernel> workload = STACKS.get(stack);
        if (workload == null) {
            throw usage("--stack: '" + stack + "' is not a built-in stack; known: " + String.join(", ", STACKS.keySet()));
        }
        if (schedules < 1 || schedules > SCHEDULES_MAX) {
            throw usage("--schedules: '" + schedules + "' is not between 1 and " + SCHEDULES_MAX);
        }
        SimConfig config = buildConfig();
        PrintWriter out = spec.commandLine().getOut();
        SimRunner runner = new SimRunner(config);
        out.println("blkstack check: stack " + stack + ", strategy " + config.strategy() + ", memory " + memoryBytes
                + " bytes, faults '" + faults + "', policies " + (policies.isEmpty() ? "default" : String.join(" ", policies)));
        if (replay != null) {
            return replayOne(runner, workload, out);
        }
        SimRunner.CampaignResult c = runner.campaign(seed, schedules, false, false, workload);
        printSummary(runner, c, out);
        out.flush();
        return c.findings().isEmpty() ? ExitCodes.SUCCESS : ExitCodes.DEADLOCK;
    }

    /** The simulator configuration from the options; bad values are usage errors. */
    private SimConfig buildConfig() {
        try {
            return SimConfig.builder().memory(memoryBytes).strategy(strategy).faults(faults).pctStepBound(pctBound)
                    .policies(Policies.parse(policies)).build();
        } catch (IllegalArgumentException e) {
            throw usage(e.getMessage());
        }
    }

    /** Runs one schedule seed and prints its outcome and knot. */
    private int replayOne(SimRunner runner, Consumer<Kernel> workload, PrintWriter out) {
        SimResult r = runner.runOnce(replay, workload);
        out.println("replay: " + r.summary());
        if (r.isFinding()) {
            out.println(r.explanation());
        }
        out.flush();
        return r.isFinding() ? ExitCodes.DEADLOCK : ExitCodes.SUCCESS;
    }

    /** Prints speed, findings by kind with replay commands, coverage, the vacuity flag and the first knot. */
    private void printSummary(SimRunner runner, SimRunner.CampaignResult c, PrintWriter out) {
        out.printf("schedules %d, %.1f schedules/s, %.0f decisions/s, %d steps, %d decisions%n", c.schedules(),
                c.schedulesPerSecond(), c.decisionsPerSecond(), c.steps(), c.decisions());
        out.println("outcomes: " + c.outcomes());
        Map<Outcome, List<SimResult>> byKind = new LinkedHashMap<>();
        for (SimResult r : c.findings()) {
            byKind.computeIfAbsent(r.outcome(), k -> new ArrayList<>()).add(r);
        }
        out.println("findings: " + c.findings().size());
        for (Map.Entry<Outcome, List<SimResult>> e : byKind.entrySet()) {
            out.println("  " + e.getKey() + ": " + e.getValue().size());
            for (SimResult r : e.getValue().subList(0, Math.min(REPLAYS_SHOWN_MAX, e.getValue().size()))) {
                out.println("    replay: " + replayCommand(r));
            }
        }
        StringBuilder coverage = new StringBuilder("coverage:");
        for (String name : COVERAGE_COUNTERS) {
            coverage.append(' ').append(name).append('=').append(c.counters().getOrDefault(name, 0L));
        }
        out.println(coverage);
        out.println("fault fires: " + (c.faultFires().isEmpty() ? "none" : c.faultFires()));
        long reserveUsed = c.counters().getOrDefault("mempool.reserve-used", 0L);
        long fires = c.faultFires().values().stream().mapToLong(Long::longValue).sum();
        if (reserveUsed == 0 && fires == 0) {
            out.println("VACUOUS: no reserve was used and no fault fired; the campaign explored nothing under pressure");
        }
        SimResult first = c.firstFinding();
        if (first != null) {
            out.println("first finding, " + first.summary() + ":");
            out.println(first.explanation());
        }
    }

    /** The one-line command that replays {@code r} with this campaign's options. */
    private String replayCommand(SimResult r) {
        StringBuilder sb = new StringBuilder("blkstack check --stack ").append(stack).append(" --replay ").append(r.seed())
                .append(" --strategy ").append(strategy).append(" --memory ").append(memoryBytes)
                .append(" --faults '").append(faults).append('\'');
        if (r.pctStepBound() > 0) {
            sb.append(" --pct-bound ").append(r.pctStepBound());
        }
        for (String p : policies) {
            sb.append(" --policy ").append(p);
        }
        return sb.toString();
    }

    private ParameterException usage(String message) {
        return new ParameterException(spec.commandLine(), message);
    }
}
