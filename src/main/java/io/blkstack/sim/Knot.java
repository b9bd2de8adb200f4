package io.blkstack.sim;

import io.blkstack.bio.BioSet;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Mutex;
import io.blkstack.kernel.Task;
import io.blkstack.mem.Mempool;
import io.blkstack.mem.PageAllocator;
import io.blkstack.mem.Shrinker;
import java.util.List;

/**
 * The explanation of a finding: the wait-for knot. For every blocked task that owes work it says
 * what the task waits on (a pool, a lock, a completion, a queue, another task's exit), who holds
 * what it needs where that is knowable (a mutex's owner and what that owner waits on; a mempool's
 * outstanding elements and waiters), and where the task blocked (its stack, trimmed to blkstack
 * frames). Then every component's own state (later layers name their holders there: a bio set's
 * elements on a task's pending list, in flight at a device, queued for a rescuer), the page
 * allocator, and the last trace events.
 *
 * <p>Extensible without touching this class: a layer adds a {@link WaitDescriber} through
 * {@link SimConfig.Builder#describer} for its own wait targets, and its components'
 * {@link Component#describeState} is printed as is.
 */
public final class Knot {

    /** How many frames of each task's stack are shown. */
    static final int FRAMES_MAX = 14;

    /** Describes a wait target a layer knows about; returns null for targets it does not know. */
    @FunctionalInterface
    public interface WaitDescriber {
        String describe(Object waitingOn);
    }

    private Knot() {
    }

    /** Builds the explanation text of a finding; call while the tasks are still parked. */
    static String explain(Kernel kernel, SimScheduler scheduler, SimScheduler.Finding finding, List<WaitDescriber> configured) {
        List<WaitDescriber> describers = new java.util.ArrayList<>(configured);
        describers.add(bioSetPools(kernel));
        StringBuilder sb = new StringBuilder();
        sb.append(finding.outcome()).append(": ").append(finding.headline());
        String core = innermostOfKnot(scheduler, finding, describers);
        if (core != null) {
            sb.append("; innermost: ").append(core);
        }
        sb.append('\n');
        sb.append("virtual time ").append(scheduler.virtualNanos()).append(" ns, ").append(scheduler.steps())
                .append(" steps, ").append(scheduler.decisions()).append(" decisions\n");
        List<SimTask> live = scheduler.liveTasks();
        sb.append("wait-for knot:\n");
        int owing = 0;
        for (SimTask t : live) {
            if (t == finding.culprit() || !SimScheduler.owesWork(t) || t.runnable()) {
                continue;
            }
            owing++;
            describeTask(sb, t, describers, false);
        }
        if (owing == 0) {
            sb.append("  (no blocked task owes work)\n");
        }
        if (finding.culprit() != null) {
            sb.append("running task (did not come back):\n");
            describeTask(sb, finding.culprit(), describers, true);
        }
        if (finding.outcome() == Outcome.STEP_LIMIT || finding.outcome() == Outcome.TIME_LIMIT) {
            describeRunnable(sb, live, finding, describers);
        }
        StringBuilder others = new StringBuilder();
        for (SimTask t : live) {
            if (t != finding.culprit() && (!SimScheduler.owesWork(t) || t.runnable())) {
                others.append(' ').append(t.task).append(t.runnable() ? " (runnable)" : " (idle: " + t.task.waitingOn() + ")");
            }
        }
        if (!others.isEmpty()) {
            sb.append("other tasks:").append(others).append('\n');
        }
        List<String> misuses = kernel.misuses();
        if (!misuses.isEmpty()) {
            sb.append("misuse:\n");
            for (String m : misuses) {
                sb.append("  ").append(m).append('\n');
            }
        }
        List<String> crashes = kernel.crashes();
        if (!crashes.isEmpty()) {
            sb.append("crashes:\n");
            for (String c : crashes) {
                sb.append("  ").append(c.replace("\n", "\n  ")).append('\n');
            }
        }
        sb.append("components:\n");
        for (Component c : kernel.components()) {
            sb.append("  ").append(safeDescribe(c)).append('\n');
        }
        sb.append("  ").append(kernel.pages().describeState()).append('\n');
        sb.append("last events:\n");
        for (String e : scheduler.trace().recent()) {
            sb.append("  ").append(e).append('\n');
        }
        return sb.toString();
    }

