package io.blkstack.wq;

import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.WaitQueue;
import java.util.Objects;

/**
 * A named queue of work items that run on the kernel's shared {@link WorkerPool}: the kernel's
 * {@code workqueue_struct} (with its one {@code pool_workqueue}).
 *
 * <p>At most {@link #maxActive} items of one queue run at once; the others wait in the queue's
 * pending list in FIFO order (the kernel's inactive items). The pending list is intrusive and a
 * work item is queued at most once at a time, so the queue never grows beyond the number of
 * {@link Work} objects (rule 5 of DESIGN.md section 1).
 *
 * <p>A {@link #MEM_RECLAIM} queue owns one rescuer task, created up front so that it exists when
 * memory is short. When the pool cannot create a worker within the mayday timeout, the pool sends
 * mayday and the rescuer runs this queue's items itself, one at a time. That is a guarantee of one
 * execution context, not of concurrency: an item run by the rescuer that waits for another item of
 * the same queue waits forever, which is the ABBA deadlock of seed {@code 004_*} (rule 4).
 *
 * <p>All mutable state is guarded by the pool's lock; the counts read without it are volatile.
 */
public final class Workqueue implements Component {

    /** The queue may be needed to free memory: it gets a rescuer. */
    public static final int MEM_RECLAIM = 1;

    /** The largest {@code maxActive} accepted, as the kernel's {@code WQ_MAX_ACTIVE}. */
    public static final int MAX_ACTIVE_LIMIT = 512;

    private static final int KNOWN_FLAGS = MEM_RECLAIM;

    private final Kernel kernel;
    private final WorkerPool pool;
    private final String name;
    private final int flags;
    private final int maxActive;

    // Pending items in queueing (and so sequence) order; guarded by the pool lock.
    Work pendingHead;
    Work pendingTail;
    volatile int pendingCount;
    // Running items, unordered; guarded by the pool lock.
    Work runningHead;
    volatile int activeCount;
    // Delayed items whose timer is armed; guarded by the pool lock.
    Work timerHead;
    int timerCount;

    /** Sequence number of the latest queueing; flush waits for everything up to a value of it. */
    long sequence;
    long started;
    long completed;
    long cancelled;
    boolean closing;
    boolean closed;

    /** Set by the pool's mayday timer, cleared by the rescuer when it starts rescuing. */
    volatile boolean maydayRequested;
    final WaitQueue rescuerWait;
    volatile Task rescuer;
    final String rescuerIdleWhat;

    private Workqueue(Kernel kernel, WorkerPool pool, String name, int flags, int maxActive) {
        this.kernel = kernel;
        this.pool = pool;
        this.name = name;
        this.flags = flags;
        this.maxActive = maxActive;
        this.rescuerWait = new WaitQueue("rescuer of wq " + name);
        this.rescuerIdleWhat = "rescuer of wq " + name + " idle";
    }

    /**
     * Creates a workqueue on the kernel's worker pool and registers it with the kernel; a
     * {@link #MEM_RECLAIM} queue gets its rescuer task now.
     */
    public static Workqueue create(Kernel kernel, String name, int flags, int maxActive) {
        Objects.requireNonNull(kernel, "kernel");
        Objects.requireNonNull(name, "workqueue name");
        if ((flags & ~KNOWN_FLAGS) != 0) {
            throw new IllegalArgumentException("workqueue " + name + ": unknown flags 0x" + Integer.toHexString(flags));
        }
        if (maxActive < 1 || maxActive > MAX_ACTIVE_LIMIT) {
            throw new IllegalArgumentException("workqueue " + name + ": maxActive " + maxActive
                    + " outside 1.." + MAX_ACTIVE_LIMIT);
        }
        WorkerPool pool = WorkerPool.of(kernel);
        Workqueue wq = new Workqueue(kernel, pool, name, flags, maxActive);
        pool.addQueue(wq);
        if (wq.isMemReclaim()) {
            try {
                wq.rescuer = kernel.spawn("rescuer/" + name, TaskKind.RESCUER, () -> pool.runRescuer(wq));
            } catch (RuntimeException e) {
                pool.removeQueue(wq);
                throw e;
            }
        }
        kernel.register(wq);
        return wq;
    }

