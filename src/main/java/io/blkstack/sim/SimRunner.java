package io.blkstack.sim;

import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Semaphore;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicReferenceArray;
import java.util.function.Consumer;
import java.util.function.Predicate;

/**
 * Runs workloads under the simulated scheduler: one schedule ({@link #runOnce}) or a campaign of
 * many ({@link #campaign}).
 *
 * <p>A run builds a fresh {@link Kernel} over a {@link SimScheduler}, seeded faults and a trace,
 * and starts one task, {@code main}, which starts the kernel's own tasks, runs the workload (which
 * builds components and spawns its tasks), waits for every {@link TaskKind#USER} task the workload
 * started, and closes the kernel — all inside the simulation, so shutdown is checked too (pages and
 * pool elements must come back). The calling thread watches the run (the simulation's tasks and
 * its controller are virtual threads) and must not itself be a kernel task.
 *
 * <p>A runner keeps one thing across runs: PCT's decision bound, learned from the runs so far.
 * Each result records the bound it used, and {@link #replayArguments} includes it. A campaign may
 * run several schedules at once ({@link #SimRunner(SimConfig, int)}); its results are the same.
 */
public final class SimRunner {

    /**
     * Findings kept in full per kind of outcome. A campaign counts every finding in
     * {@link CampaignResult#outcomes}, but keeps the result (seed, kind, trace hash, knot text) of
     * only the first few of each kind, so its memory stays flat however many schedules it runs.
     */
    public static final int FINDINGS_KEPT_PER_KIND = 16;

    /** The most schedules a campaign runs at once. */
    public static final int JOBS_MAX = 64;

    /**
     * A campaign's summary.
     *
     * @param findings the first {@link #FINDINGS_KEPT_PER_KIND} findings of each kind, in the order found
     * @param outcomes how many schedules ended each way (every finding counted)
     */
    public record CampaignResult(long masterSeed, int schedules, List<SimResult> findings, Map<Outcome, Integer> outcomes,
            long steps, long decisions, long elapsedNanos, Map<String, Long> faultFires, Map<String, Long> counters,
            List<Long> nondeterministicSeeds) {

        /** Schedules run per second of real time. */
        public double schedulesPerSecond() {
            return elapsedNanos == 0 ? 0 : schedules * 1e9 / elapsedNanos;
        }

        /** Scheduling decisions per second of real time. */
        public double decisionsPerSecond() {
            return elapsedNanos == 0 ? 0 : decisions * 1e9 / elapsedNanos;
        }

        /** How many schedules ended in a finding (more than {@link #findings} keeps on long campaigns). */
        public long findingCount() {
            long n = 0;
            for (Map.Entry<Outcome, Integer> e : outcomes.entrySet()) {
                if (e.getKey().isFinding()) {
                    n += e.getValue();
                }
            }
            return n;
        }

        /** The first finding, or null. */
        public SimResult firstFinding() {
            return findings.isEmpty() ? null : findings.get(0);
        }
    }

    private final SimConfig config;
    private final int jobs;
    private long learnedBound = StrategySpec.INITIAL_BOUND;

    public SimRunner(SimConfig config) {
        this(config, 1);
    }

    /** A runner whose campaigns run {@code jobs} schedules at once (see {@link #campaign}). */
    public SimRunner(SimConfig config, int jobs) {
        if (jobs < 1 || jobs > JOBS_MAX) {
            throw new IllegalArgumentException("jobs " + jobs + " not in 1.." + JOBS_MAX);
        }
        this.config = config;
        this.jobs = jobs;
    }

    public SimConfig config() {
        return config;
    }

    /** Runs one schedule of {@code workload} from {@code seed}. */
    public SimResult runOnce(long seed, Consumer<Kernel> workload) {
        return runOnce(seed, workload, outcome -> true);
    }