    private static void describeTask(StringBuilder sb, SimTask t, List<WaitDescriber> describers, boolean fullStack) {
        Task task = t.task;
        Object what = task.waitingOn();
        Object inner = task.sleepingOn();
        List<StackTraceElement> stack = fullStack ? topOfStack(t.thread) : trimmedStack(t.thread);
        sb.append("  task ").append(task).append(" (").append(task.kind()).append(')');
        if (what != null) {
            sb.append(" waits on ").append(describeTarget(innermost(what, inner), describers));
            String shrinker = shrinkerFrame(t.thread);
            if (shrinker != null) {
                sb.append(" inside shrinker ").append(shrinker);
            }
            if (inner != null && inner != what) {
                sb.append(", within its wait on ").append(describeTarget(what, describers));
            }
            sb.append(" since ").append(task.waitSinceNanos()).append(" ns");
        } else {
            sb.append(t.runnable() ? " is running" : " sleeps without a recorded wait");
        }
        sb.append(t.blockedWithTimeout && !t.runnable() ? " [retrying on a timeout]" : "").append('\n');
        for (StackTraceElement e : stack) {
            sb.append("      at ").append(e).append('\n');
        }
    }

    /**
     * The innermost wait of a task: what it sleeps on now when that is a known kernel object (a
     * pool, a lock, the page allocator, a wait inside its logical wait), else its logical wait.
     * Generic sleep labels (strings) say less than the logical wait they serve.
     */
    private static Object innermost(Object what, Object inner) {
        return inner == null || inner instanceof String ? what : inner;
    }

    /**
     * Every runnable task with its stack, for a run ended by a limit: a task that spins (yields or
     * retries without blocking, so virtual time stands still) shows where it spins.
     */
    private static void describeRunnable(StringBuilder sb, List<SimTask> live, SimScheduler.Finding finding,
            List<WaitDescriber> describers) {
        sb.append("runnable tasks:\n");
        int n = 0;
        for (SimTask t : live) {
            if (t.runnable() && t != finding.culprit()) {
                n++;
                describeTask(sb, t, describers, false);
            }
        }
        if (n == 0) {
            sb.append("  (none)\n");
        }
    }

    /**
     * One line naming the core of a stall: the first blocked task that owes work and waits inside a
     * shrinker, else the first whose wait is not for another task's exit (the main task's join is
     * never the core). Null when no blocked task owes work.
     */
    private static String innermostOfKnot(SimScheduler scheduler, SimScheduler.Finding finding,
            List<WaitDescriber> describers) {
        if (finding.outcome() != Outcome.DEADLOCK && finding.outcome() != Outcome.LIVELOCK) {
            return null;
        }
        SimTask first = null;
        for (SimTask t : scheduler.liveTasks()) {
            if (t.runnable() || !SimScheduler.owesWork(t) || t.task.waitingOn() == null) {
                continue;
            }
            String shrinker = shrinkerFrame(t.thread);
            Object wait = innermost(t.task.waitingOn(), t.task.sleepingOn());
            if (shrinker != null) {
                return t.task + " waits on " + shortTarget(wait, describers) + " inside shrinker " + shrinker;
            }
            if (first == null && !(t.task.waitingOn() instanceof SimScheduler.JoinWait)) {
                first = t;
            }
        }
        if (first == null) {
            return null;
        }
        return first.task + " waits on " + shortTarget(innermost(first.task.waitingOn(), first.task.sleepingOn()), describers);
    }

    /** A wait target's description up to its first parenthesis or comma: the pool or lock's name. */
    private static String shortTarget(Object what, List<WaitDescriber> describers) {
        String full = describeTarget(what, describers);
        int cut = full.length();
        for (char c : new char[] {'(', ','}) {
            int i = full.indexOf(c);
            if (i > 0 && i < cut) {
                cut = i;
            }
        }
        return full.substring(0, cut).trim();
    }

    /**
     * The innermost frame of a {@link Shrinker}'s scan on {@code thread}'s whole stack (its class and
     * method, e.g. {@code BufferCache.scanLegacy}), or null if the task is not inside a shrinker.
     */
    static String shrinkerFrame(Thread thread) {
        if (thread == null) {
            return null;
        }
        for (StackTraceElement e : thread.getStackTrace()) {
            if (!e.getMethodName().startsWith("scan")) {
                continue;
            }
            Class<?> type;
            try {
                type = Class.forName(e.getClassName(), false, Knot.class.getClassLoader());
            } catch (ClassNotFoundException | LinkageError ex) {
                continue;
            }
            if (Shrinker.class.isAssignableFrom(type)) {
                return type.getSimpleName() + "." + e.getMethodName();
            }
        }
        return null;
    }

