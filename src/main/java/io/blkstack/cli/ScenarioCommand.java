package io.blkstack.cli;

import io.blkstack.scenario.Scenario;
import io.blkstack.scenario.ScenarioRegistry;
import io.blkstack.scenario.ScenarioReport;
import io.blkstack.scenario.ScenarioRun;
import io.blkstack.scenario.ScenarioStats;
import io.blkstack.scenario.SimEngine;
import io.blkstack.scenario.ThreadsEngine;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import me.tongfei.progressbar.ProgressBar;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code blkstack scenario}: the seed reproductions (issue 7). {@code list} names them;
 * {@code run NAME|all} runs each under the old design and the fixed ones on the deterministic
 * checker ({@code sim}) and/or real threads ({@code threads}) and prints a table: scenario ×
 * variant × engine → outcome, schedules to first finding, time. Exit 0 when every row came out as
 * its policy promises (legacy found, fixed clean), 3 otherwise.
 */
@Command(name = "scenario", mixinStandardHelpOptions = true, versionProvider = BlkstackVersion.class,
        description = "The seed deadlock reproductions, each under the old and the fixed design.",
        subcommands = {ScenarioCommand.ListCommand.class, ScenarioCommand.RunCommand.class,
                ScenarioCommand.StatsCommand.class})
final class ScenarioCommand implements Callable<Integer> {

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() {
        spec.commandLine().usage(spec.commandLine().getOut());
        return ExitCodes.USAGE;
    }

    /** {@code scenario list}. */
    @Command(name = "list", mixinStandardHelpOptions = true, description = "List the scenarios: name, seed, description.")
    static final class ListCommand implements Callable<Integer> {
        @Spec
        CommandSpec spec;

        @Option(names = "--variants", description = "One line per variant instead: scenario, variant label, legacy or"
                + " fixed, and whether it expects a finding (for scripts that run rows one at a time).")
        boolean variants;

        @Override
        public Integer call() {
            PrintWriter out = spec.commandLine().getOut();
            List<Scenario> scenarios = new ArrayList<>(ScenarioRegistry.all());
            scenarios.addAll(ScenarioRegistry.hard());
            for (Scenario s : scenarios) {
                if (!variants) {
                    out.printf("%-21s %s  %s%n", s.name(), s.seed(), s.description());
                    continue;
                }
                for (Scenario.Variant v : s.variants()) {
                    out.printf("%-21s %-22s %-6s %s%n", s.name(), v.label(), v.legacy() ? "legacy" : "fixed",
                            v.expectFinding() ? "finding" : "clean");
                }
            }
            out.flush();
            return ExitCodes.SUCCESS;
        }
    }

    /** {@code scenario run}. */
    @Command(name = "run", mixinStandardHelpOptions = true, description = "Run scenarios and print the table.")
    static final class RunCommand implements Callable<Integer> {
        @Spec
        CommandSpec spec;

        @Parameters(index = "0", paramLabel = "NAME|all|hard",
                description = "A scenario name (NAME-hard for its hard shape), all (the seed shapes) or hard (every hard shape).")
        String name;

        @Option(names = "--policy", defaultValue = "both", description = "legacy, fixed or both (default: ${DEFAULT-VALUE}).")
        String policy;

        @Option(names = "--variant", paramLabel = "LABEL", description = "Only the variant with this label (legacy, fixed, fixed:in-flight, ...).")
        String variant;

        @Option(names = "--engine", defaultValue = "sim", description = "sim, threads or both (default: ${DEFAULT-VALUE}).")
        String engine;

        @Option(names = "--schedules", defaultValue = "1000", description = "Schedules per sim campaign (default: ${DEFAULT-VALUE}).")
        int schedules;

        @Option(names = "--seed", defaultValue = "1", description = "Master seed of the sim campaigns (default: ${DEFAULT-VALUE}).")
        long seed;

        @Option(names = "--jobs", paramLabel = "N", description = "Schedules of a sim campaign run at once; the rows are"
                + " those of one at a time (default: the number of processors).")
        Integer jobs;

