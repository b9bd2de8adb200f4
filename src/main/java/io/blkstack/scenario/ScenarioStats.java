package io.blkstack.scenario;

import io.blkstack.sim.Outcome;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.Consumer;

/**
 * The statistics behind the closing note of issue 7: how reliably the checker finds each seed's
 * deadlock. For a variant it runs one sim campaign per master seed {@code 1..seeds}, each of at
 * most {@code schedules} schedules and stopping at the first finding, and counts the master seeds
 * whose first finding is the seed's deadlock (a DEADLOCK or LIVELOCK whose knot names the
 * scenario's {@link Scenario#seedResource}), the median and the largest number of schedules it
 * took, and for a fixed variant the schedules that ran clean.
 *
 * <p>This is harness code: campaigns of different master seeds are independent simulations, each
 * with its own kernel, and may run on {@code jobs} plain threads of an executor that the caller's
 * thread waits for. No component runs on them outside a simulation.
 */
public final class ScenarioStats {

    /** Master seeds at most per row. */
    public static final int SEEDS_MAX = 10_000;
    /** Parallel campaigns at most. */
    public static final int JOBS_MAX = 64;

    private ScenarioStats() {
    }

    /**
     * One row: a scenario's variant over {@code masterSeeds} campaigns.
     *
     * @param found master seeds whose first finding was the seed's deadlock or livelock
     * @param otherFindings master seeds whose first finding was something else (a crash, a knot
     *     that does not name the seed's resource)
     * @param schedulesToFirst per master seed, the schedule (1-based) of the first finding, 0 for none
     * @param cleanSchedules schedules that ended without a finding, summed over the campaigns
     */
    public record Row(String scenario, String seed, String variant, String strategy, boolean expectFinding, int masterSeeds,
            int schedulesBudget, int found, int otherFindings, int[] schedulesToFirst, long cleanSchedules,
            long elapsedNanos) {

        /** The median schedules to the first finding over all master seeds; -1 if half or more found nothing. */
        public double medianToFirst() {
            long[] sorted = new long[schedulesToFirst.length];
            for (int i = 0; i < sorted.length; i++) {
                sorted[i] = schedulesToFirst[i] == 0 ? Long.MAX_VALUE : schedulesToFirst[i];
            }
            Arrays.sort(sorted);
            int n = sorted.length;
            if (n == 0) {
                return -1;
            }
            long lo = sorted[(n - 1) / 2];
            long hi = sorted[n / 2];
            if (hi == Long.MAX_VALUE) {
                return -1;
            }
            return (lo + hi) / 2.0;
        }

        /** The largest schedules to a first finding, 0 if none found. */
        public int maxToFirst() {
            int max = 0;
            for (int s : schedulesToFirst) {
                max = Math.max(max, s);
            }
            return max;
        }
    }

    /** Runs {@code seeds} campaigns of {@code variant} from master seeds 1..seeds on {@code jobs} threads. */
    public static Row run(Scenario scenario, Scenario.Variant variant, int seeds, int schedules, int jobs,
            Consumer<ScenarioRun> afterEach) {
        return run(scenario, variant, SimEngine.DEFAULT_STRATEGY, seeds, schedules, jobs, afterEach);
    }

