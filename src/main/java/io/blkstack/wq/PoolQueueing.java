package io.blkstack.wq;

import io.blkstack.kernel.Task;
import io.blkstack.kernel.Timer;

/**
 * Queueing on a {@link WorkerPool}: binds a work item to its pool, puts it on its queue's pending
 * list and kicks a runner ({@link Workqueue#queue}); arms, fires and disowns the timers of delayed
 * items ({@link Workqueue#queueDelayed}); and cancels pending or delayed items ({@link Work#cancel},
 * {@link DelayedWork#cancelTimer}). Nothing here blocks or creates a worker, so queueing is safe
 * from completion callbacks and timers (rule 2 of DESIGN.md section 1). Every field it touches is
 * the pool's, under the pool's spin lock.
 */
final class PoolQueueing {

    private final WorkerPool pool;

    PoolQueueing(WorkerPool pool) {
        this.pool = pool;
    }

    /** Binds a work item to this pool on its first queueing; a work item stays with one kernel. */
    private void bindLocked(Work work) {
        WorkerPool bound = work.pool;
        if (bound == null) {
            work.pool = pool;
        } else if (bound != pool) {
            throw new IllegalArgumentException(work + " belongs to " + bound.name + ", not " + pool.name);
        }
    }

    /** {@link Workqueue#queue}: appends the item and kicks a worker or the manager. */
    boolean queue(Workqueue wq, Work work) {
        Task self = Task.current();
        boolean rejected;
        pool.lock.lock();
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
                pool.kickLocked();
            }
        } finally {
            pool.lock.unlock();
        }
        if (rejected) {
            pool.kernel.reportMisuse(self, "queue of " + work.name() + " on " + wq + " after close");
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
        pool.lock.lock();
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
            pool.lock.unlock();
        }
        if (generation < 0) {
            pool.kernel.reportMisuse(self, "delayed queue of " + work.name() + " on " + wq + " after close");
            return false;
        }
        Timer timer = pool.kernel.scheduler().addTimer(delayNanos, "delayed " + work.name(), () -> timerFired(work, generation));
        boolean disowned;
        pool.lock.lock();
        try {
            disowned = !(work.timerArmed && work.timerGeneration == generation);
            if (!disowned) {
                work.timer = timer;
            }
        } finally {
            pool.lock.unlock();
        }
        if (disowned) {
            timer.cancel(); // cancelled (or flushed) between arming and here; a late firing is ignored anyway
        }
        return true;
    }

    /** Timer context: queues a delayed item whose timer is still its own. */
    private void timerFired(Work work, long generation) {
        pool.lock.lock();
        try {
            if (pool.stopping || !work.timerArmed || work.timerGeneration != generation) {
                return;
            }
            fireTimerLocked(work);
            pool.kickLocked();
        } finally {
            pool.lock.unlock();
        }
    }

    /** Moves a delayed item from its queue's timer list to its pending list; returns its timer. */
    Timer fireTimerLocked(Work work) {
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
        pool.lock.lock();
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
            pool.lock.unlock();
        }
        if (timer != null) {
            timer.cancel();
        }
        if (wasPending) {
            pool.doneWait.wakeAll();
        }
        return wasPending;
    }
}