        @Option(names = "--replay", paramLabel = "SEED", description = "Replay one sim schedule from its seed and print its knot.")
        Long replay;

        @Option(names = "--report", paramLabel = "DIR", description = "Write report.md and one PNG plot per scenario to DIR.")
        Path report;

        @Option(names = "--no-progress", description = "No progress bar (it is shown only on a terminal anyway).")
        boolean noProgress;

        @Override
        public Integer call() throws IOException {
            PrintWriter out = spec.commandLine().getOut();
            if (!List.of("legacy", "fixed", "both").contains(policy)) {
                throw new ParameterException(spec.commandLine(), "--policy must be legacy, fixed or both: " + policy);
            }
            if (!List.of("sim", "threads", "both").contains(engine)) {
                throw new ParameterException(spec.commandLine(), "--engine must be sim, threads or both: " + engine);
            }
            if (schedules < 1 || schedules > CheckCommand.SCHEDULES_MAX) {
                throw new ParameterException(spec.commandLine(), "--schedules must be in 1.." + CheckCommand.SCHEDULES_MAX);
            }
            if (jobs != null && (jobs < 1 || jobs > SimRunner.JOBS_MAX)) {
                throw new ParameterException(spec.commandLine(), "--jobs must be in 1.." + SimRunner.JOBS_MAX + ": " + jobs);
            }
            List<Scenario> scenarios = scenarios(spec, name);
            if (replay != null) {
                return replay(out, scenarios);
            }
            List<ScenarioRun> runs = new ArrayList<>();
            Map<String, List<ScenarioReport.Plot>> plots = new LinkedHashMap<>();
            long simRows = "threads".equals(engine) ? 0 : scenarios.stream().mapToLong(s -> selected(s).size()).sum();
            ProgressBar bar = ProgressBars.open("scenario", simRows * schedules, noProgress);
            try {
                runRows(out, scenarios, runs, plots, bar);
            } finally {
                ProgressBars.close(bar);
            }
            if (bar != null) {
                runs.forEach(r -> out.println(line(r)));
            }
            String table = table(runs);
            out.println();
            out.print(table);
            if (report != null) {
                out.println("report: " + ScenarioReport.write(report, runs, plots, table));
            }
            out.flush();
            return runs.stream().allMatch(ScenarioRun::asExpected) ? ExitCodes.SUCCESS : ExitCodes.DEADLOCK;
        }

        /** Schedules a campaign runs at once: --jobs, or one per processor. */
        private int jobs() {
            return jobs != null ? jobs : SimRunner.defaultJobs();
        }

        /**
         * Runs every selected row, printing each as it ends (or, under a progress bar, after it).
         * The bar counts schedules: a campaign that stops at its first finding jumps over the
         * schedules it did not need.
         */
        private void runRows(PrintWriter out, List<Scenario> scenarios, List<ScenarioRun> runs,
                Map<String, List<ScenarioReport.Plot>> plots, ProgressBar bar) {
            for (Scenario s : scenarios) {
                for (Scenario.Variant v : selected(s)) {
                    if (!"threads".equals(engine)) {
                        long before = bar == null ? 0 : bar.getCurrent();
                        ScenarioRun r = SimEngine.run(s, v, SimEngine.DEFAULT_STRATEGY, seed, schedules, jobs(),
                                x -> ProgressBars.step(bar, s.name() + " " + v.label() + (x.isFinding() ? " found " + x.outcome() : "")));
                        if (bar != null) {
                            bar.stepTo(before + schedules);
                        }
                        runs.add(r);
                        printRow(out, r, bar);
                        if (report != null) {
                            long plotSeed = r.finding() ? seedOf(r) : io.blkstack.sim.SimRandom.deriveSeed(seed, 0);
                            plots.computeIfAbsent(s.name(), k -> new ArrayList<>()).add(new ScenarioReport.Plot(v.label(),
                                    SimEngine.sample(s, v, plotSeed, ScenarioReport.SAMPLE_PERIOD_NANOS).series()));
                        }
                    }
                    if (!"sim".equals(engine)) {
                        ScenarioRun r = ThreadsEngine.run(s, v);
                        runs.add(r);
                        printRow(out, r, bar);
                    }
                }
            }
        }

