package io.blkstack.kernel;

import io.blkstack.mem.PageAllocator;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;

/**
 * One independent block layer: its scheduler and clock, page allocator, policy switches, fault
 * hooks, counters and the components it owns (workqueues, bio sets, devices). Nothing in blkstack
 * is a global singleton, so tests and simulations run many kernels side by side.
 */
public final class Kernel implements AutoCloseable {

    /** How many misuse and crash reports are kept; later ones are counted but dropped. */
    public static final int REPORTS_MAX = 256;

    private final String name;
    private final Scheduler scheduler;
    private final Policies policies;
    private final Faults faults;
    private final Tracer tracer;
    private final Counters counters = new Counters();
    private final AtomicLong taskIds = new AtomicLong();
    private final List<Component> components = new CopyOnWriteArrayList<>();
    private final List<String> misuses = new CopyOnWriteArrayList<>();
    private final List<String> crashes = new CopyOnWriteArrayList<>();
    /**
     * The one object of a type that a layer above keeps per kernel (the worker pool, the thin pool
     * table). Kept here, not in a static, so a kernel that is never closed (a simulated run torn
     * down after a finding) takes everything it owns with it when it becomes unreachable.
     */
    private final ConcurrentHashMap<Class<?>, Object> perKernel = new ConcurrentHashMap<>();
    private final PageAllocator pages;
    private final HungTaskWatchdog watchdog;
    private volatile boolean closed;

    private Kernel(Builder b) {
        this.name = b.name;
        this.scheduler = b.scheduler != null ? b.scheduler : new RealScheduler();
        this.policies = b.policies;
        this.faults = b.faults;
        this.tracer = b.tracer;
        scheduler.bind(this);
        this.pages = new PageAllocator(this, b.memoryBytes);
        this.watchdog = b.watchdogThresholdNanos > 0
                ? new HungTaskWatchdog(this, b.watchdogThresholdNanos, b.watchdogListener, b.watchdogExplainer) : null;
    }

    /** Starts building a kernel with the real scheduler, default policies and no faults. */
    public static Builder builder() {
        return new Builder();
    }

    /**
     * Starts the kernel's own tasks (background reclaim, watchdog). The simulated scheduler calls
     * this from inside its first task; the real one from {@link Builder#build}.
     */
    public void start() {
        pages.start();
        if (watchdog != null) {
            watchdog.start();
        }
    }

    public String name() {
        return name;
    }

    public Scheduler scheduler() {
        return scheduler;
    }

    public Policies policies() {
        return policies;
    }

    public Faults faults() {
        return faults;
    }

    public Tracer tracer() {
        return tracer;
    }

    public Counters counters() {
        return counters;
    }

    /** The page allocator: the whole data-path memory budget of this kernel. */
    public PageAllocator pages() {
        return pages;
    }

    /** Creates a task record; only schedulers call this. */
    public Task newTask(String taskName, TaskKind kind) {
        return new Task(this, taskIds.incrementAndGet(), taskName, kind);
    }

    /** Starts a kernel task. */
    public Task spawn(String taskName, TaskKind kind, Runnable body) {
        if (closed) {
            throw new IllegalStateException("kernel " + name + " is closed; cannot spawn " + taskName);
        }
        return scheduler.spawn(taskName, kind, body);
    }

    /** Makes the calling thread a task of this kernel until the returned handle is closed. */
    public Attachment attach(String taskName) {
        return new Attachment(scheduler.attach(taskName));
    }

    /** A thread's membership in a kernel; closing it detaches the thread. */
    public final class Attachment implements AutoCloseable {
        private final Task task;

        Attachment(Task task) {
            this.task = task;
        }

        public Task task() {
            return task;
        }

        @Override
        public void close() {
            scheduler.detach(task);
        }
    }

    /** Registers a component to be closed with the kernel and inspected by the checker. */
    public void register(Component component) {
        components.add(component);
    }

    /** Removes a component closed early by its owner. */
    public void unregister(Component component) {
        components.remove(component);
    }

    /** The registered components, in registration order. */
    public List<Component> components() {
        return List.copyOf(components);
    }

    /** This kernel's object of {@code type}, or null if none was installed. */
    public <T> T perKernel(Class<T> type) {
        return type.cast(perKernel.get(type));
    }

    /**
     * Installs {@code value} as this kernel's object of {@code type} unless one is already there;
     * returns the one installed (so of two racing callers, both get the winner's).
     */
    public <T> T installPerKernel(Class<T> type, T value) {
        Object previous = perKernel.putIfAbsent(type, type.cast(value));
        return previous == null ? value : type.cast(previous);
    }

