package io.blkstack.kernel;

import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;
import java.util.function.Predicate;

/**
 * The per-thread context of one kernel: the kernel's {@code task_struct}.
 *
 * <p>A task carries what the block layer needs to know about "the current thread": its pending
 * bio lists (through a {@link TaskSlot}), its scoped {@code noio} depth, whether it runs in atomic
 * context (a completion callback or a timer, where blocking is a bug), and what it is waiting on,
 * which the hung-task watchdog and the checker's wait-for explanation read.
 */
public final class Task {

    private static final ThreadLocal<Task> CURRENT = new ThreadLocal<>();

    private final Kernel kernel;
    private final long id;
    private final String name;
    private final TaskKind kind;
    /** {@code name#id}, built once: the simulator's trace names a task at every scheduling step. */
    private final String label;
    private volatile Thread thread;

    /** A pending wake-up (the scheduler's permit). */
    final AtomicBoolean wakeup = new AtomicBoolean();

    /** Scheduler-private state (the simulated scheduler keeps its per-task record here). */
    public Object schedulerState;

    // Intrusive wait-queue links: a task waits on at most one queue at a time.
    WaitQueue queuedOn;
    Task waitNext;
    Task waitPrev;

    // Per-task slots: keys and values side by side, at most TaskSlot.MAX, found by identity.
    private final TaskSlot<?>[] slotKeys = new TaskSlot<?>[TaskSlot.MAX];
    private final Object[] slotValues = new Object[TaskSlot.MAX];
    private int slotCount;
    private final NoioScope noioScope = new NoioScope();
    private final Plug plug = new Plug();
    private int noioDepth;
    private int atomicDepth;
    int spinDepth;

    // What the task waits on, for the watchdog and the checker. Written by the task itself.
    private volatile Object waitingOn;
    private volatile boolean waitIdle;
    private volatile long waitSinceNanos;
    // What the task sleeps on right now: the innermost wait, where waitingOn is the outermost
    // (a mempool's retry that enters reclaim and waits there for pages, a shrinker's wait for
    // write-back inside an allocation's wait). Set only around the scheduler's sleep.
    private volatile Object sleepingOn;
    private volatile boolean stopRequested;
    private volatile boolean exited;
    // Tasks waiting for this one to begin a wait (awaitWait); counted so a wait start costs
    // one volatile read when nobody watches.
    private final WaitQueue waitBegun;
    private final AtomicInteger waitWatchers = new AtomicInteger();

    Task(Kernel kernel, long id, String name, TaskKind kind) {
        this.kernel = kernel;
        this.id = id;
        this.name = name;
        this.kind = kind;
        this.label = name + "#" + id;
        this.waitBegun = new WaitQueue("wait start of " + name);
    }

    /** The task of the calling thread; throws if the thread belongs to no kernel. */
    public static Task current() {
        Task task = CURRENT.get();
        if (task == null) {
            throw new IllegalStateException("thread '" + Thread.currentThread().getName()
                    + "' is not a kernel task: start it with Kernel.spawn or call Kernel.attach first");
        }
        return task;
    }

    /** The task of the calling thread, or null if it belongs to no kernel. */
    public static Task currentOrNull() {
        return CURRENT.get();
    }

    /** Binds this task to the calling thread; schedulers call it first thing in a new thread. */
    public void bindToCurrentThread() {
        if (CURRENT.get() != null) {
            throw new IllegalStateException("thread " + Thread.currentThread().getName()
                    + " is already task " + CURRENT.get());
        }
        if (thread != null && thread != Thread.currentThread()) {
            throw new IllegalStateException("task " + this + " was assigned thread " + thread.getName()
                    + " but binds to " + Thread.currentThread().getName());
        }
        thread = Thread.currentThread();
        CURRENT.set(this);
    }

    /** Records the thread a scheduler created for this task, before starting it, so joins see it. */
    public void assignThread(Thread newThread) {
        if (thread != null) {
            throw new IllegalStateException("task " + this + " already runs on " + thread.getName());
        }
        thread = newThread;
    }