    /**
     * As {@link #run(Scenario, Scenario.Variant, int, int, int, Consumer)} under {@code strategy}
     * ({@code random} or {@code pct:D}); {@code afterEach} is called on the caller's thread, in
     * master-seed order.
     */
    public static Row run(Scenario scenario, Scenario.Variant variant, String strategy, int seeds, int schedules,
            int jobs, Consumer<ScenarioRun> afterEach) {
        if (seeds < 1 || seeds > SEEDS_MAX) {
            throw new IllegalArgumentException("master seeds " + seeds + " not in 1.." + SEEDS_MAX);
        }
        if (schedules < 1) {
            throw new IllegalArgumentException("schedules per campaign must be positive: " + schedules);
        }
        if (jobs < 1 || jobs > JOBS_MAX) {
            throw new IllegalArgumentException("jobs " + jobs + " not in 1.." + JOBS_MAX);
        }
        long start = System.nanoTime();
        List<ScenarioRun> runs = new ArrayList<>(seeds);
        ExecutorService pool = Executors.newFixedThreadPool(jobs, r -> {
            Thread t = new Thread(r, "scenario-stats");
            t.setDaemon(true);
            return t;
        });
        try {
            List<Future<ScenarioRun>> futures = new ArrayList<>(seeds);
            for (int master = 1; master <= seeds; master++) {
                long m = master;
                futures.add(pool.submit(() -> SimEngine.run(scenario, variant, strategy, m, schedules, r -> { })));
            }
            for (Future<ScenarioRun> f : futures) {
                ScenarioRun r = f.get();
                runs.add(r);
                afterEach.accept(r);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while running campaigns of " + scenario.name(), e);
        } catch (ExecutionException e) {
            throw new IllegalStateException("a campaign of " + scenario.name() + " " + variant.label() + " failed: "
                    + e.getCause(), e.getCause());
        } finally {
            pool.shutdownNow();
        }
        return summarize(scenario, variant, strategy, runs, schedules, System.nanoTime() - start);
    }

    /** Whether a run's first finding is the seed's deadlock or livelock. */
    static boolean isSeedFinding(Scenario scenario, ScenarioRun r) {
        boolean stuck = r.outcome().equals(Outcome.DEADLOCK.name()) || r.outcome().equals(Outcome.LIVELOCK.name());
        return r.finding() && stuck && r.knot().contains(scenario.seedResource());
    }

    /** Counts the runs into a row. */
    static Row summarize(Scenario scenario, Scenario.Variant variant, List<ScenarioRun> runs, int schedules, long elapsedNanos) {
        return summarize(scenario, variant, SimEngine.DEFAULT_STRATEGY, runs, schedules, elapsedNanos);
    }

    /** Counts the runs of a campaign under {@code strategy} into a row. */
    static Row summarize(Scenario scenario, Scenario.Variant variant, String strategy, List<ScenarioRun> runs, int schedules,
            long elapsedNanos) {
        int found = 0;
        int other = 0;
        long clean = 0;
        int[] toFirst = new int[runs.size()];
        for (int i = 0; i < runs.size(); i++) {
            ScenarioRun r = runs.get(i);
            if (r.finding()) {
                toFirst[i] = r.firstFindingAt();
                clean += r.firstFindingAt() - 1;
                if (isSeedFinding(scenario, r)) {
                    found++;
                } else {
                    other++;
                }
            } else {
                clean += r.schedules();
            }
        }
        return new Row(scenario.name(), scenario.seed(), variant.label(), strategy, variant.expectFinding(), runs.size(),
                schedules, found, other, toFirst, clean, elapsedNanos);
    }

    /** The table of the closing note. */
    public static String table(List<Row> rows) {
        StringBuilder sb = new StringBuilder();
        String fmt = "%-20s %-4s %-18s %-8s %6s %10s %9s %6s %8s %7s %13s %8s%n";
        sb.append(String.format(fmt, "scenario", "seed", "variant", "strategy", "seeds", "found", "fraction", "other",
                "median", "max", "clean sched.", "time"));
        for (Row r : rows) {
            double median = r.medianToFirst();
            sb.append(String.format(fmt, r.scenario(), r.seed(), r.variant(), r.strategy(), r.masterSeeds(),
                    r.found() + "/" + r.masterSeeds(),
                    String.format("%.2f", (double) r.found() / r.masterSeeds()), r.otherFindings(),
                    median < 0 ? ">" + r.schedulesBudget() : String.format("%.1f", median),
                    r.maxToFirst() == 0 ? "-" : String.valueOf(r.maxToFirst()), r.cleanSchedules(),
                    String.format("%.1fs", r.elapsedNanos() / 1e9)));
        }
        return sb.toString();
    }
}
