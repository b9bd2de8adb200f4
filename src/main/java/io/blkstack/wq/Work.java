package io.blkstack.wq;

import io.blkstack.kernel.Task;
import io.blkstack.kernel.Timer;
import java.util.Objects;

/**
 * A unit of deferred work: the kernel's {@code work_struct}.
 *
 * <p>The owner allocates a work item once (usually embedded in a larger object) and queues it as
 * often as it likes; a work item is queued at most once at a time, so every queue in the
 * workqueue layer is bounded by the number of {@code Work} objects. The item carries its own list
 * links (it is intrusive), which is why queueing never allocates and can be done from completion
 * callbacks and timers.
 *
 * <p>Like the kernel's, a work item may be queued again while it runs: the new queueing is
 * pending while the old one runs, and the pool never runs one item on two tasks at once (it is
 * non-reentrant). All mutable state below is guarded by the lock of the {@link WorkerPool} the
 * item is bound to on its first queueing; a work item stays with one kernel for its life.
 */
public class Work {

    private final String name;
    private final Runnable function;

    /** The pool whose lock guards this item; bound on first queueing. */
    volatile WorkerPool pool;
    /** The queue of the pending queueing (or of the armed timer), or null. */
    Workqueue queuedOn;
    /** Queued (or its timer armed) and not yet started. */
    volatile boolean pending;
    /** Links in {@code queuedOn}'s pending list, or in its timer list while the timer is armed. */
    Work pendingPrev;
    Work pendingNext;
    /** The queue's sequence number of the pending queueing (its place in flush order). */
    long pendingSequence;
    /** This item's own number of the pending queueing. */
    long pendingNumber;
    /** How many times this item was queued; the number of the latest queueing. */
    long queueNumber;

    /** The task running this item, or null. */
    volatile Task runner;
    /** The queue the running instance came from. */
    Workqueue runningOn;
    long runningSequence;
    long runningNumber;
    /** Links in {@code runningOn}'s running list. */
    Work runningPrev;
    Work runningNext;

    /** Delayed work only: the timer is armed and the item waits for it. */
    boolean timerArmed;
    /** Delayed work only: bumped whenever the armed timer is disowned, so a late firing is ignored. */
    long timerGeneration;
    /** Delayed work only: the armed timer, once the scheduler returned it. */
    Timer timer;

    /** Creates an idle work item that runs {@code function} when a worker picks it up. */
    public Work(String name, Runnable function) {
        this.name = Objects.requireNonNull(name, "work name");
        this.function = Objects.requireNonNull(function, "work function of " + name);
    }

    /** The item's name, for explanations. */
    public String name() {
        return name;
    }

    /** The function the item runs. */
    Runnable function() {
        return function;
    }

    /** Whether the item is queued (or its delay timer armed) and has not started yet. */
    public boolean isPending() {
        return pending;
    }

    /** Whether some task is running the item right now. */
    public boolean isRunning() {
        return runner != null;
    }

    /**
     * Waits until the last queueing of this item has finished running (the kernel's
     * {@code flush_work}); a delayed item whose timer is armed is queued at once first.
     *
     * @return false if the item was idle (neither pending nor running), true if it waited
     */
    public boolean flush() {
        WorkerPool p = pool;
        return p != null && p.flushWork(this);
    }

    /**
     * Removes the item if it is pending (and disarms its timer if it is delayed); does not wait for
     * a running instance.
     *
     * @return whether the item was pending
     */
    public boolean cancel() {
        WorkerPool p = pool;
        return p != null && p.cancelWork(this, false);
    }

    @Override
    public String toString() {
        return "work " + name;
    }
}