    /** Unbinds the calling thread; the task has exited. */
    public void unbindFromCurrentThread() {
        if (CURRENT.get() != this) {
            throw new IllegalStateException("task " + this + " is not bound to " + Thread.currentThread().getName());
        }
        CURRENT.remove();
        exited = true;
    }

    public Kernel kernel() {
        return kernel;
    }

    public long id() {
        return id;
    }

    public String name() {
        return name;
    }

    public TaskKind kind() {
        return kind;
    }

    public Thread thread() {
        return thread;
    }

    public boolean hasExited() {
        return exited;
    }

    // ---- per-task slots ----------------------------------------------------------------------

    /** Reads a slot owned by a layer above the kernel; null if the task never set it. */
    @SuppressWarnings("unchecked")
    public <T> T get(TaskSlot<T> slot) {
        for (int i = 0, n = slotCount; i < n; i++) {
            if (slotKeys[i] == slot) {
                return (T) slotValues[i];
            }
        }
        return null;
    }

    /** Writes a slot owned by a layer above the kernel; only the task itself writes its slots. */
    public <T> void set(TaskSlot<T> slot, T value) {
        int n = slotCount;
        for (int i = 0; i < n; i++) {
            if (slotKeys[i] == slot) {
                slotValues[i] = value;
                return;
            }
        }
        if (n == TaskSlot.MAX) {
            throw new IllegalStateException("task " + this + " has " + n + " slots, the most there may be; cannot add " + slot);
        }
        slotValues[n] = value;
        slotKeys[n] = slot;
        slotCount = n + 1;
    }

    // ---- scoped noio -------------------------------------------------------------------------

    /**
     * Enters a scope in which no allocation of this task may start I/O (the kernel's
     * {@code memalloc_noio_save}); close the returned scope to leave it. Scopes nest.
     */
    public NoioScope noio() {
        noioDepth++;
        return noioScope;
    }

    /** Whether allocations of this task must not start I/O. */
    public boolean inNoio() {
        return noioDepth > 0;
    }

    /** The scope returned by {@link #noio}; one object per task, so entering allocates nothing. */
    public final class NoioScope implements AutoCloseable {
        @Override
        public void close() {
            if (noioDepth <= 0) {
                throw new IllegalStateException("noio scope closed more often than opened in " + Task.this);
            }
            noioDepth--;
        }
    }

    // ---- plugging -------------------------------------------------------------------------------

    /** The task's plug: device wake-ups held back while it submits a burst ({@link Plug}). */
    public Plug plug() {
        return plug;
    }

    // ---- atomic context ----------------------------------------------------------------------

    /** Enters atomic context (a completion callback, a timer): blocking here is a bug. */
    public void enterAtomic() {
        atomicDepth++;
    }

    /** Leaves atomic context. */
    public void exitAtomic() {
        if (atomicDepth <= 0) {
            throw new IllegalStateException("atomic context left more often than entered in " + this);
        }
        atomicDepth--;
    }

    /** Whether the task may block here: not in atomic context and holding no spin lock. */
    public boolean mayBlock() {
        return atomicDepth == 0 && spinDepth == 0;
    }

    /** Throws unless the task may block; every sleep goes through here. */
    void checkMayBlock(Object what) {
        if (atomicDepth > 0) {
            kernel.reportMisuse(this, "blocking in atomic context (completion callback or timer) on " + what);
            throw new IllegalStateException("task " + this + " blocks in atomic context on " + what);
        }
        if (spinDepth > 0) {
            kernel.reportMisuse(this, "blocking while holding " + spinDepth + " spin lock(s) on " + what);
            throw new IllegalStateException("task " + this + " blocks holding " + spinDepth + " spin lock(s) on " + what);
        }
    }

    // ---- what the task waits on --------------------------------------------------------------

