package io.blkstack.wq;

import io.blkstack.kernel.Task;
import io.blkstack.kernel.Timer;

/**
 * Mayday and rescuers of a {@link WorkerPool}: when work stays runnable with no idle worker, the
 * mayday timer wakes the rescuer of every {@code MEM_RECLAIM} queue with runnable items, and the
 * rescuer runs that queue's items one at a time, at most {@link WorkerPool#RESCUER_BATCH} in a
 * row. One execution context per {@code MEM_RECLAIM} queue is the guarantee, not concurrency:
 * that is what seed 004 turns into an ABBA deadlock.
 */
final class PoolMayday {

    private final WorkerPool pool;

    PoolMayday(WorkerPool pool) {
        this.pool = pool;
    }

    /**
     * Timer context: if work is still runnable and no worker is idle, sends mayday to every
     * {@code MEM_RECLAIM} queue with runnable items and re-arms; otherwise lets the timer lapse.
     */
    void maydayTimeout() {
        pool.lock.lock();
        try {
            pool.maydayArmed = false;
            pool.maydayTimer = null;
            if (pool.stopping || !pool.idle.isEmpty() || !pool.anyRunnableLocked()) {
                return;
            }
            for (int i = 0, n = pool.queues.size(); i < n; i++) {
                Workqueue wq = pool.queues.get(i);
                if (wq.isMemReclaim() && wq.hasRunnableLocked()) {
                    wq.maydayRequested = true;
                    pool.maydays.incrementAndGet();
                    wq.rescuerWait.wakeAll();
                    WorkqueueMaydayEvent event = new WorkqueueMaydayEvent();
                    if (event.shouldCommit()) {
                        event.workqueue = wq.name();
                        event.pool = pool.name;
                        event.commit();
                    }
                }
            }
            pool.maydayArmed = true;
            pool.maydayTimer = pool.kernel.scheduler().addTimer(WorkerPool.MAYDAY_INTERVAL_NANOS, pool.name + " mayday", this::maydayTimeout);
        } finally {
            pool.lock.unlock();
        }
    }

    /**
     * A {@code MEM_RECLAIM} queue's rescuer: on mayday, runs the queue's items one at a time, at
     * most {@link WorkerPool#RESCUER_BATCH} in a row; then yields and goes on only while items remain and no
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
                if (ran < WorkerPool.RESCUER_BATCH) {
                    break; // nothing runnable left for us; wait for the next mayday
                }
                pool.kernel.scheduler().yieldNow(self);
                if (self.stopRequested()) {
                    return;
                }
                pool.lock.lock();
                try {
                    again = pool.idle.isEmpty() && wq.hasRunnableLocked();
                } finally {
                    pool.lock.unlock();
                }
            }
        }
    }

    /** Runs up to {@link WorkerPool#RESCUER_BATCH} items of {@code wq} one after another; returns how many. */
    private int rescueBatch(Task self, Workqueue wq) {
        int ran = 0;
        while (ran < WorkerPool.RESCUER_BATCH) {
            Work work;
            pool.lock.lock();
            try {
                work = wq.claimLocked(self);
                if (work != null) {
                    pool.claims++;
                }
            } finally {
                pool.lock.unlock();
            }
            if (work == null) {
                return ran;
            }
            pool.rescuerRuns.incrementAndGet();
            pool.execute(self, work);
            pool.lock.lock();
            try {
                pool.finishLocked(work);
                pool.kickLocked();
            } finally {
                pool.lock.unlock();
            }
            ran++;
        }
        return ran;
    }
}
