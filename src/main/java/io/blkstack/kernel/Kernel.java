package io.blkstack.kernel;

import io.blkstack.mem.PageAllocator;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
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
    private final Reserves reserves;
    private final Faults faults;
    private final Tracer tracer;
    private final boolean latencyHistograms;
    private final Counters counters = new Counters();
    /** What memory devices may fill of the Java heap. */
    private final HeapQuota heapQuota;
    private final AtomicLong taskIds = new AtomicLong();
    private final List<Component> components = new CopyOnWriteArrayList<>();
    private final List<String> misuses = new CopyOnWriteArrayList<>();
    private final List<String> crashes = new CopyOnWriteArrayList<>();
    /** Per-kernel state of the layers above, by slot; see {@link KernelSlot}. */
    private final Map<KernelSlot<?>, Object> state = new ConcurrentHashMap<>();
    private final PageAllocator pages;
    private final HungTaskWatchdog watchdog;
    private volatile boolean closed;
    /**
     * Set once every component has closed. Spawning is refused only from then on: a component
     * that is closing may still need a task (a workqueue drained at close needs a worker, and a
     * pool that never ran an item has none yet).
     */
    private volatile boolean componentsClosed;

    private Kernel(Builder b) {
        this.name = b.name;
        this.heapQuota = b.heapQuotaBytes >= 0 ? new HeapQuota(b.heapQuotaBytes) : HeapQuota.ofHeap();
        this.scheduler = b.scheduler != null ? b.scheduler : new RealScheduler();
        this.policies = b.policies;
        this.reserves = b.reserves;
        this.faults = b.faults;
        this.tracer = b.tracer;
        this.latencyHistograms = b.latencyHistograms;
        scheduler.bind(this);
        this.pages = new PageAllocator(this, b.memoryBytes, b.mappedArena);
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

    /** Whether devices keep latency histograms ({@link io.blkstack.block.DeviceStats}). */
    public boolean latencyHistograms() {
        return latencyHistograms;
    }

    /** The reserve sizes components take (YAML {@code reserves:}). */
    public Reserves reserves() {
        return reserves;
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

    /** The heap memory devices may fill with data ({@link HeapQuota}). */
    public HeapQuota heapQuota() {
        return heapQuota;
    }

    /** The page allocator: the whole data-path memory budget of this kernel. */
    public PageAllocator pages() {
        return pages;
    }

    /** Creates a task record; only schedulers call this. */
    public Task newTask(String taskName, TaskKind kind) {
        return new Task(this, taskIds.incrementAndGet(), taskName, kind);
    }

    /** Starts a kernel task; refused once the kernel's components have closed. */
    public Task spawn(String taskName, TaskKind kind, Runnable body) {
        if (componentsClosed) {
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

    /**
     * This kernel's value of {@code slot}, created on first use. Lookups after the first take no
     * lock; the first one per slot creates the value exactly once, even when tasks race. A racer
     * waits on the map's internal bin lock only while the winner's factory runs, which never
     * blocks (the {@link KernelSlot#of} contract), so this is no wait the checker needs to see.
     */
    public <T> T state(KernelSlot<T> slot) {
        Object value = state.get(slot);
        if (value == null) {
            if (closed) {
                throw new IllegalStateException(this + " is closed; no " + slot);
            }
            value = state.computeIfAbsent(slot, s -> s.create(this));
        }
        @SuppressWarnings("unchecked")
        T typed = (T) value;
        return typed;
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
        report(task, error, " died: ");
    }

    /**
     * Records an exception (a bug) that a task caught and contained, going on after it (a device
     * I/O task that failed the bio, a worker, an NBD connection that ended): counted and listed
     * with the crashes.
     */
    public void reportFault(Task task, Throwable error) {
        if (scheduler.tornDown()) {
            return; // as a task that dies of an exception during a simulated run's teardown is not reported
        }
        report(task, error, " met a fault and went on: ");
    }

    private void report(Task task, Throwable error, String what) {
        counters.get("task.crashes").incrementAndGet();
        StringBuilder sb = new StringBuilder();
        sb.append("task ").append(task).append(what).append(error);
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
        componentsClosed = true;
        if (watchdog != null) {
            watchdog.stop();
        }
        checkStateEmpty(teardown);
        teardown.close(pages);
        if (closer != null) {
            closer.close();
        }
        scheduler.close();
        teardown.finish();
    }

    /** After the components closed: every per-kernel table they registered in must be empty. */
    private void checkStateEmpty(Teardown teardown) {
        for (Map.Entry<KernelSlot<?>, Object> e : state.entrySet()) {
            if (e.getValue() instanceof KernelSlot.Owned owned) {
                String left = owned.leftOver();
                if (left != null) {
                    teardown.add(new IllegalStateException(this + " closed with " + e.getKey() + " not empty: " + left));
                }
            }
        }
        state.clear();
    }

    @Override
    public String toString() {
        return "kernel " + name;
    }

    /** Builds a kernel. */
    public static final class Builder {
        private String name = "kernel";
        private long memoryBytes = 64L << 20;
        private boolean mappedArena = true;
        private Scheduler scheduler;
        private Policies policies = Policies.defaults();
        private Reserves reserves = Reserves.DEFAULTS;
        private Faults faults = Faults.NONE;
        private Tracer tracer = Tracer.NONE;
        private long watchdogThresholdNanos;
        private Consumer<HungTaskWatchdog.Report> watchdogListener = r -> System.err.print(r.describe());
        private java.util.function.Function<Task, String> watchdogExplainer;
        private boolean start = true;
        private boolean latencyHistograms = true;
        private long heapQuotaBytes = -1;

        public Builder name(String value) {
            this.name = value;
            return this;
        }

        /** The page arena's size; rounded down to whole 4 KiB pages. */
        public Builder memory(long bytes) {
            this.memoryBytes = bytes;
            return this;
        }

        /** What memory devices may fill of the heap ({@link HeapQuota}); default half the heap. */
        public Builder heapQuota(long bytes) {
            this.heapQuotaBytes = bytes;
            return this;
        }

        /**
         * Whether the page arena may be an anonymous mapping (the default; zeroed lazily by the
         * operating system) or must be direct memory zeroed up front (the plain-JDK path).
         */
        public Builder mappedArena(boolean value) {
            this.mappedArena = value;
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

        public Builder reserves(Reserves value) {
            if (value == null) {
                throw new IllegalArgumentException("reserves: null");
            }
            this.reserves = value;
            return this;
        }

        public Builder faults(Faults value) {
            this.faults = value;
            return this;
        }

        /**
         * Whether devices keep latency histograms (the default). The checker's kernels do not: a
         * run reads no statistics, and three histograms per device were a tenth of a short run's set-up.
         */
        public Builder latencyHistograms(boolean value) {
            this.latencyHistograms = value;
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