    /**
     * Queues {@code work} (the kernel's {@code queue_work}). Never blocks, so completion callbacks
     * and timers may call it.
     *
     * @return false if the item was already pending (or the queue is closed, which is a misuse)
     */
    public boolean queue(Work work) {
        Objects.requireNonNull(work, "work");
        return pool.queue(this, work);
    }

    /**
     * Queues {@code work} after {@code delayNanos} of kernel time (the kernel's
     * {@code queue_delayed_work}); a zero delay queues at once.
     *
     * @return false if the item was already pending (or its timer already armed)
     */
    public boolean queueDelayed(DelayedWork work, long delayNanos) {
        Objects.requireNonNull(work, "work");
        if (delayNanos < 0) {
            throw new IllegalArgumentException("wq " + name + ": negative delay " + delayNanos + " ns for " + work.name());
        }
        return pool.queueDelayed(this, work, delayNanos);
    }

    /**
     * Waits until every item queued before the call has finished (the kernel's
     * {@code flush_workqueue}). Items queued later, and delayed items whose timer has not fired, are
     * not waited for.
     */
    public void flush() {
        pool.flushQueue(this);
    }

    /**
     * Drains and destroys the queue (the kernel's {@code destroy_workqueue}): stops accepting
     * items from outside (its own items may still chain more), queues armed delayed items at once,
     * waits until everything ran, then stops the rescuer.
     */
    @Override
    public void close() {
        WorkerPool.asTask(kernel, "close wq " + name, () -> pool.closeQueue(this));
        kernel.unregister(this);
    }

    @Override
    public String name() {
        return name;
    }

    public int maxActive() {
        return maxActive;
    }

    public boolean isMemReclaim() {
        return (flags & MEM_RECLAIM) != 0;
    }

    /** Items queued and not yet started (delayed items with an armed timer not included). */
    public int pendingCount() {
        return pendingCount;
    }

    /** Items running now (each counts against {@link #maxActive}). */
    public int activeCount() {
        return activeCount;
    }

    /** The rescuer task, or null for a queue without {@link #MEM_RECLAIM}. */
    public Task rescuer() {
        return rescuer;
    }

    /** The queue's contents for the checker: pending items in order, running items and their tasks. */
    @Override
    public String describeState() {
        return pool.describeQueue(this);
    }

    /** Changes whenever an item is queued, started, finished or cancelled (not on mayday retries). */
    @Override
    public long fingerprint() {
        return pool.fingerprintQueue(this);
    }

    // ---- list operations; every one runs under the pool lock ---------------------------------

    /** Whether an item could start now: room under maxActive and a pending item not running. */
    boolean hasRunnableLocked() {
        if (activeCount >= maxActive) {
            return false;
        }
        for (Work w = pendingHead; w != null; w = w.pendingNext) {
            if (w.runner == null) {
                return true;
            }
        }
        return false;
    }

    /**
     * Takes the first pending item that is not running elsewhere (items are non-reentrant), if
     * maxActive allows, and marks it running on {@code runner}.
     */
    Work claimLocked(Task runner) {
        if (activeCount >= maxActive) {
            return null;
        }
        Work w = pendingHead;
        while (w != null && w.runner != null) {
            w = w.pendingNext;
        }
        if (w == null) {
            return null;
        }
        unlinkPendingLocked(w);
        w.pending = false;
        w.queuedOn = null;
        w.runner = runner;
        w.runningOn = this;
        w.runningSequence = w.pendingSequence;
        w.runningNumber = w.pendingNumber;
        w.runningPrev = null;
        w.runningNext = runningHead;
        if (runningHead != null) {
            runningHead.runningPrev = w;
        }
        runningHead = w;
        activeCount++;
        started++;
        if (activeCount > maxActive) {
            throw new IllegalStateException("wq " + name + ": " + activeCount + " active items exceed maxActive " + maxActive);
        }
        return w;
    }

