package io.blkstack.cli;

import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.scenario.Probe;
import io.blkstack.scenario.Scenario;
import io.blkstack.scenario.ScenarioRun;
import io.blkstack.scenario.ThreadsEngine;
import java.io.PrintWriter;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.Consumer;
import me.tongfei.progressbar.ProgressBar;

/**
 * {@code check --engine threads}: the same stack and workload as the checker's, on real threads
 * and real time, run after run, with the hung-task watchdog of {@code scenario run --engine
 * threads} ({@link ThreadsEngine}): a run ends OK (its data checks passed and the kernel closed
 * with everything given back), STALL (a watchdog report and then no completed I/O), TIMEOUT or a
 * failure. Nothing is replayable here, so it stops at the first run that is not OK and prints the
 * watchdog's explanation. Real threads take no simulated faults.
 */
final class CheckThreadsRun {

    private CheckThreadsRun() {
    }

    /** Runs {@code runs} times; returns the exit code (3 if a run was not OK). */
    static int run(String label, Consumer<Kernel> workload, Policies policies, long memoryBytes, int runs,
            boolean noProgress, PrintWriter out) {
        Scenario check = asScenario(label, workload, policies, memoryBytes);
        Scenario.Variant variant = new Scenario.Variant("check", policies, false, false, "check --engine threads");
        Map<String, Integer> outcomes = new TreeMap<>();
        ScenarioRun notOk = null;
        int made = 0;
        long start = System.nanoTime();
        ProgressBar bar = ProgressBars.open("check threads", runs, noProgress);
        try {
            while (made < runs && notOk == null) {
                ScenarioRun r = ThreadsEngine.run(check, variant);
                made++;
                outcomes.merge(r.outcome(), 1, Integer::sum);
                ProgressBars.step(bar, r.outcome());
                if (!"OK".equals(r.outcome())) {
                    notOk = r;
                }
            }
        } finally {
            ProgressBars.close(bar);
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        out.printf("runs %d on real threads, %.1f runs/s, outcomes %s%n", made, made / Math.max(seconds, 1e-9), outcomes);
        if (notOk == null) {
            out.println("findings: 0");
            return ExitCodes.SUCCESS;
        }
        out.println("run " + made + ": " + notOk.outcome() + " — " + notOk.note());
        if (!notOk.knot().isEmpty()) {
            out.println(notOk.knot());
        }
        return ExitCodes.DEADLOCK;
    }

    /** The check's stack and workload in the shape {@link ThreadsEngine} runs. */
    private static Scenario asScenario(String label, Consumer<Kernel> workload, Policies policies, long memoryBytes) {
        return new Scenario() {
            @Override
            public String name() {
                return "check";
            }

            @Override
            public String seed() {
                return "-";
            }

            @Override
            public String description() {
                return label;
            }

            @Override
            public Policies legacyPolicies() {
                return policies;
            }

            @Override
            public List<Variant> fixedVariants() {
                return List.of();
            }

            @Override
            public Consumer<Kernel> workload(Engine engine, Probe probe) {
                return workload;
            }

            @Override
            public long memoryBytes() {
                return memoryBytes;
            }

            @Override
            public String faults() {
                return "";
            }

            @Override
            public String seedResource() {
                return "";
            }
        };
    }
}