    /**
     * The wait-for explanation of one task of a running kernel, for the hung-task watchdog on real
     * threads: what the task waits on and who holds that, as the checker describes wait targets (a
     * mutex's owner and its own wait, a pool's elements and its bio set's holders); for a wait on a
     * bio's completion, the bio and where it is; then every bio held outside its pool, by bio set
     * and holder (a device, a driver's queue such as a thin pool's out-of-data-space queue, a
     * task's submit list), and the page allocator. Only what holds something is listed, so the
     * report stays short on a large stack. Runs on a kernel task and takes only spin locks.
     */
    public static String explainWait(Kernel kernel, Task task) {
        List<WaitDescriber> describers = List.of(bioSetPools(kernel));
        StringBuilder sb = new StringBuilder("wait-for:\n");
        Object what = task.waitingOn();
        sb.append("  task ").append(task).append(" (").append(task.kind()).append(')');
        if (what == null) {
            sb.append(" is no longer waiting\n");
        } else {
            long since = kernel.scheduler().nanoTime() - task.waitSinceNanos();
            sb.append(" waits on ").append(describeTarget(what, describers)).append(" for ")
                    .append(since / 1_000_000).append(" ms\n");
        }
        StringBuilder held = new StringBuilder();
        for (Component c : kernel.components()) {
            if (!(c instanceof BioSet bs)) {
                continue;
            }
            for (io.blkstack.bio.Bio bio : bs.outstandingBios()) {
                if (what != null && bio.privateData() == what) {
                    sb.append("    which is the completion of ").append(bio).append(": ").append(bio.describeHolder())
                            .append('\n');
                }
            }
            java.util.Map<String, Integer> holders = bs.holders();
            if (!holders.isEmpty()) {
                held.append("    ").append(bs.name()).append(": ");
                int n = 0;
                for (java.util.Map.Entry<String, Integer> e : holders.entrySet()) {
                    held.append(n++ == 0 ? "" : "; ").append(e.getValue()).append(" x ").append(e.getKey());
                }
                held.append('\n');
            }
        }
        sb.append("  bios held outside their pools:\n").append(held.isEmpty() ? "    none\n" : held);
        sb.append("  ").append(kernel.pages().describeState()).append('\n');
        return sb.toString();
    }

    /**
     * Describes a wait on a bio set's bio or vec mempool: the pool, then the set and where its
     * outstanding bios are (a task's pending list, a device, the rescuer's queue).
     */
    static WaitDescriber bioSetPools(Kernel kernel) {
        return what -> {
            if (!(what instanceof Mempool<?> p)) {
                return null;
            }
            for (Component c : kernel.components()) {
                if (c instanceof BioSet bs && (bs.bioPool() == p || bs.vecPool() == p)) {
                    return describeTarget(p, List.of()) + " of " + bs.name() + ", its bios held: " + bs.holders();
                }
            }
            return null;
        };
    }

    /** What a wait target is and who holds it, as far as the kernel objects tell. */
    static String describeTarget(Object what, List<WaitDescriber> describers) {
        for (WaitDescriber d : describers) {
            String s = d.describe(what);
            if (s != null) {
                return s;
            }
        }
        if (what instanceof Mutex m) {
            Task owner = m.owner();
            if (owner == null) {
                return "mutex " + m.name() + " (free)";
            }
            Object ownerWait = owner.waitingOn();
            return "mutex " + m.name() + ", held by " + owner
                    + (ownerWait == null ? "" : " which waits on " + shortName(ownerWait));
        }
        if (what instanceof Mempool<?> p) {
            return p.name() + " (reserve " + p.reserveLevel() + "/" + p.minNr() + ", " + p.outstanding()
                    + " element(s) held outside the pool, waiters " + p.waiters() + ")";
        }
        if (what instanceof Completion c) {
            return c + (c.isDone() ? " (done)" : " (not completed)");
        }
        if (what instanceof PageAllocator pa) {
            return "page allocator: " + pa.describeState();
        }
        return String.valueOf(what);
    }

    private static String shortName(Object what) {
        return what instanceof Mutex m ? "mutex " + m.name() : String.valueOf(what);
    }

    private static String safeDescribe(Component c) {
        try {
            return c.describeState();
        } catch (RuntimeException e) {
            return c.name() + " (describeState failed: " + e + ")";
        }
    }

    /** The top frames of a running thread's stack, JDK frames included (where it really blocks). */
    static List<StackTraceElement> topOfStack(Thread thread) {
        if (thread == null) {
            return List.of();
        }
        StackTraceElement[] stack = thread.getStackTrace();
        return List.of(stack).subList(0, Math.min(stack.length, FRAMES_MAX));
    }

    /** The blkstack frames of a parked thread's stack, without the simulator's own machinery. */
    static List<StackTraceElement> trimmedStack(Thread thread) {
        if (thread == null) {
            return List.of();
        }
        java.util.ArrayList<StackTraceElement> frames = new java.util.ArrayList<>();
        for (StackTraceElement e : thread.getStackTrace()) {
            String c = e.getClassName();
            if (!c.startsWith("io.blkstack.") || c.startsWith(SimScheduler.class.getName())
                    || c.startsWith(SimRunner.class.getName())) {
                continue;
            }
            frames.add(e);
            if (frames.size() == FRAMES_MAX) {
                break;
            }
        }
        return frames;
    }
}
