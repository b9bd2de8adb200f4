package io.blkstack.wq;

import io.blkstack.kernel.Task;
import io.blkstack.kernel.Timer;
import java.util.ArrayList;
import java.util.List;

/**
 * Flush and drain on a {@link WorkerPool}: {@link Workqueue#flush} waits until every item queued
 * so far finished, {@link Work#flush} until one item's last queueing did, and
 * {@link Workqueue#close} refuses new items, fires armed timers, waits until the queue is empty and
 * stops its rescuer. Waiters sleep on the pool's done queue (woken whenever an item finishes or is
 * cancelled) and name the item they wait for, for the checker's wait-for explanation. A task that
 * would wait for itself (flushing or closing from inside its own item) is refused with an error.
 */
final class PoolFlush {

    private final WorkerPool pool;

    PoolFlush(WorkerPool pool) {
        this.pool = pool;
    }

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
        pool.lock.lock();
        try {
            target = wq.sequence;
            selfFlush = wq.oldestSequenceLocked() <= target && wq.isRunningOnLocked(self);
        } finally {
            pool.lock.unlock();
        }
        if (selfFlush) {
            throw new IllegalStateException("task " + self + " flushes " + wq + " from one of its own items: it would wait for itself");
        }
        FlushWait what = new FlushWait("flush of " + wq);
        pool.doneWait.waitEvent(() -> queueFlushed(wq, target, what), what);
    }

    /** Whether every item of {@code wq} up to sequence {@code target} finished. */
    private boolean queueFlushed(Workqueue wq, long target, FlushWait what) {
        pool.lock.lock();
        try {
            long oldest = wq.oldestSequenceLocked();
            if (oldest > target) {
                return true;
            }
            what.item = wq.describeInFlightLocked(oldest);
            return false;
        } finally {
            pool.lock.unlock();
        }
    }

    /** {@link Work#flush}: queues an armed delayed item at once, then waits for its last queueing. */
    boolean flushWork(Work work) {
        Task self = Task.current();
        long target;
        Timer timer = null;
        pool.lock.lock();
        try {
            if (!work.pending && work.runner == null) {
                return false;
            }
            if (work.runner == self) {
                throw new IllegalStateException("task " + self + " flushes " + work + " from inside it: it would wait for itself");
            }
            if (work.timerArmed) {
                timer = pool.queueing.fireTimerLocked(work);
                pool.kickLocked();
            }
            target = work.queueNumber;
        } finally {
            pool.lock.unlock();
        }
        if (timer != null) {
            timer.cancel();
        }
        FlushWait what = new FlushWait("flush of " + work);
        pool.doneWait.waitEvent(() -> workFlushed(work, target, what), what);
        return true;
    }

    /** Whether no queueing of {@code work} numbered up to {@code target} is pending or running. */
    private boolean workFlushed(Work work, long target, FlushWait what) {
        pool.lock.lock();
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
            pool.lock.unlock();
        }
    }

    /** {@link Workqueue#close}: refuse outside items, fire armed timers, drain, stop the rescuer. */
    void closeQueue(Workqueue wq) {
        Task self = Task.current();
        List<Timer> timers = new ArrayList<>();
        pool.lock.lock();
        try {
            if (wq.closing) {
                return;
            }
            if (wq.isRunningOnLocked(self)) {
                throw new IllegalStateException("task " + self + " closes " + wq + " from one of its own items");
            }
            wq.closing = true;
            while (wq.timerHead != null) {
                Timer timer = pool.queueing.fireTimerLocked(wq.timerHead);
                if (timer != null) {
                    timers.add(timer);
                }
            }
            pool.kickLocked();
        } finally {
            pool.lock.unlock();
        }
        for (Timer timer : timers) {
            timer.cancel();
        }
        FlushWait what = new FlushWait("drain of " + wq);
        pool.doneWait.waitEvent(() -> queueDrained(wq, what), what);
        Task rescuer = wq.rescuer;
        if (rescuer != null) {
            rescuer.requestStop();
            wq.rescuerWait.wakeAll();
            pool.kernel.scheduler().join(rescuer);
        }
        pool.lock.lock();
        try {
            wq.closed = true;
            pool.queues.remove(wq);
        } finally {
            pool.lock.unlock();
        }
    }

    /** Whether {@code wq} has nothing pending, running or waiting for a timer. */
    private boolean queueDrained(Workqueue wq, FlushWait what) {
        pool.lock.lock();
        try {
            if (wq.isDrainedLocked()) {
                return true;
            }
            long oldest = wq.oldestSequenceLocked();
            what.item = oldest == Long.MAX_VALUE ? wq.timerCount + " delayed item(s) whose timer is armed"
                    : wq.describeInFlightLocked(oldest);
            return false;
        } finally {
            pool.lock.unlock();
        }
    }
}
