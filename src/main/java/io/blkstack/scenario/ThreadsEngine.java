package io.blkstack.scenario;

import io.blkstack.kernel.HungTaskWatchdog;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.TaskKind;
import io.blkstack.sim.Coverage;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.atomic.AtomicReferenceArray;

/**
 * The {@code threads} engine: the scenario's workload on real threads and real time, under the
 * same memory budget, with the hung-task watchdog on.
 *
 * <p>The run ends in one of three ways: the workload finishes (its own checks verified the data;
 * the kernel is then closed, which checks every page came back), the watchdog reports a task that
 * made no progress for {@link #WATCHDOG_THRESHOLD} and the workload then completes no I/O for
 * {@link #CONFIRM_WINDOW} (a stall; one task starved while others progress is not one), or nothing
 * happens within
 * {@link #RUN_TIMEOUT}. A stalled kernel is abandoned, not closed: its tasks are stuck on waits
 * nothing will satisfy, closing would join them forever, and every kernel thread is a daemon, so
 * they cannot keep the JVM alive. The report says so, and lists every hung task the watchdog
 * reported (the first one may be a task waiting for its I/O, not the one waiting on the pool). Under legacy an attempt may be lucky and
 * finish; the engine tries up to {@link #ATTEMPTS_MAX} times.
 *
 * <p>This class is harness code: it waits on {@link CountDownLatch}es from the calling (non-task)
 * thread, never inside a component.
 */
public final class ThreadsEngine {

    /** How long a task may wait without progress before the watchdog reports it. */
    public static final Duration WATCHDOG_THRESHOLD = Duration.ofMillis(500);
    /** After a watchdog report, how long the workload's completed I/O must stand still to call it a stall. */
    public static final Duration CONFIRM_WINDOW = Duration.ofMillis(1000);
    /** Real time an attempt may take at most. */
    public static final Duration RUN_TIMEOUT = Duration.ofSeconds(20);
    /** Attempts under legacy before reporting that no stall happened. */
    public static final int ATTEMPTS_MAX = 3;
    static final long POLL_MILLIS = 10;
    /** Watchdog reports kept per attempt for the stall's explanation (every hung task, not only the first). */
    static final int REPORTS_KEPT_MAX = 16;

    private ThreadsEngine() {
    }

    /** Runs the variant on real threads; legacy retries until a stall or {@link #ATTEMPTS_MAX} attempts. */
    public static ScenarioRun run(Scenario scenario, Scenario.Variant variant) {
        long start = System.nanoTime();
        Attempt last = null;
        int attempts = variant.expectFinding() ? ATTEMPTS_MAX : 1;
        int made = 0;
        while (made < attempts) {
            made++;
            last = attempt(scenario, variant, Probe.none());
            if (!last.outcome.equals("OK")) {
                break;
            }
        }
        boolean finding = !last.outcome.equals("OK");
        return new ScenarioRun(scenario.name(), scenario.seed(), variant.label(), variant.legacy(), variant.expectFinding(),
                Scenario.Engine.THREADS, last.outcome, finding, made, finding ? made : 0, System.nanoTime() - start,
                last.report, "", last.coverage, last.note);
    }

    /** One attempt's result. */
    record Attempt(String outcome, String report, String note, Map<String, Long> coverage, long stallAfterNanos) {
    }

