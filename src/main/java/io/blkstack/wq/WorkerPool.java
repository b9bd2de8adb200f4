package io.blkstack.wq;

import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.KernelSlot;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.Timer;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.mem.Gfp;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The workers shared by every workqueue of one kernel: the kernel's {@code worker_pool}.
 *
 * <p><b>Workers on demand.</b> Work items run on workers (tasks of kind {@link TaskKind#WORKER}).
 * Queueing wakes an idle worker; if there is none, it asks the pool's <em>manager</em> task to
 * create one. Queueing itself never creates a worker, so it never blocks and may be called from
 * completion callbacks and timers (rule 2 of DESIGN.md section 1). Creating a worker costs
 * {@link #WORKER_PAGES} pages, allocated with {@code KERNEL|NORETRY} so that under pressure it
 * fails instead of waiting forever, and the fault site {@code worker-create} can make it fail. A
 * failed creation is retried after {@link #CREATE_COOLDOWN_NANOS}. At most {@link #WORKERS_MAX}
 * workers exist; a worker idle for {@link #IDLE_TIMEOUT_NANOS} exits, except the last one.
 *
 * <p><b>Mayday.</b> When work is runnable and no worker is idle, the pool arms its mayday timer
 * ({@link #MAYDAY_INITIAL_NANOS}, then every {@link #MAYDAY_INTERVAL_NANOS} while the condition
 * holds). When it fires with work still runnable and no idle worker, it sends mayday to every
 * {@code MEM_RECLAIM} queue with runnable items; that queue's rescuer runs them one at a time, at
 * most {@link #RESCUER_BATCH} in a row before it yields and checks again. Work of a queue without
 * a rescuer waits until a worker can be created: that is the difference {@code MEM_RECLAIM} makes.
 *
 * <p>One spin lock guards the pool, its workqueues and every work item bound to it (the kernel's
 * {@code pool->lock}). It is never held across a sleep, an allocation that may block, a spawn or
 * a work function.
 *
 * <p><b>Where the parts live.</b> This class owns the pool's state, its creation (one per kernel,
 * in a {@link KernelSlot}), dispatch (kicking a runner, claiming the next item round-robin, running
 * it) and shutdown. The rest works on that state under the same lock, one file per seam:
 * {@link PoolQueueing} (queue, delayed timers, cancel), {@link PoolFlush} (flush and drain),
 * {@link PoolWorkers} (workers and the manager), {@link PoolMayday} (mayday and rescuers) and
 * {@link PoolDescription} (what the checker and the watchdog read).
 */
public final class WorkerPool implements Component {

    /** Most workers a pool runs at once. */
    public static final int WORKERS_MAX = 64;
    /** Pages a worker holds for its life: its charge to the kernel's memory budget. */
    public static final int WORKER_PAGES = 2;
    /** An idle worker exits after this long, unless it is the last one. */
    public static final long IDLE_TIMEOUT_NANOS = 5_000_000_000L;
    /** First mayday after work became runnable with no idle worker (the kernel's MAYDAY_INITIAL_TIMEOUT). */
    public static final long MAYDAY_INITIAL_NANOS = 10_000_000L;
    /** Mayday repeats this often while the condition holds (the kernel's MAYDAY_INTERVAL). */
    public static final long MAYDAY_INTERVAL_NANOS = 100_000_000L;
    /** The manager waits this long after a failed creation before it tries again. */
    public static final long CREATE_COOLDOWN_NANOS = 100_000_000L;
    /** Items a rescuer runs in a row before it yields and checks again. */
    public static final int RESCUER_BATCH = 16;
    /** Allocation flags for a worker's pages: may reclaim, but fails instead of waiting forever. */
    public static final int CREATE_GFP = Gfp.KERNEL | Gfp.NORETRY;
    /** The fault site that makes a worker creation fail. */
    public static final String FAULT_SITE = "worker-create";

    /** Each kernel's pool; lookups after the first need no lock and no kernel task. */
    private static final KernelSlot<WorkerPool> SLOT = KernelSlot.of("worker pool", WorkerPool::create);

    final Kernel kernel;
    final String name;
    final SpinLock lock;
    final WaitQueue managerWait;
    /** Flushers and drainers wait here; woken whenever an item finishes or is cancelled. */
    final WaitQueue doneWait;
    final AtomicLong maydays;
    final AtomicLong rescuerRuns;
    final AtomicLong createFailures;
    final AtomicLong workersCreated;
    final String managerIdleWhat;
    final String managerCooldownWhat;
    // The parts of the pool, one file each; all work on the fields above, under its lock.
    final PoolQueueing queueing = new PoolQueueing(this);
    final PoolFlush flushing = new PoolFlush(this);
    final PoolWorkers staff = new PoolWorkers(this);
    final PoolMayday mayday = new PoolMayday(this);
    final PoolDescription description = new PoolDescription(this);

    // Guarded by lock.
    final List<Workqueue> queues = new ArrayList<>();
    final List<Worker> workers = new ArrayList<>(WORKERS_MAX);
    final List<Worker> idle = new ArrayList<>(WORKERS_MAX);
    int queueCursor;
    int workerIds;
    long workerExits;
    long claims;
    Timer maydayTimer;
    boolean maydayArmed;
    volatile boolean managerKicked;
    volatile boolean stopping;
    volatile Task manager;

    private WorkerPool(Kernel kernel) {
        this.kernel = kernel;
        this.name = "worker pool " + kernel.name();
        this.lock = new SpinLock(name);
        this.managerWait = new WaitQueue(name + " manager");
        this.doneWait = new WaitQueue(name + " work done");
        this.maydays = kernel.counters().get("wq.maydays");
        this.rescuerRuns = kernel.counters().get("wq.rescuer-runs");
        this.createFailures = kernel.counters().get("wq.worker-create-failures");
        this.workersCreated = kernel.counters().get("wq.workers-created");
        this.managerIdleWhat = name + " manager idle";
        this.managerCooldownWhat = name + " manager cooling down after a failed worker creation";
    }

    /**
     * The kernel's pool, created, registered with the kernel and started on first use. Registration
     * happens while the pool is created, before anyone can see it, so every workqueue registers
     * after it and the kernel closes the queues before the pool.
     */
    public static WorkerPool of(Kernel kernel) {
        Objects.requireNonNull(kernel, "kernel");
        return kernel.state(SLOT);
    }

    /** Creates, registers and starts a kernel's pool; runs once per kernel, from {@link Kernel#state}. */
    private static WorkerPool create(Kernel kernel) {
        WorkerPool fresh = new WorkerPool(kernel);
        kernel.register(fresh);
        fresh.start();
        return fresh;
    }

    /** Starts the manager task; a kick that came before it is kept in {@code managerKicked}. */
    private void start() {
        manager = kernel.spawn("kworker/manager", TaskKind.WORKER, staff::runManager);
    }

    /** Runs {@code body} as a kernel task: the calling one, or a temporary attachment if it has none. */
    static void asTask(Kernel kernel, String taskName, Runnable body) {
        if (Task.currentOrNull() != null) {
            body.run();
            return;
        }
        Kernel.Attachment attachment = kernel.attach(taskName);
        try {
            body.run();
        } finally {
            attachment.close();
        }
    }

    @Override
    public String name() {
        return name;
    }

    /** Workers alive now (idle or busy). */
    public int workerCount() {
        lock.lock();
        try {
            return workers.size();
        } finally {
            lock.unlock();
        }
    }

    // ---- queues ------------------------------------------------------------------------------

    /** Adds a new workqueue to the pool. */
    void addQueue(Workqueue wq) {
        asTask(kernel, "create wq " + wq.name(), () -> {
            lock.lock();
            try {
                if (stopping) {
                    throw new IllegalStateException(name + " is closed; cannot add " + wq);
                }
                queues.add(wq);
            } finally {
                lock.unlock();
            }
        });
    }

    /** Removes a workqueue that failed to start. */
    void removeQueue(Workqueue wq) {
        asTask(kernel, "remove wq " + wq.name(), () -> {
            lock.lock();
            try {
                queues.remove(wq);
            } finally {
                lock.unlock();
            }
        });
    }

    // ---- dispatch ----------------------------------------------------------------------------

    /** Whether any queue has an item that could start now. */
    boolean anyRunnableLocked() {
        for (int i = 0, n = queues.size(); i < n; i++) {
            if (queues.get(i).hasRunnableLocked()) {
                return true;
            }
        }
        return false;
    }

    /**
     * Makes sure runnable work gets a runner: kicks an idle worker that is not kicked yet; with no
     * idle worker, kicks the manager and arms the mayday timer. Never blocks.
     */
    void kickLocked() {
        if (stopping || !anyRunnableLocked()) {
            return;
        }
        for (int i = 0, n = idle.size(); i < n; i++) {
            Worker w = idle.get(i);
            if (!w.kicked) {
                w.kicked = true;
                w.idleWait.wakeAll();
                return;
            }
        }
        if (!idle.isEmpty()) {
            return; // every idle worker is already on its way; the first to claim kicks again
        }
        if (workers.size() < WORKERS_MAX) {
            managerKicked = true;
            managerWait.wakeAll();
        }
        if (!maydayArmed) {
            maydayArmed = true;
            maydayTimer = kernel.scheduler().addTimer(MAYDAY_INITIAL_NANOS, name + " mayday", mayday::maydayTimeout);
        }
    }

    /** Whether the manager should create a worker now. */
    boolean needToCreateLocked() {
        return !stopping && idle.isEmpty() && workers.size() < WORKERS_MAX && anyRunnableLocked();
    }

    /** Takes the next runnable item, visiting the queues round-robin. */
    Work claimAnyLocked(Task runner) {
        int n = queues.size();
        for (int i = 0; i < n; i++) {
            int index = (queueCursor + i) % n;
            Work work = queues.get(index).claimLocked(runner);
            if (work != null) {
                queueCursor = (index + 1) % n;
                claims++;
                return work;
            }
        }
        return null;
    }

    /** Ends a running item and wakes flushers. */
    void finishLocked(Work work) {
        work.runningOn.finishLocked(work);
        doneWait.wakeAll();
    }

    /** Runs one item's function in normal context; a throwing item is reported and the runner goes on. */
    void execute(Task self, Work work) {
        try {
            work.function().run();
        } catch (RuntimeException e) {
            // Errors (and the simulator's teardown signal) end the runner instead.
            kernel.reportFault(self, e);
        }
        if (!self.mayBlock()) {
            kernel.reportMisuse(self, work + " returned in atomic context or holding a spin lock");
        }
        if (self.inNoio()) {
            kernel.reportMisuse(self, work + " returned inside a noio scope");
        }
    }


    // ---- entry points of the package: each part owns its logic ------------------------------

    /** {@link Workqueue#queue}; see {@link PoolQueueing}. */
    boolean queue(Workqueue wq, Work work) {
        return queueing.queue(wq, work);
    }

    /** {@link Workqueue#queueDelayed}; see {@link PoolQueueing}. */
    boolean queueDelayed(Workqueue wq, DelayedWork work, long delayNanos) {
        return queueing.queueDelayed(wq, work, delayNanos);
    }

    /** {@link Work#cancel} and {@link DelayedWork#cancelTimer}; see {@link PoolQueueing}. */
    boolean cancelWork(Work work, boolean timerOnly) {
        return queueing.cancelWork(work, timerOnly);
    }

    /** {@link Workqueue#flush}; see {@link PoolFlush}. */
    void flushQueue(Workqueue wq) {
        flushing.flushQueue(wq);
    }

    /** {@link Work#flush}; see {@link PoolFlush}. */
    boolean flushWork(Work work) {
        return flushing.flushWork(work);
    }

    /** {@link Workqueue#close}; see {@link PoolFlush}. */
    void closeQueue(Workqueue wq) {
        flushing.closeQueue(wq);
    }

    /** The body of a {@code MEM_RECLAIM} queue's rescuer task; see {@link PoolMayday}. */
    void runRescuer(Workqueue wq) {
        mayday.runRescuer(wq);
    }

    /** {@link Workqueue#describeState}; see {@link PoolDescription}. */
    String describeQueue(Workqueue wq) {
        return description.describeQueue(wq);
    }

    /** {@link Workqueue#fingerprint}; see {@link PoolDescription}. */
    long fingerprintQueue(Workqueue wq) {
        return description.fingerprintQueue(wq);
    }

    /** The pool's workers, idle list, manager and mayday state. */
    @Override
    public String describeState() {
        return description.describeState();
    }

    /** Changes when workers come or go or an item is claimed; not on retries or mayday timers. */
    @Override
    public long fingerprint() {
        return description.fingerprint();
    }

    // ---- shutdown ----------------------------------------------------------------------------

    /**
     * Drains any queue still open, stops the manager and every worker (each frees its pages),
     * and cancels the mayday timer.
     */
    @Override
    public void close() {
        asTask(kernel, "close " + name, this::stop);
    }

    private void stop() {
        List<Workqueue> open = new ArrayList<>();
        lock.lock();
        try {
            if (stopping) {
                return;
            }
            open.addAll(queues);
        } finally {
            lock.unlock();
        }
        for (Workqueue wq : open) {
            wq.close();
        }
        Timer timer;
        lock.lock();
        try {
            stopping = true;
            timer = maydayTimer;
            maydayTimer = null;
        } finally {
            lock.unlock();
        }
        if (timer != null) {
            timer.cancel();
        }
        managerWait.wakeAll();
        Task m = manager;
        if (m != null) {
            m.requestStop();
            kernel.scheduler().join(m);
        }
        List<Worker> remaining;
        lock.lock();
        try {
            remaining = new ArrayList<>(workers);
        } finally {
            lock.unlock();
        }
        for (Worker w : remaining) {
            w.idleWait.wakeAll();
        }
        for (Worker w : remaining) {
            Task t = w.task;
            if (t != null) {
                kernel.scheduler().join(t);
            }
        }
        kernel.unregister(this);
    }

    @Override
    public String toString() {
        return name;
    }
}