    /**
     * As {@link #runOnce(long, Consumer)}, explaining a finding (the knot, the stacks) only if
     * {@code explain} says so for its outcome: a long campaign keeps only the first findings of
     * each kind, and explaining the others was about a seventh of a legacy campaign's time. The
     * explanation only reads the stopped run, so the trace, and a replay, are the same either way.
     * Every kept finding is explained; whether a later one is depends on how far the campaign's
     * caller had got (with several jobs), so only the kept ones are to be read.
     */
    private SimResult runOnce(long seed, Consumer<Kernel> workload, Predicate<Outcome> explain) {
        if (Task.currentOrNull() != null) {
            throw new IllegalStateException("runOnce called from kernel task " + Task.currentOrNull()
                    + ": the caller watches the simulation and must not be a task");
        }
        long bound = config.pctStepBound() > 0 ? config.pctStepBound() : learnedBound;
        SimRandom random = new SimRandom(seed);
        try (SimTrace trace = new SimTrace(config.traceFile())) {
            Strategy strategy = config.strategy().start(random, bound);
            SimFaults faults = new SimFaults(config.faults(), random, trace, config.faultsAtSetup());
            SimScheduler scheduler = new SimScheduler(config, random, strategy, trace);
            Kernel kernel = Kernel.builder().name("sim").memory(config.memoryBytes()).policies(config.policies())
                    .reserves(config.reserves()).faults(faults).tracer(trace).scheduler(scheduler).startTasks(false)
                    .latencyHistograms(false).build();
            scheduler.spawn("main", TaskKind.USER, () -> runMain(kernel, workload));
            SimScheduler.Finding finding = null;
            String explanation = "";
            try {
                finding = scheduler.run(f -> explain.test(f.outcome()) ? Knot.explain(kernel, scheduler, f, config.describers())
                        : "");
                refuseHeapExhaustion(finding, kernel);
                explanation = scheduler.explanation();
            } finally {
                scheduler.tearDown(finding == null ? null : finding.culprit());
            }
            if (config.strategy().isPct() && config.pctStepBound() == 0) {
                learnedBound = Math.max(learnedBound, scheduler.decisions());
            }
            return new SimResult(seed, finding.outcome(), explanation, trace.hash(), trace.count(), scheduler.steps(),
                    scheduler.decisions(), scheduler.virtualNanos(), config.strategy().isPct() ? bound : 0,
                    kernel.counters().snapshot(), faults.fires(), scheduler.leakedThreads());
        }
    }

    /**
     * A task that died of the checker's own heap exhaustion is not a crash of the stack: the run
     * proves nothing, so the campaign stops with an error instead of reporting a false CRASH.
     */
    private static void refuseHeapExhaustion(SimScheduler.Finding finding, Kernel kernel) {
        if (finding.outcome() != Outcome.CRASH) {
            return;
        }
        for (String crash : kernel.crashes()) {
            if (crash.contains(OutOfMemoryError.class.getName())) {
                throw new IllegalStateException("the checker's JVM ran out of heap during a run (not a finding of the"
                        + " stack; give the JVM more heap, e.g. -Xmx): " + crash.lines().findFirst().orElse(crash));
            }
        }
    }

    /** The main task: start the kernel, run the workload, wait for its tasks, close the kernel. */
    private static void runMain(Kernel kernel, Consumer<Kernel> workload) {
        kernel.start();
        workload.accept(kernel);
        Task self = Task.current();
        for (Task t = nextUserTask(kernel, self); t != null; t = nextUserTask(kernel, self)) {
            kernel.scheduler().join(t);
        }
        kernel.close();
    }

    private static Task nextUserTask(Kernel kernel, Task self) {
        for (Task t : kernel.scheduler().tasks()) {
            if (t != self && t.kind() == TaskKind.USER) {
                return t;
            }
        }
        return null;
    }

    /**
     * Runs {@code schedules} schedules with seeds derived from {@code masterSeed}.
     *
     * @param stopAtFirst end at the first finding
     * @param checkDeterminism run each seed twice and record seeds whose trace hashes differ
     */
    public CampaignResult campaign(long masterSeed, int schedules, boolean stopAtFirst, boolean checkDeterminism,
            Consumer<Kernel> workload) {
        return campaign(masterSeed, schedules, stopAtFirst, checkDeterminism, workload, r -> { });
    }