    /** Runs the workload once on a fresh real kernel. */
    static Attempt attempt(Scenario scenario, Scenario.Variant variant, Probe probe) {
        AtomicReference<HungTaskWatchdog.Report> stall = new AtomicReference<>();
        AtomicInteger reports = new AtomicInteger();
        AtomicReferenceArray<HungTaskWatchdog.Report> kept = new AtomicReferenceArray<>(REPORTS_KEPT_MAX);
        CountDownLatch finished = new CountDownLatch(1);
        AtomicReference<Throwable> failure = new AtomicReference<>();
        Kernel kernel = Kernel.builder().name("scenario-" + scenario.name()).memory(scenario.memoryBytes())
                .policies(variant.policies()).faults(scenario.threadsFaults()).watchdog(WATCHDOG_THRESHOLD, r -> {
                    int index = reports.getAndIncrement();
                    if (index < REPORTS_KEPT_MAX) {
                        kept.set(index, r);
                    }
                    stall.compareAndSet(null, r);
                }).build();
        long begin = System.nanoTime();
        kernel.spawn("scenario-" + scenario.name(), TaskKind.USER, () -> {
            try {
                scenario.workload(Scenario.Engine.THREADS, probe).accept(kernel);
            } catch (Throwable t) {
                failure.set(t);
            } finally {
                finished.countDown();
            }
        });
        long deadline = begin + RUN_TIMEOUT.toNanos();
        HungTaskWatchdog.Report confirmed = null;
        long suspectSince = 0;
        long ioAtSuspect = 0;
        while (finished.getCount() > 0 && confirmed == null && System.nanoTime() < deadline) {
            awaitQuietly(finished);
            HungTaskWatchdog.Report r = stall.get();
            if (r == null) {
                continue;
            }
            long now = System.nanoTime();
            if (suspectSince == 0) {
                suspectSince = now;
                ioAtSuspect = probe.completedIo();
            } else if (probe.completedIo() != ioAtSuspect) {
                // Starvation of one task while others complete I/O is not a stall: watch again.
                stall.compareAndSet(r, null);
                suspectSince = 0;
            } else if (now - suspectSince >= CONFIRM_WINDOW.toNanos()) {
                confirmed = r;
            }
        }
        long after = System.nanoTime() - begin;
        Map<String, Long> coverage = coverage(kernel);
        if (finished.getCount() == 0 && failure.get() == null) {
            String closeProblem = closeQuietly(kernel);
            if (closeProblem != null) {
                return new Attempt("CLOSE_FAILED", closeProblem, "workload finished but the kernel did not close cleanly",
                        coverage, 0);
            }
            return new Attempt("OK", "", "completed with verified data in " + after / 1_000_000 + " ms", coverage, 0);
        }
        if (failure.get() != null) {
            String closeProblem = closeQuietly(kernel);
            return new Attempt("CRASH", String.valueOf(failure.get()), "the workload failed"
                    + (closeProblem == null ? "" : "; close: " + closeProblem), coverage, 0);
        }
        HungTaskWatchdog.Report r = confirmed;
        if (r == null) {
            return new Attempt("TIMEOUT", "", "neither finished nor reported by the watchdog within " + RUN_TIMEOUT
                    + "; kernel abandoned", coverage, 0);
        }
        String note = "watchdog reported " + r.task() + " blocked " + r.blockedNanos() / 1_000_000 + " ms (threshold "
                + WATCHDOG_THRESHOLD.toMillis() + " ms), no I/O completed for " + CONFIRM_WINDOW.toMillis()
                + " ms after; stopped at " + after / 1_000_000 + " ms, kernel abandoned unclosed (" + kernel.scheduler().tasks().size()
                + " tasks left on daemon threads)";
        return new Attempt("STALL", describeAll(r, kept), note, coverage, after);
    }

    /** The confirmed report, then every other hung task the watchdog reported during the attempt. */
    private static String describeAll(HungTaskWatchdog.Report confirmed, AtomicReferenceArray<HungTaskWatchdog.Report> kept) {
        StringBuilder sb = new StringBuilder(confirmed.describe());
        for (int i = 0; i < kept.length(); i++) {
            HungTaskWatchdog.Report other = kept.get(i);
            if (other != null && other != confirmed) {
                sb.append("\nalso reported: ").append(other.describe());
            }
        }
        return sb.toString();
    }

    private static void awaitQuietly(CountDownLatch latch) {
        try {
            latch.await(POLL_MILLIS, TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while waiting for a scenario run", e);
        }
    }

    /** Closes the kernel; returns the problem, or null if it closed cleanly. */
    private static String closeQuietly(Kernel kernel) {
        try {
            kernel.close();
            return null;
        } catch (RuntimeException e) {
            return e.toString();
        }
    }

    private static Map<String, Long> coverage(Kernel kernel) {
        Map<String, Long> all = kernel.counters().snapshot();
        Map<String, Long> out = Coverage.of(all);
        out.put("watchdog.hung-tasks", all.getOrDefault("watchdog.hung-tasks", 0L));
        return out;
    }
}