        /** Prints a finished row now, unless a progress bar holds the terminal (then the caller prints it after). */
        private static void printRow(PrintWriter out, ScenarioRun r, ProgressBar bar) {
            if (bar == null) {
                out.println(line(r));
                out.flush();
            }
        }

        private List<Scenario.Variant> selected(Scenario s) {
            List<Scenario.Variant> out = new ArrayList<>();
            for (Scenario.Variant v : s.variants()) {
                boolean policyOk = "both".equals(policy) || ("legacy".equals(policy) == v.legacy());
                if (policyOk && (variant == null || variant.equals(v.label()))) {
                    out.add(v);
                }
            }
            return out;
        }

        private Integer replay(PrintWriter out, List<Scenario> scenarios) {
            if (scenarios.size() != 1) {
                throw new ParameterException(spec.commandLine(), "--replay needs one scenario name, not all");
            }
            Scenario s = scenarios.get(0);
            List<Scenario.Variant> vs = selected(s);
            if (vs.size() != 1) {
                throw new ParameterException(spec.commandLine(), "--replay needs exactly one variant (--variant LABEL); "
                        + vs.size() + " selected");
            }
            SimResult r = SimEngine.replay(s, vs.get(0), replay);
            out.println(r.summary());
            out.println(r.explanation());
            out.flush();
            return r.isFinding() ? ExitCodes.DEADLOCK : ExitCodes.SUCCESS;
        }

        private static long seedOf(ScenarioRun r) {
            return Long.parseLong(r.replay().substring(r.replay().lastIndexOf(' ') + 1));
        }

        private static String line(ScenarioRun r) {
            return r.scenario() + " " + r.variant() + " " + r.engine().key() + ": " + r.outcome() + " — " + r.note()
                    + (r.replay().isEmpty() ? "" : "\n  replay: " + r.replay());
        }
    }

    /** {@code scenario stats}: how reliably the checker finds each seed's deadlock over many master seeds. */
    @Command(name = "stats", mixinStandardHelpOptions = true,
            description = "Run one sim campaign per master seed 1..N for each scenario's legacy variant (and, with"
                    + " --fixed-seeds, its fixed variants) and print the fraction of master seeds whose campaign found"
                    + " the seed's deadlock within the schedule budget and the median schedules to the first finding.")
    static final class StatsCommand implements Callable<Integer> {
        @Spec
        CommandSpec spec;

        @Parameters(index = "0", paramLabel = "NAME|all|hard",
                description = "A scenario name (NAME-hard for its hard shape), all (the seed shapes) or hard (every hard shape).")
        String name;

        @Option(names = "--strategy", paramLabel = "random|pct:D", split = ",", defaultValue = "random",
                description = "Strategies, comma-separated; one row per strategy (default: ${DEFAULT-VALUE}).")
        List<String> strategies;

        @Option(names = "--no-progress", description = "No progress bar (it is shown only on a terminal anyway).")
        boolean noProgress;

        @Option(names = "--seeds", defaultValue = "100", description = "Master seeds 1..N per legacy variant (default: ${DEFAULT-VALUE}).")
        int seeds;

        @Option(names = "--schedules", defaultValue = "1000", description = "Schedules per campaign at most (default: ${DEFAULT-VALUE}).")
        int schedules;

        @Option(names = "--fixed-seeds", defaultValue = "0",
                description = "Master seeds per fixed variant, each running the full budget (default: ${DEFAULT-VALUE}: none).")
        int fixedSeeds;

        @Option(names = "--jobs", defaultValue = "1", description = "Campaigns run in parallel (default: ${DEFAULT-VALUE}).")
        int jobs;

