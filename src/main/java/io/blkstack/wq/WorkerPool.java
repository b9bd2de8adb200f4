package io.blkstack.wq;

import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.Timer;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import io.blkstack.mem.PageAllocator;
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

    private final Kernel kernel;
    private final String name;
    private final SpinLock lock;
    private final WaitQueue managerWait;
    /** Flushers and drainers wait here; woken whenever an item finishes or is cancelled. */
    private final WaitQueue doneWait;
    private final AtomicLong maydays;
    private final AtomicLong rescuerRuns;
    private final AtomicLong createFailures;
    private final AtomicLong workersCreated;
    private final String managerIdleWhat;
    private final String managerCooldownWhat;

    // Guarded by lock.
    private final List<Workqueue> queues = new ArrayList<>();
    private final List<Worker> workers = new ArrayList<>(WORKERS_MAX);
    private final List<Worker> idle = new ArrayList<>(WORKERS_MAX);
    private int queueCursor;
    private int workerIds;
    private long workerExits;
    private long claims;
    private Timer maydayTimer;
    private boolean maydayArmed;
    private volatile boolean managerKicked;
    private volatile boolean stopping;
    private volatile Task manager;

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
     * happens before the pool is published, so every workqueue registers after it and the kernel
     * closes the queues before the pool.
     */
    public static WorkerPool of(Kernel kernel) {
        Objects.requireNonNull(kernel, "kernel");
        WorkerPool current = kernel.perKernel(WorkerPool.class);
        if (current != null) {
            return current;
        }
        if (kernel.isClosed()) {
            throw new IllegalStateException(kernel + " is closed; no worker pool");
        }
        WorkerPool fresh = new WorkerPool(kernel);
        kernel.register(fresh);
        WorkerPool installed = kernel.installPerKernel(WorkerPool.class, fresh);
        if (installed != fresh) {
            kernel.unregister(fresh);
            return installed;
        }
        fresh.start();
        return fresh;
    }

    /** Starts the manager task; a kick that came before it is kept in {@code managerKicked}. */
    private void start() {
        manager = kernel.spawn("kworker/manager", TaskKind.WORKER, this::runManager);
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

    /** Workers waiting for work now. */
    public int idleCount() {
        lock.lock();
        try {
            return idle.size();
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

    /** Binds a work item to this pool on its first queueing; a work item stays with one kernel. */
    private void bindLocked(Work work) {
        WorkerPool bound = work.pool;
        if (bound == null) {
            work.pool = this;
        } else if (bound != this) {
            throw new IllegalArgumentException(work + " belongs to " + bound.name + ", not " + name);
        }
    }

    /** {@link Workqueue#queue}: appends the item and kicks a worker or the manager. */
    boolean queue(Workqueue wq, Work work) {
        Task self = Task.current();
        boolean rejected;
        lock.lock();
        try {
            bindLocked(work);
            if (work.pending) {
                return false;
            }
            rejected = !wq.acceptsLocked(self);
            if (!rejected) {
                work.pending = true;
                work.queueNumber++;
                wq.enqueueLocked(work);
                kickLocked();
            }
        } finally {
            lock.unlock();
        }
        if (rejected) {
            kernel.reportMisuse(self, "queue of " + work.name() + " on " + wq + " after close");
        }
        return !rejected;
    }

    /** {@link Workqueue#queueDelayed}: marks the item pending, then arms its timer. */
    boolean queueDelayed(Workqueue wq, DelayedWork work, long delayNanos) {
        if (delayNanos == 0) {
            return queue(wq, work);
        }
        Task self = Task.current();
        long generation;
        lock.lock();
        try {
            bindLocked(work);
            if (work.pending) {
                return false;
            }
            if (!wq.acceptsLocked(self)) {
                generation = -1;
            } else {
                work.pending = true;
                work.queueNumber++;
                work.timerArmed = true;
                generation = ++work.timerGeneration;
                wq.linkTimerLocked(work);
            }
        } finally {
            lock.unlock();
        }
        if (generation < 0) {
            kernel.reportMisuse(self, "delayed queue of " + work.name() + " on " + wq + " after close");
            return false;
        }
        Timer timer = kernel.scheduler().addTimer(delayNanos, "delayed " + work.name(), () -> timerFired(work, generation));
        boolean disowned;
        lock.lock();
        try {
            disowned = !(work.timerArmed && work.timerGeneration == generation);
            if (!disowned) {
                work.timer = timer;
            }
        } finally {
            lock.unlock();
        }
        if (disowned) {
            timer.cancel(); // cancelled (or flushed) between arming and here; a late firing is ignored anyway
        }
        return true;
    }

    /** Timer context: queues a delayed item whose timer is still its own. */
    private void timerFired(Work work, long generation) {
        lock.lock();
        try {
            if (stopping || !work.timerArmed || work.timerGeneration != generation) {
                return;
            }
            fireTimerLocked(work);
            kickLocked();
        } finally {
            lock.unlock();
        }
    }

    /** Moves a delayed item from its queue's timer list to its pending list; returns its timer. */
    private Timer fireTimerLocked(Work work) {
        Workqueue wq = work.queuedOn;
        wq.unlinkTimerLocked(work);
        work.timerArmed = false;
        work.timerGeneration++;
        Timer timer = work.timer;
        work.timer = null;
        wq.enqueueLocked(work);
        return timer;
    }

    /** {@link Work#cancel} and {@link DelayedWork#cancelTimer}. */
    boolean cancelWork(Work work, boolean timerOnly) {
        Timer timer = null;
        boolean wasPending = false;
        lock.lock();
        try {
            Workqueue wq = work.queuedOn;
            if (work.timerArmed) {
                wq.unlinkTimerLocked(work);
                work.timerArmed = false;
                work.timerGeneration++;
                timer = work.timer;
                work.timer = null;
                wasPending = true;
            } else if (!timerOnly && work.pending) {
                wq.unlinkPendingLocked(work);
                wasPending = true;
            }
            if (wasPending) {
                work.pending = false;
                work.queuedOn = null;
                wq.cancelled++;
            }
        } finally {
            lock.unlock();
        }
        if (timer != null) {
            timer.cancel();
        }
        if (wasPending) {
            doneWait.wakeAll();
        }
        return wasPending;
    }

    // ---- flush and drain ---------------------------------------------------------------------

    /** What a flusher waits for; the text names the item it waits on now. */
    private static final class FlushWait {
        private final String prefix;
        private volatile String item = "?";

        FlushWait(String prefix) {
            this.prefix = prefix;
        }

        @Override
        public String toString() {
            return prefix + " waiting for item " + item;
        }
    }

    /** {@link Workqueue#flush}: waits until every item with a sequence number up to now finished. */
    void flushQueue(Workqueue wq) {
        Task self = Task.current();
        long target;
        boolean selfFlush;
        lock.lock();
        try {
            target = wq.sequence;
            selfFlush = wq.oldestSequenceLocked() <= target && wq.isRunningOnLocked(self);
        } finally {
            lock.unlock();
        }
        if (selfFlush) {
            throw new IllegalStateException("task " + self + " flushes " + wq + " from one of its own items: it would wait for itself");
        }
        FlushWait what = new FlushWait("flush of " + wq);
        doneWait.waitEvent(() -> queueFlushed(wq, target, what), what);
    }

    /** Whether every item of {@code wq} up to sequence {@code target} finished. */
    private boolean queueFlushed(Workqueue wq, long target, FlushWait what) {
        lock.lock();
        try {
            long oldest = wq.oldestSequenceLocked();
            if (oldest > target) {
                return true;
            }
            what.item = wq.describeInFlightLocked(oldest);
            return false;
        } finally {
            lock.unlock();
        }
    }

    /** {@link Work#flush}: queues an armed delayed item at once, then waits for its last queueing. */
    boolean flushWork(Work work) {
        Task self = Task.current();
        long target;
        Timer timer = null;
        lock.lock();
        try {
            if (!work.pending && work.runner == null) {
                return false;
            }
            if (work.runner == self) {
                throw new IllegalStateException("task " + self + " flushes " + work + " from inside it: it would wait for itself");
            }
            if (work.timerArmed) {
                timer = fireTimerLocked(work);
                kickLocked();
            }
            target = work.queueNumber;
        } finally {
            lock.unlock();
        }
        if (timer != null) {
            timer.cancel();
        }
        FlushWait what = new FlushWait("flush of " + work);
        doneWait.waitEvent(() -> workFlushed(work, target, what), what);
        return true;
    }

    /** Whether no queueing of {@code work} numbered up to {@code target} is pending or running. */
    private boolean workFlushed(Work work, long target, FlushWait what) {
        lock.lock();
        try {
            if (work.runner != null && work.runningNumber <= target) {
                what.item = work.name() + " (running on " + work.runner + ")";
                return false;
            }
            if (work.pending && work.pendingNumber <= target) {
                what.item = work.name() + " (pending on " + work.queuedOn + ")";
                return false;
            }
            return true;
        } finally {
            lock.unlock();
        }
    }

    /** {@link Workqueue#close}: refuse outside items, fire armed timers, drain, stop the rescuer. */
    void closeQueue(Workqueue wq) {
        Task self = Task.current();
        List<Timer> timers = new ArrayList<>();
        lock.lock();
        try {
            if (wq.closing) {
                return;
            }
            if (wq.isRunningOnLocked(self)) {
                throw new IllegalStateException("task " + self + " closes " + wq + " from one of its own items");
            }
            wq.closing = true;
            while (wq.timerHead != null) {
                Timer timer = fireTimerLocked(wq.timerHead);
                if (timer != null) {
                    timers.add(timer);
                }
            }
            kickLocked();
        } finally {
            lock.unlock();
        }
        for (Timer timer : timers) {
            timer.cancel();
        }
        FlushWait what = new FlushWait("drain of " + wq);
        doneWait.waitEvent(() -> queueDrained(wq, what), what);
        Task rescuer = wq.rescuer;
        if (rescuer != null) {
            rescuer.requestStop();
            wq.rescuerWait.wakeAll();
            kernel.scheduler().join(rescuer);
        }
        lock.lock();
        try {
            wq.closed = true;
            queues.remove(wq);
        } finally {
            lock.unlock();
        }
    }

    /** Whether {@code wq} has nothing pending, running or waiting for a timer. */
    private boolean queueDrained(Workqueue wq, FlushWait what) {
        lock.lock();
        try {
            if (wq.isDrainedLocked()) {
                return true;
            }
            long oldest = wq.oldestSequenceLocked();
            what.item = oldest == Long.MAX_VALUE ? wq.timerCount + " delayed item(s) whose timer is armed"
                    : wq.describeInFlightLocked(oldest);
            return false;
        } finally {
            lock.unlock();
        }
    }

    // ---- dispatch ----------------------------------------------------------------------------

    /** Whether any queue has an item that could start now. */
    private boolean anyRunnableLocked() {
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
    private void kickLocked() {
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
            maydayTimer = kernel.scheduler().addTimer(MAYDAY_INITIAL_NANOS, name + " mayday", this::maydayTimeout);
        }
    }

    /** Whether the manager should create a worker now. */
    private boolean needToCreateLocked() {
        return !stopping && idle.isEmpty() && workers.size() < WORKERS_MAX && anyRunnableLocked();
    }

    /** Takes the next runnable item, visiting the queues round-robin. */
    private Work claimAnyLocked(Task runner) {
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
    private void finishLocked(Work work) {
        work.runningOn.finishLocked(work);
        doneWait.wakeAll();
    }

    /** Runs one item's function in normal context; a throwing item is reported and the runner goes on. */
    private void execute(Task self, Work work) {
        try {
            work.function().run();
        } catch (RuntimeException e) {
            // Errors (and the simulator's teardown signal) end the runner instead.
            kernel.reportCrash(self, e);
        }
        if (!self.mayBlock()) {
            kernel.reportMisuse(self, work + " returned in atomic context or holding a spin lock");
        }
        if (self.inNoio()) {
            kernel.reportMisuse(self, work + " returned inside a noio scope");
        }
    }

    // ---- workers -----------------------------------------------------------------------------

    private void enterIdleLocked(Worker worker) {
        if (!worker.idle) {
            worker.idle = true;
            worker.idleSinceNanos = kernel.scheduler().nanoTime();
            idle.add(worker);
        }
    }

    private void leaveIdleLocked(Worker worker) {
        if (worker.idle) {
            worker.idle = false;
            idle.remove(worker);
        }
        worker.kicked = false;
    }

    /** Removes an exiting worker from the pool. */
    private void removeWorkerLocked(Worker worker) {
        leaveIdleLocked(worker);
        if (!workers.remove(worker)) {
            throw new IllegalStateException(worker + " exits but is not in " + name);
        }
        workerExits++;
    }

    /** A worker's life: claim and run items until none is runnable, then wait idle for a kick. */
    private void runWorker(Worker worker) {
        Task self = Task.current();
        worker.task = self;
        try {
            Work work = null;
            while (true) {
                long idleTimeout;
                lock.lock();
                try {
                    if (work != null) {
                        finishLocked(work);
                    }
                    leaveIdleLocked(worker);
                    work = claimAnyLocked(self);
                    if (work != null) {
                        kickLocked(); // more runnable work goes to the next idle worker, or the manager
                    } else if (stopping) {
                        removeWorkerLocked(worker);
                        return;
                    } else {
                        enterIdleLocked(worker);
                    }
                    // The last worker waits without a timeout, so an idle pool makes no timer events.
                    idleTimeout = workers.size() > 1 ? IDLE_TIMEOUT_NANOS : -1;
                } finally {
                    lock.unlock();
                }
                if (work != null) {
                    execute(self, work);
                    continue;
                }
                boolean woken = worker.idleWait.waitEventTimeout(() -> worker.kicked || stopping, worker.idleWhat,
                        idleTimeout, true);
                if (!woken && exitIfIdleTooLong(worker)) {
                    return;
                }
            }
        } finally {
            for (Page page : worker.pages) {
                kernel.pages().free(page);
            }
        }
    }

    /** After an idle timeout: leaves the pool unless kicked meanwhile or the last worker. */
    private boolean exitIfIdleTooLong(Worker worker) {
        lock.lock();
        try {
            if (worker.kicked || stopping || workers.size() <= 1) {
                return false;
            }
            removeWorkerLocked(worker);
            return true;
        } finally {
            lock.unlock();
        }
    }

    /** The manager's life: when kicked, create workers while work is runnable and none is idle. */
    private void runManager() {
        while (true) {
            managerWait.waitEventTimeout(() -> managerKicked || stopping, managerIdleWhat, -1, true);
            boolean need;
            lock.lock();
            try {
                if (stopping) {
                    return;
                }
                managerKicked = false;
                need = needToCreateLocked();
            } finally {
                lock.unlock();
            }
            while (need) {
                if (!createWorker()) {
                    createFailures.incrementAndGet();
                    managerWait.waitEventTimeout(() -> stopping, managerCooldownWhat, CREATE_COOLDOWN_NANOS, true);
                }
                lock.lock();
                try {
                    need = needToCreateLocked();
                } finally {
                    lock.unlock();
                }
            }
        }
    }

    /**
     * Creates one worker: charges its pages to the arena (failing rather than waiting), adds it to
     * the pool as idle and kicked, and spawns its task. Returns whether a worker now exists.
     */
    private boolean createWorker() {
        if (kernel.faults().shouldFail(FAULT_SITE)) {
            return false;
        }
        PageAllocator allocator = kernel.pages();
        Page[] pages = new Page[WORKER_PAGES];
        for (int i = 0; i < WORKER_PAGES; i++) {
            pages[i] = allocator.alloc(CREATE_GFP);
            if (pages[i] == null) {
                freePages(pages, i);
                return false;
            }
        }
        Worker worker;
        lock.lock();
        try {
            if (stopping || workers.size() >= WORKERS_MAX) {
                worker = null;
            } else {
                int id = ++workerIds;
                worker = new Worker(id, "kworker/" + id, pages);
                workers.add(worker);
                enterIdleLocked(worker);
                kickLocked();
            }
        } finally {
            lock.unlock();
        }
        if (worker == null) {
            freePages(pages, WORKER_PAGES);
            return false;
        }
        try {
            worker.task = kernel.spawn(worker.name, TaskKind.WORKER, () -> runWorker(worker));
        } catch (RuntimeException e) {
            lock.lock();
            try {
                removeWorkerLocked(worker);
            } finally {
                lock.unlock();
            }
            freePages(pages, WORKER_PAGES);
            return false;
        }
        workersCreated.incrementAndGet();
        return true;
    }

    private void freePages(Page[] pages, int count) {
        for (int i = 0; i < count; i++) {
            kernel.pages().free(pages[i]);
        }
    }

    // ---- mayday and rescuers -----------------------------------------------------------------

    /**
     * Timer context: if work is still runnable and no worker is idle, sends mayday to every
     * {@code MEM_RECLAIM} queue with runnable items and re-arms; otherwise lets the timer lapse.
     */
    private void maydayTimeout() {
        lock.lock();
        try {
            maydayArmed = false;
            maydayTimer = null;
            if (stopping || !idle.isEmpty() || !anyRunnableLocked()) {
                return;
            }
            for (int i = 0, n = queues.size(); i < n; i++) {
                Workqueue wq = queues.get(i);
                if (wq.isMemReclaim() && wq.hasRunnableLocked()) {
                    wq.maydayRequested = true;
                    maydays.incrementAndGet();
                    wq.rescuerWait.wakeAll();
                }
            }
            maydayArmed = true;
            maydayTimer = kernel.scheduler().addTimer(MAYDAY_INTERVAL_NANOS, name + " mayday", this::maydayTimeout);
        } finally {
            lock.unlock();
        }
    }

    /**
     * A {@code MEM_RECLAIM} queue's rescuer: on mayday, runs the queue's items one at a time, at
     * most {@link #RESCUER_BATCH} in a row; then yields and goes on only while items remain and no
     * worker is idle. Running strictly one item at a time is the guarantee (one execution context
     * per queue) and also the limit that seed 004 turns into a deadlock.
     */
    void runRescuer(Workqueue wq) {
        Task self = Task.current();
        while (true) {
            wq.rescuerWait.waitEventTimeout(() -> wq.maydayRequested || self.stopRequested(), wq.rescuerIdleWhat, -1, true);
            if (self.stopRequested()) {
                return;
            }
            wq.maydayRequested = false;
            boolean again = true;
            while (again) {
                int ran = rescueBatch(self, wq);
                if (ran < RESCUER_BATCH) {
                    break; // nothing runnable left for us; wait for the next mayday
                }
                kernel.scheduler().yieldNow(self);
                if (self.stopRequested()) {
                    return;
                }
                lock.lock();
                try {
                    again = idle.isEmpty() && wq.hasRunnableLocked();
                } finally {
                    lock.unlock();
                }
            }
        }
    }

    /** Runs up to {@link #RESCUER_BATCH} items of {@code wq} one after another; returns how many. */
    private int rescueBatch(Task self, Workqueue wq) {
        int ran = 0;
        while (ran < RESCUER_BATCH) {
            Work work;
            lock.lock();
            try {
                work = wq.claimLocked(self);
                if (work != null) {
                    claims++;
                }
            } finally {
                lock.unlock();
            }
            if (work == null) {
                return ran;
            }
            rescuerRuns.incrementAndGet();
            execute(self, work);
            lock.lock();
            try {
                finishLocked(work);
                kickLocked();
            } finally {
                lock.unlock();
            }
            ran++;
        }
        return ran;
    }

    // ---- state for the checker ---------------------------------------------------------------

    /** The most item names an explanation lists per list. */
    private static final int DESCRIBE_ITEMS_MAX = 32;

    /** {@link Workqueue#describeState}. */
    String describeQueue(Workqueue wq) {
        StringBuilder sb = new StringBuilder();
        sb.append("workqueue ").append(wq.name()).append(" (max_active ").append(wq.maxActive())
                .append(wq.isMemReclaim() ? ", MEM_RECLAIM" : "").append(")");
        locked(() -> {
            sb.append(wq.closed ? " closed" : wq.closing ? " draining" : "");
            sb.append(": active ").append(wq.activeCount).append('/').append(wq.maxActive());
            sb.append(", pending ").append(wq.pendingCount).append(" [");
            int shown = 0;
            for (Work w = wq.pendingHead; w != null && shown < DESCRIBE_ITEMS_MAX; w = w.pendingNext, shown++) {
                sb.append(shown == 0 ? "" : ", ").append(w.name());
            }
            if (wq.pendingCount > shown) {
                sb.append(", ... ").append(wq.pendingCount - shown).append(" more");
            }
            sb.append("], running [");
            shown = 0;
            for (Work w = wq.runningHead; w != null && shown < DESCRIBE_ITEMS_MAX; w = w.runningNext, shown++) {
                sb.append(shown == 0 ? "" : ", ").append(w.name()).append(" on ").append(w.runner);
            }
            sb.append("]");
            if (wq.timerCount > 0) {
                sb.append(", ").append(wq.timerCount).append(" delayed item(s) with armed timer");
            }
        });
        Task rescuer = wq.rescuer;
        if (rescuer != null) {
            sb.append(", rescuer ").append(rescuer).append(wq.maydayRequested ? " (mayday pending)" : "");
            Object waiting = rescuer.waitingOn();
            if (waiting != null && !rescuer.waitIsIdle()) {
                sb.append(" waiting on ").append(waiting);
            }
        }
        return sb.toString();
    }

    /** {@link Workqueue#fingerprint}: changes when an item is queued, started, finished or cancelled. */
    long fingerprintQueue(Workqueue wq) {
        long[] h = new long[1];
        locked(() -> h[0] = mix(mix(mix(mix(wq.sequence, wq.started), wq.completed), wq.cancelled), wq.timerCount));
        return h[0];
    }

    /** The pool's workers, idle list, manager and mayday state. */
    @Override
    public String describeState() {
        StringBuilder sb = new StringBuilder(name);
        locked(() -> {
            sb.append(": ").append(workers.size()).append('/').append(WORKERS_MAX).append(" workers, ")
                    .append(idle.size()).append(" idle, runnable work ").append(anyRunnableLocked() ? "yes" : "no")
                    .append(", mayday timer ").append(maydayArmed ? "armed" : "off")
                    .append(", manager ").append(managerKicked ? "kicked" : "idle");
            for (Worker w : workers) {
                Task t = w.task;
                sb.append("\n  ").append(w).append(w.idle ? " idle" : " busy");
                Object waiting = t == null ? null : t.waitingOn();
                if (waiting != null && !t.waitIsIdle()) {
                    sb.append(" waiting on ").append(waiting);
                }
            }
        });
        sb.append("\n  counters: created ").append(workersCreated.get()).append(", create failures ")
                .append(createFailures.get()).append(", maydays ").append(maydays.get())
                .append(", rescuer runs ").append(rescuerRuns.get());
        return sb.toString();
    }

    /** Changes when workers come or go or an item is claimed; not on retries or mayday timers. */
    @Override
    public long fingerprint() {
        long[] h = new long[1];
        locked(() -> h[0] = mix(mix(workersCreated.get(), workerExits), claims));
        return h[0];
    }

    /** Runs {@code body} under the lock if the caller is a task; otherwise unlocked (best effort, for explanations). */
    private void locked(Runnable body) {
        if (Task.currentOrNull() == null) {
            body.run();
            return;
        }
        lock.lock();
        try {
            body.run();
        } finally {
            lock.unlock();
        }
    }

    private static long mix(long h, long v) {
        return h * 0x9E3779B97F4A7C15L + v;
    }

    // ---- shutdown ----------------------------------------------------------------------------

    /**
     * Drains any queue still open, stops the manager and every worker (each frees its pages),
     * cancels the mayday timer and forgets the kernel.
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
        forget();
        kernel.unregister(this);
    }

    /** Removes this pool from its kernel's table. */
    private void forget() {
        kernel.removePerKernel(WorkerPool.class, this);
    }

    @Override
    public String toString() {
        return name;
    }
}
