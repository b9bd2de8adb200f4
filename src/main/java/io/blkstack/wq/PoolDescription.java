package io.blkstack.wq;

import io.blkstack.kernel.Task;

/**
 * What a {@link WorkerPool} and its queues look like to the checker and the watchdog: the text of
 * a queue's or the pool's state (pending and running items, workers and what they wait on, the
 * mayday timer, counters), and fingerprints that change only on progress (an item queued, started,
 * finished or cancelled; a worker created or gone), so a livelock shows as unchanged fingerprints.
 */
final class PoolDescription {

    private final WorkerPool pool;

    PoolDescription(WorkerPool pool) {
        this.pool = pool;
    }

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
    String describeState() {
        StringBuilder sb = new StringBuilder(pool.name);
        locked(() -> {
            sb.append(": ").append(pool.workers.size()).append('/').append(WorkerPool.WORKERS_MAX).append(" workers, ")
                    .append(pool.idle.size()).append(" idle, runnable work ").append(pool.anyRunnableLocked() ? "yes" : "no")
                    .append(", mayday timer ").append(pool.maydayArmed ? "armed" : "off")
                    .append(", manager ").append(pool.managerKicked ? "kicked" : "idle");
            for (Worker w : pool.workers) {
                Task t = w.task;
                sb.append("\n  ").append(w).append(w.idle ? " idle" : " busy");
                Object waiting = t == null ? null : t.waitingOn();
                if (waiting != null && !t.waitIsIdle()) {
                    sb.append(" waiting on ").append(waiting);
                }
            }
        });
        sb.append("\n  counters: created ").append(pool.workersCreated.get()).append(", create failures ")
                .append(pool.createFailures.get()).append(", maydays ").append(pool.maydays.get())
                .append(", rescuer runs ").append(pool.rescuerRuns.get());
        return sb.toString();
    }

    /** Changes when workers come or go or an item is claimed; not on retries or mayday timers. */
    long fingerprint() {
        long[] h = new long[1];
        locked(() -> h[0] = mix(mix(pool.workersCreated.get(), pool.workerExits), pool.claims));
        return h[0];
    }

    /** Runs {@code body} under the lock if the caller is a task; otherwise unlocked (best effort, for explanations). */
    private void locked(Runnable body) {
        if (Task.currentOrNull() == null) {
            body.run();
            return;
        }
        pool.lock.lock();
        try {
            body.run();
        } finally {
            pool.lock.unlock();
        }
    }

    private static long mix(long h, long v) {
        return h * 0x9E3779B97F4A7C15L + v;
    }
}