    /**
     * As {@link #campaign(long, int, boolean, boolean, Consumer)}, calling {@code afterEach} on the
     * calling thread with every schedule's result, in schedule order (a progress bar, a trace of
     * the first run).
     *
     * <p>With {@link #jobs} above 1 the schedules run on that many threads at once, each run on
     * its own carrier ({@link SimCarrier}); the results are taken in schedule order, so the
     * campaign's outcome, its findings and where {@code stopAtFirst} stops are those of a run one at
     * a time. PCT with a learned bound (no {@link SimConfig#pctStepBound}) runs one at a time: each
     * schedule's bound depends on the runs before it.
     */
    public CampaignResult campaign(long masterSeed, int schedules, boolean stopAtFirst, boolean checkDeterminism,
            Consumer<Kernel> workload, Consumer<SimResult> afterEach) {
        if (schedules < 1) {
            throw new IllegalArgumentException("a campaign needs at least one schedule: " + schedules);
        }
        long start = System.nanoTime();
        Tally tally = new Tally();
        if (parallelJobs() > 1) {
            runParallel(masterSeed, schedules, stopAtFirst, checkDeterminism, workload, afterEach, tally);
        } else {
            for (int run = 0; run < schedules; run++) {
                Scheduled s = schedule(masterSeed, run, checkDeterminism, workload, tally);
                afterEach.accept(s.result());
                if (tally.add(s) && stopAtFirst) {
                    break;
                }
            }
        }
        return tally.result(masterSeed, System.nanoTime() - start);
    }

    /** The schedules a campaign runs at once unless told: one per processor. */
    public static int defaultJobs() {
        return Math.min(Runtime.getRuntime().availableProcessors(), JOBS_MAX);
    }

    /** How many schedules this runner's campaigns run at once (see {@link #campaign}). */
    public int parallelJobs() {
        return config.strategy().isPct() && config.pctStepBound() == 0 ? 1 : jobs;
    }

    /** One schedule's result, and whether running its seed again gave another trace. */
    private record Scheduled(SimResult result, boolean nondeterministic) {
    }

    /** Runs schedule {@code index} of a campaign (twice if {@code checkDeterminism}). */
    private Scheduled schedule(long masterSeed, int index, boolean checkDeterminism, Consumer<Kernel> workload,
            Tally tally) {
        long seed = SimRandom.deriveSeed(masterSeed, index);
        long boundBefore = learnedBound;
        SimResult r = runOnce(seed, workload, tally::mayKeep);
        if (!checkDeterminism) {
            return new Scheduled(r, false);
        }
        SimResult again = new SimRunner(config.withPctStepBound(r.pctStepBound() > 0 ? r.pctStepBound() : boundBefore))
                .runOnce(seed, workload);
        return new Scheduled(r, again.traceHash() != r.traceHash() || again.outcome() != r.outcome());
    }

    /**
     * The campaign on {@link #jobs} threads. A worker takes the next schedule index and completes
     * that index's slot in a ring; the calling thread takes the slots in index order. Workers run
     * at most {@code ring} schedules ahead of the caller (a semaphore), so memory stays flat
     * however long the campaign. Every run ends (the watchdog bounds it), so every wait here does.
     */
    private void runParallel(long masterSeed, int schedules, boolean stopAtFirst, boolean checkDeterminism,
            Consumer<Kernel> workload, Consumer<SimResult> afterEach, Tally tally) {
        int ring = jobs * RING_PER_JOB;
        AtomicReferenceArray<CompletableFuture<Scheduled>> slots = new AtomicReferenceArray<>(ring);
        for (int i = 0; i < ring; i++) {
            slots.set(i, new CompletableFuture<>());
        }
        Semaphore ahead = new Semaphore(ring);
        AtomicInteger next = new AtomicInteger();
        AtomicBoolean stop = new AtomicBoolean();
        ThreadFactory factory = Thread.ofPlatform().name("sim-campaign-", 0).daemon(true).factory();
        try (ExecutorService pool = Executors.newFixedThreadPool(jobs, factory)) {
            try {
                for (int j = 0; j < jobs; j++) {
                    pool.execute(() -> {
                        while (true) {
                            ahead.acquireUninterruptibly();
                            int index = next.getAndIncrement();
                            if (stop.get() || index >= schedules) {
                                return;
                            }
                            CompletableFuture<Scheduled> slot = slots.get(index % ring);
                            try {
                                slot.complete(schedule(masterSeed, index, checkDeterminism, workload, tally));
                            } catch (Throwable t) {
                                slot.completeExceptionally(t); // whatever it was, the caller waiting on the slot gets it
                            }
                        }
                    });
                }
                for (int index = 0; index < schedules; index++) {
                    Scheduled s = take(slots.get(index % ring));
                    slots.set(index % ring, new CompletableFuture<>());
                    ahead.release();
                    afterEach.accept(s.result());
                    if (tally.add(s) && stopAtFirst) {
                        break;
                    }
                }
            } finally {
                stop.set(true);
                ahead.release(jobs); // wakes workers waiting for room so that they see the stop
            }
        }
    }