        @Override
        public Integer call() {
            PrintWriter out = spec.commandLine().getOut();
            if (seeds < 1 || seeds > ScenarioStats.SEEDS_MAX) {
                throw new ParameterException(spec.commandLine(), "--seeds must be in 1.." + ScenarioStats.SEEDS_MAX + ": " + seeds);
            }
            if (fixedSeeds < 0 || fixedSeeds > ScenarioStats.SEEDS_MAX) {
                throw new ParameterException(spec.commandLine(), "--fixed-seeds must be in 0.." + ScenarioStats.SEEDS_MAX + ": "
                        + fixedSeeds);
            }
            if (schedules < 1 || schedules > CheckCommand.SCHEDULES_MAX) {
                throw new ParameterException(spec.commandLine(), "--schedules must be in 1.." + CheckCommand.SCHEDULES_MAX);
            }
            if (jobs < 1 || jobs > ScenarioStats.JOBS_MAX) {
                throw new ParameterException(spec.commandLine(), "--jobs must be in 1.." + ScenarioStats.JOBS_MAX + ": " + jobs);
            }
            List<Scenario> scenarios = scenarios(spec, name);
            for (String strategy : strategies) {
                try {
                    io.blkstack.sim.StrategySpec.parse(strategy);
                } catch (IllegalArgumentException e) {
                    throw new ParameterException(spec.commandLine(), "--strategy: " + e.getMessage());
                }
            }
            long campaigns = 0;
            for (Scenario s : scenarios) {
                for (Scenario.Variant v : s.variants()) {
                    campaigns += (long) (v.expectFinding() ? seeds : fixedSeeds) * strategies.size();
                }
            }
            List<ScenarioStats.Row> rows = new ArrayList<>();
            boolean asExpected = true;
            ProgressBar bar = ProgressBars.open("stats", campaigns, noProgress);
            try {
                for (Scenario s : scenarios) {
                    for (Scenario.Variant v : s.variants()) {
                        int n = v.expectFinding() ? seeds : fixedSeeds;
                        if (n == 0) {
                            continue;
                        }
                        for (String strategy : strategies) {
                            ScenarioStats.Row row = ScenarioStats.run(s, v, strategy, n, schedules, jobs,
                                    r -> ProgressBars.step(bar, s.name() + " " + v.label() + " " + strategy));
                            rows.add(row);
                            asExpected &= v.expectFinding() ? row.found() == row.masterSeeds()
                                    : row.found() + row.otherFindings() == 0;
                            if (bar == null) {
                                out.print(ScenarioStats.table(List.of(row)).lines().skip(1).findFirst().orElse("") + "\n");
                                out.flush();
                            }
                        }
                    }
                }
            } finally {
                ProgressBars.close(bar);
            }
            out.println();
            out.print(ScenarioStats.table(rows));
            out.flush();
            return asExpected ? ExitCodes.SUCCESS : ExitCodes.DEADLOCK;
        }
    }

    /** The scenarios {@code name} selects: one by name, {@code all} seed shapes or every {@code hard} shape. */
    static List<Scenario> scenarios(CommandSpec spec, String name) {
        try {
            return switch (name) {
                case "all" -> ScenarioRegistry.all();
                case "hard" -> ScenarioRegistry.hard();
                default -> List.of(ScenarioRegistry.byName(name));
            };
        } catch (IllegalArgumentException e) {
            throw new ParameterException(spec.commandLine(), e.getMessage());
        }
    }

    /** The closing table: one row per run. */
    static String table(List<ScenarioRun> runs) {
        StringBuilder sb = new StringBuilder();
        String fmt = "%-20s %-4s %-22s %-7s %-9s %9s %9s %8s  %s%n";
        sb.append(String.format(fmt, "scenario", "seed", "variant", "engine", "outcome", "schedules", "1st find", "time", "as expected"));
        for (ScenarioRun r : runs) {
            sb.append(String.format(fmt, r.scenario(), r.seed(), r.variant(), r.engine().key(), r.outcome(), r.schedules(),
                    r.firstFindingAt() == 0 ? "-" : String.valueOf(r.firstFindingAt()),
                    String.format("%.1fs", r.elapsedNanos() / 1e9), r.asExpected() ? "yes" : "NO"));
        }
        return sb.toString();
    }
}