    /** Ends the running instance of {@code w}. */
    void finishLocked(Work w) {
        if (w.runningOn != this) {
            throw new IllegalStateException(w + " finishes on wq " + name + " but runs on " + w.runningOn);
        }
        if (w.runningPrev == null) {
            runningHead = w.runningNext;
        } else {
            w.runningPrev.runningNext = w.runningNext;
        }
        if (w.runningNext != null) {
            w.runningNext.runningPrev = w.runningPrev;
        }
        w.runningPrev = null;
        w.runningNext = null;
        w.runningOn = null;
        w.runner = null;
        activeCount--;
        completed++;
        if (activeCount < 0) {
            throw new IllegalStateException("wq " + name + ": negative active count " + activeCount);
        }
    }

    /** Appends a pending item, giving it the next sequence number. */
    void enqueueLocked(Work w) {
        w.queuedOn = this;
        w.pendingSequence = ++sequence;
        w.pendingNumber = w.queueNumber;
        w.pendingNext = null;
        w.pendingPrev = pendingTail;
        if (pendingTail == null) {
            pendingHead = w;
        } else {
            pendingTail.pendingNext = w;
        }
        pendingTail = w;
        pendingCount++;
    }

    /** Removes a pending item from the pending list. */
    void unlinkPendingLocked(Work w) {
        if (w.pendingPrev == null) {
            pendingHead = w.pendingNext;
        } else {
            w.pendingPrev.pendingNext = w.pendingNext;
        }
        if (w.pendingNext == null) {
            pendingTail = w.pendingPrev;
        } else {
            w.pendingNext.pendingPrev = w.pendingPrev;
        }
        w.pendingPrev = null;
        w.pendingNext = null;
        pendingCount--;
        if (pendingCount < 0) {
            throw new IllegalStateException("wq " + name + ": negative pending count " + pendingCount);
        }
    }

    /** Adds a delayed item whose timer is being armed to the timer list (reusing the pending links). */
    void linkTimerLocked(Work w) {
        w.queuedOn = this;
        w.pendingPrev = null;
        w.pendingNext = timerHead;
        if (timerHead != null) {
            timerHead.pendingPrev = w;
        }
        timerHead = w;
        timerCount++;
    }

    /** Removes a delayed item from the timer list. */
    void unlinkTimerLocked(Work w) {
        if (w.pendingPrev == null) {
            timerHead = w.pendingNext;
        } else {
            w.pendingPrev.pendingNext = w.pendingNext;
        }
        if (w.pendingNext != null) {
            w.pendingNext.pendingPrev = w.pendingPrev;
        }
        w.pendingPrev = null;
        w.pendingNext = null;
        timerCount--;
    }

    /** Whether {@code task} is running an item of this queue (a flush from there would wait for itself). */
    boolean isRunningOnLocked(Task task) {
        for (Work w = runningHead; w != null; w = w.runningNext) {
            if (w.runner == task) {
                return true;
            }
        }
        return false;
    }

    /** The smallest queue sequence number still in flight (pending or running), or Long.MAX_VALUE. */
    long oldestSequenceLocked() {
        long oldest = pendingHead == null ? Long.MAX_VALUE : pendingHead.pendingSequence;
        for (Work w = runningHead; w != null; w = w.runningNext) {
            oldest = Math.min(oldest, w.runningSequence);
        }
        return oldest;
    }

    /** Names the in-flight item with sequence number {@code sequenceNumber}, for a flush's explanation. */
    String describeInFlightLocked(long sequenceNumber) {
        for (Work w = runningHead; w != null; w = w.runningNext) {
            if (w.runningSequence == sequenceNumber) {
                return w.name() + " (running on " + w.runner + ")";
            }
        }
        if (pendingHead != null && pendingHead.pendingSequence == sequenceNumber) {
            return pendingHead.name() + " (pending, " + activeCount + "/" + maxActive + " active)";
        }
        return "#" + sequenceNumber;
    }

    /** Whether nothing is pending, running or waiting for its timer. */
    boolean isDrainedLocked() {
        return pendingHead == null && runningHead == null && timerHead == null;
    }

    /** Whether {@code task} may queue here now: open, or draining and {@code task} runs one of its items. */
    boolean acceptsLocked(Task task) {
        return !closed && (!closing || (task != null && isRunningOnLocked(task)));
    }

    @Override
    public String toString() {
        return "wq " + name;
    }
}