    /** Schedules a worker may run ahead of the caller, per worker. */
    private static final int RING_PER_JOB = 4;

    /** A slot's result, its worker's failure rethrown as is (wrapped if it was a checked exception). */
    private static Scheduled take(CompletableFuture<Scheduled> slot) {
        try {
            return slot.join();
        } catch (CompletionException e) {
            if (e.getCause() instanceof RuntimeException re) {
                throw re;
            }
            if (e.getCause() instanceof Error err) {
                throw err;
            }
            throw new IllegalStateException("a campaign schedule failed: " + e.getCause(), e.getCause());
        }
    }

    /** A campaign's running totals, fed in schedule order. */
    private static final class Tally {
        private final List<SimResult> findings = new ArrayList<>();
        /** Per outcome, how many schedules taken so far ended that way (the workers read it too). */
        private final AtomicIntegerArray counted = new AtomicIntegerArray(Outcome.values().length);
        private final Map<String, Long> fires = new TreeMap<>();
        private final Map<String, Long> counters = new TreeMap<>();
        private final List<Long> nondeterministic = new ArrayList<>();
        private long steps;
        private long decisions;
        private int runs;

        /** Counts one schedule; true if it ended in a finding. */
        boolean add(Scheduled s) {
            SimResult r = s.result();
            runs++;
            if (s.nondeterministic()) {
                nondeterministic.add(r.seed());
            }
            steps += r.steps();
            decisions += r.decisions();
            int ofItsKind = counted.incrementAndGet(r.outcome().ordinal());
            r.faultFires().forEach((k, v) -> fires.merge(k, v, Long::sum));
            r.counters().forEach((k, v) -> counters.merge(k, v, Long::sum));
            if (r.isFinding() && ofItsKind <= FINDINGS_KEPT_PER_KIND) {
                findings.add(r);
            }
            return r.isFinding();
        }

        /**
         * Whether a schedule not yet taken that ends with {@code outcome} may be kept. Schedules
         * are taken in order, so once {@link #FINDINGS_KEPT_PER_KIND} of a kind were taken, every
         * later one of that kind is only counted; before that, it may be kept.
         */
        boolean mayKeep(Outcome outcome) {
            return counted.get(outcome.ordinal()) < FINDINGS_KEPT_PER_KIND;
        }

        CampaignResult result(long masterSeed, long elapsedNanos) {
            Map<Outcome, Integer> outcomes = new EnumMap<>(Outcome.class);
            for (Outcome o : Outcome.values()) {
                if (counted.get(o.ordinal()) > 0) {
                    outcomes.put(o, counted.get(o.ordinal()));
                }
            }
            return new CampaignResult(masterSeed, runs, List.copyOf(findings), outcomes, steps, decisions,
                    elapsedNanos, fires, counters, List.copyOf(nondeterministic));
        }
    }

    /** The command-line arguments that replay {@code result} with this runner's configuration. */
    public String replayArguments(SimResult result) {
        StringBuilder sb = new StringBuilder();
        sb.append("--seed ").append(result.seed()).append(" --schedules 1 --strategy ").append(config.strategy());
        if (result.pctStepBound() > 0) {
            sb.append(" --pct-bound ").append(result.pctStepBound());
        }
        sb.append(" --memory ").append(config.memoryBytes());
        if (!config.faults().isEmpty() || config.faults().swarm()) {
            sb.append(" --faults '").append(config.faults()).append('\'');
        }
        if (config.faultsAtSetup() && !config.faults().isEmpty()) {
            sb.append(" --faults-at-setup");
        }
        return sb.toString();
    }
}
