package io.blkstack.kernel;

import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * Reports tasks that have waited on one thing without progress for longer than a threshold: the
 * kernel's hung-task detector, with one difference that matters for this project. A logical wait
 * (see {@link Task#beginWait}) survives timed retries, so a mempool waiter that wakes every five
 * seconds, finds nothing and sleeps again is reported, where the kernel's detector sees it as
 * alive.
 *
 * <p>With an explainer (see {@link Kernel.Builder#watchdogExplainer}; {@code serve} uses the
 * checker's wait-for explanation) each report also says what the wait target is and who holds
 * what the task needs: a mutex's owner, a pool's elements, the bios of each bio set by holder (a
 * device, a thin pool's out-of-space queue), the server's requests in flight.
 */
public final class HungTaskWatchdog {

    /**
     * One report: a task, what it waits on, for how long, where it is, and (with an explainer) the
     * wait-for explanation, else an empty string.
     */
    public record Report(Task task, String waitingOn, long blockedNanos, StackTraceElement[] stack, String explanation) {

        /** A multi-line description like the kernel's "task blocked for more than N seconds". */
        public String describe() {
            StringBuilder sb = new StringBuilder();
            sb.append("INFO: task ").append(task).append(" blocked for more than ")
                    .append(blockedNanos / 1_000_000).append(" ms on ").append(waitingOn).append('\n');
            if (!explanation.isEmpty()) {
                sb.append(explanation.endsWith("\n") ? explanation : explanation + "\n");
            }
            int shown = 0;
            for (StackTraceElement e : stack) {
                if (shown++ == 24) {
                    sb.append("    ...\n");
                    break;
                }
                sb.append("    at ").append(e).append('\n');
            }
            return sb.toString();
        }
    }

    private final Kernel kernel;
    private final long thresholdNanos;
    private final long periodNanos;
    private final Consumer<Report> listener;
    private final Function<Task, String> explainer;
    private final Map<Task, Long> reported = new HashMap<>();
    private Task task;

    HungTaskWatchdog(Kernel kernel, long thresholdNanos, Consumer<Report> listener, Function<Task, String> explainer) {
        if (thresholdNanos <= 0) {
            throw new IllegalArgumentException("watchdog threshold must be positive: " + thresholdNanos + " ns");
        }
        this.kernel = kernel;
        this.thresholdNanos = thresholdNanos;
        this.periodNanos = Math.max(1_000_000L, thresholdNanos / 4);
        this.listener = listener;
        this.explainer = explainer;
    }

    void start() {
        task = kernel.spawn("hung-task-watchdog", TaskKind.WATCHDOG, this::run);
    }

    void stop() {
        if (task != null) {
            task.requestStop();
            kernel.scheduler().join(task);
        }
    }

    /**
     * The watchdog task: a scan every period. Its sleep ends early when {@link #stop} asks (a
     * plain {@link Task#sleepFor} ignores wake-ups, which held a kernel's close for up to a whole
     * period); it is an idle wait, owing nothing to anyone.
     */
    private void run() {
        Task self = Task.current();
        Scheduler scheduler = kernel.scheduler();
        while (!self.stopRequested()) {
            long deadline = scheduler.nanoTime() + periodNanos;
            boolean started = self.beginWait(this, true);
            try {
                for (long left = periodNanos; left > 0; left = deadline - scheduler.nanoTime()) {
                    scheduler.prepareToSleep(self);
                    if (self.stopRequested()) {
                        break;
                    }
                    self.sleep(this, left);
                }
            } finally {
                self.endWait(started);
            }
            if (!self.stopRequested()) {
                scan(self);
            }
        }
    }

    @Override
    public String toString() {
        return "hung-task watchdog (threshold " + thresholdNanos / 1_000_000 + " ms)";
    }

    /** The explainer's text for a stuck task; a failing explainer is reported in the text, not thrown. */
    private String explain(Task t) {
        if (explainer == null) {
            return "";
        }
        try {
            return explainer.apply(t);
        } catch (RuntimeException e) {
            return "(explanation failed: " + e + ")";
        }
    }

    /** Checks every task once; reports each stuck wait once. */
    void scan(Task self) {
        long now = kernel.scheduler().nanoTime();
        List<Task> tasks = kernel.scheduler().tasks();
        reported.keySet().retainAll(tasks);
        for (Task t : tasks) {
            if (t == self) {
                continue;
            }
            Object what = t.waitingOn();
            if (what == null || t.waitIsIdle()) {
                continue;
            }
            long since = t.waitSinceNanos();
            long blocked = now - since;
            if (blocked < thresholdNanos) {
                continue;
            }
            Long previous = reported.get(t);
            if (previous != null && previous == since) {
                continue;
            }
            reported.put(t, since);
            Thread thread = t.thread();
            StackTraceElement[] stack = thread == null ? new StackTraceElement[0] : thread.getStackTrace();
            kernel.counters().get("watchdog.hung-tasks").incrementAndGet();
            HungTaskEvent event = new HungTaskEvent();
            if (event.shouldCommit()) {
                event.task = t.toString();
                event.waitingOn = String.valueOf(what);
                event.blocked = blocked;
                event.commit();
            }
            listener.accept(new Report(t, String.valueOf(what), blocked, stack, explain(t)));
        }
    }
}