    /**
     * Records that the task begins a logical wait on {@code what} (a pool, a lock, a completion, a
     * queue). The record stays through timed retries, so the watchdog sees a mempool waiter that
     * wakes every five seconds and finds nothing as stuck, which the kernel's detector does not.
     *
     * @param idle true for a worker waiting for work: such a wait owes nothing to anyone
     * @return true if this call started the record and so must end it
     */
    public boolean beginWait(Object what, boolean idle) {
        if (waitingOn != null) {
            return false;
        }
        waitSinceNanos = kernel.scheduler().nanoTime();
        waitIdle = idle;
        waitingOn = what;
        if (waitWatchers.get() > 0) {
            waitBegun.wakeAll();
        }
        return true;
    }

    /**
     * Sleeps until this task is in a logical wait (see {@link #beginWait}) on something that
     * {@code matching} accepts, and returns it; null if {@code timeoutNanos} passes first. For a
     * caller that must act only once another task is blocked (a test that frees what the task waits
     * for, a tool): each wait the task begins wakes it, so it never polls.
     */
    public Object awaitWait(Predicate<Object> matching, long timeoutNanos) {
        Object[] seen = new Object[1];
        BooleanSupplier found = () -> {
            Object what = waitingOn;
            seen[0] = what != null && matching.test(what) ? what : null;
            return seen[0] != null;
        };
        waitWatchers.incrementAndGet();
        try {
            waitBegun.waitEventTimeout(found, waitBegun, timeoutNanos, false);
        } finally {
            waitWatchers.decrementAndGet();
        }
        return seen[0];
    }

    /** Ends the logical wait started by a {@link #beginWait} that returned true. */
    public void endWait(boolean started) {
        if (started) {
            waitingOn = null;
            waitIdle = false;
        }
    }

    /** What the task waits on, or null if it is not waiting. */
    public Object waitingOn() {
        return waitingOn;
    }

    /** Whether the current wait is an idle wait for work. */
    public boolean waitIsIdle() {
        return waitIdle;
    }

    /** When the current wait began, on the kernel's clock. */
    public long waitSinceNanos() {
        return waitSinceNanos;
    }

    // ---- stopping ----------------------------------------------------------------------------

    /** Asks the task to stop (the kernel's {@code kthread_stop}) and wakes it. */
    public void requestStop() {
        stopRequested = true;
        kernel.scheduler().wake(this);
    }

    /** Whether the task was asked to stop; long-running task loops poll it. */
    public boolean stopRequested() {
        return stopRequested;
    }

    // ---- sleeping ----------------------------------------------------------------------------

    /**
     * Sleeps until woken or the timeout passes; the raw primitive under every wait.
     *
     * @return true if woken, false on timeout
     */
    public boolean sleep(Object what, long timeoutNanos) {
        if (this != CURRENT.get()) {
            throw new IllegalStateException("task " + this + " can only sleep on its own thread, not "
                    + Thread.currentThread().getName());
        }
        checkMayBlock(what);
        // A plugged task owes the device tasks their wake-ups; it must not sleep on them.
        plug.flush();
        sleepingOn = what;
        try {
            return kernel.scheduler().sleep(this, timeoutNanos);
        } finally {
            sleepingOn = null;
        }
    }

    /**
     * What the task sleeps on now (the {@code what} of the {@link #sleep} it is in), or null: the
     * innermost of nested waits, where {@link #waitingOn} is the outermost.
     */
    public Object sleepingOn() {
        return sleepingOn;
    }

    /** Sleeps for {@code nanos} of kernel time, ignoring wake-ups. */
    public void sleepFor(long nanos) {
        Scheduler scheduler = kernel.scheduler();
        long deadline = scheduler.nanoTime() + nanos;
        boolean started = beginWait("sleep", false);
        try {
            for (long left = nanos; left > 0; left = deadline - scheduler.nanoTime()) {
                scheduler.prepareToSleep(this);
                sleep("sleep", left);
            }
        } finally {
            endWait(started);
        }
    }

    @Override
    public String toString() {
        return label;
    }
}