    /** Removes {@code value} as this kernel's object of {@code type}, if it is the one installed. */
    public <T> void removePerKernel(Class<T> type, T value) {
        perKernel.remove(type, value);
    }

    /** Records a misuse of a kernel object (blocking in atomic context, double free, leak). */
    public void reportMisuse(Task task, String what) {
        counters.get("misuse").incrementAndGet();
        String line = (task == null ? "-" : task.toString()) + ": " + what;
        if (misuses.size() < REPORTS_MAX) {
            misuses.add(line);
        }
        if (tracer.enabled()) {
            tracer.event(task, "misuse", what);
        }
    }

    /** The misuses reported so far. */
    public List<String> misuses() {
        return List.copyOf(misuses);
    }

    /** Records a task that died of an exception; the task is gone, the kernel goes on. */
    public void reportCrash(Task task, Throwable error) {
        counters.get("task.crashes").incrementAndGet();
        StringBuilder sb = new StringBuilder();
        sb.append("task ").append(task).append(" died: ").append(error);
        StackTraceElement[] stack = error.getStackTrace();
        for (int i = 0; i < Math.min(12, stack.length); i++) {
            sb.append("\n    at ").append(stack[i]);
        }
        if (crashes.size() < REPORTS_MAX) {
            crashes.add(sb.toString());
        }
        if (tracer.enabled()) {
            tracer.event(task, "crash", error.toString());
        }
        if (!scheduler.isSimulated()) {
            System.err.println("blkstack: " + sb);
        }
    }

    /** The crashes reported so far. */
    public List<String> crashes() {
        return List.copyOf(crashes);
    }

    public boolean isClosed() {
        return closed;
    }

    /**
     * Closes components in reverse order, stops the kernel's own tasks, and checks that every page
     * came back to the arena.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        // Closing blocks (joins tasks, waits for in-flight I/O), so the caller must be a task.
        Attachment closer = Task.currentOrNull() == null ? attach("kernel-close") : null;
        Teardown teardown = new Teardown();
        List<Component> reversed = new ArrayList<>(components);
        java.util.Collections.reverse(reversed);
        for (Component c : reversed) {
            teardown.close(c);
        }
        components.clear();
        if (watchdog != null) {
            watchdog.stop();
        }
        teardown.close(pages);
        if (closer != null) {
            closer.close();
        }
        scheduler.close();
        teardown.finish();
    }

    @Override
    public String toString() {
        return "kernel " + name;
    }

    /** Builds a kernel. */
    public static final class Builder {
        private String name = "kernel";
        private long memoryBytes = 64L << 20;
        private Scheduler scheduler;
        private Policies policies = Policies.defaults();
        private Faults faults = Faults.NONE;
        private Tracer tracer = Tracer.NONE;
        private long watchdogThresholdNanos;
        private Consumer<HungTaskWatchdog.Report> watchdogListener = r -> System.err.print(r.describe());
        private java.util.function.Function<Task, String> watchdogExplainer;
        private boolean start = true;

        public Builder name(String value) {
            this.name = value;
            return this;
        }

        /** The page arena's size; rounded down to whole 4 KiB pages. */
        public Builder memory(long bytes) {
            this.memoryBytes = bytes;
            return this;
        }

        public Builder scheduler(Scheduler value) {
            this.scheduler = value;
            return this;
        }

        public Builder policies(Policies value) {
            this.policies = value;
            return this;
        }

        public Builder faults(Faults value) {
            this.faults = value;
            return this;
        }

        public Builder tracer(Tracer value) {
            this.tracer = value;
            return this;
        }

        /** Enables the hung-task watchdog with this threshold. */
        public Builder watchdog(Duration threshold, Consumer<HungTaskWatchdog.Report> listener) {
            this.watchdogThresholdNanos = threshold.toNanos();
            this.watchdogListener = listener;
            return this;
        }

        /**
         * Gives the watchdog an explainer: for a stuck task, the wait-for explanation its report
         * carries (what the wait target is, who holds what the task needs). Runs on the watchdog's
         * task; must not block.
         */
        public Builder watchdogExplainer(java.util.function.Function<Task, String> explainer) {
            this.watchdogExplainer = explainer;
            return this;
        }

        /** Whether {@link #build} starts the kernel's own tasks (the simulator starts them itself). */
        public Builder startTasks(boolean value) {
            this.start = value;
            return this;
        }

        public Kernel build() {
            Kernel kernel = new Kernel(this);
            if (start) {
                kernel.start();
            }
            return kernel;
        }
    }
}
