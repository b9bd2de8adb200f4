package io.blkstack.wq;

import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Page;
import io.blkstack.mem.PageAllocator;

/**
 * The workers of a {@link WorkerPool} and its manager: a worker's life (claim and run items,
 * wait idle for a kick, exit after {@link WorkerPool#IDLE_TIMEOUT_NANOS} idle unless it is the
 * last), and the manager task that creates workers on demand. Creating a worker charges
 * {@link WorkerPool#WORKER_PAGES} pages to the arena with {@link WorkerPool#CREATE_GFP}, so under
 * pressure it fails instead of waiting forever; the manager then cools down for
 * {@link WorkerPool#CREATE_COOLDOWN_NANOS} and the mayday path takes over.
 */
final class PoolWorkers {

    private final WorkerPool pool;

    PoolWorkers(WorkerPool pool) {
        this.pool = pool;
    }

    /** Puts a worker on the idle list, noting since when it waits. */
    private void enterIdleLocked(Worker worker) {
        if (!worker.idle) {
            worker.idle = true;
            worker.idleSinceNanos = pool.kernel.scheduler().nanoTime();
            pool.idle.add(worker);
        }
    }

    /** Takes a worker off the idle list and clears its kick. */
    private void leaveIdleLocked(Worker worker) {
        if (worker.idle) {
            worker.idle = false;
            pool.idle.remove(worker);
        }
        worker.kicked = false;
    }

    /** Removes an exiting worker from the pool. */
    private void removeWorkerLocked(Worker worker) {
        leaveIdleLocked(worker);
        if (!pool.workers.remove(worker)) {
            throw new IllegalStateException(worker + " exits but is not in " + pool.name);
        }
        pool.workerExits++;
    }

    /** A worker's life: claim and run items until none is runnable, then wait idle for a kick. */
    private void runWorker(Worker worker) {
        Task self = Task.current();
        worker.task = self;
        try {
            Work work = null;
            while (true) {
                long idleTimeout;
                pool.lock.lock();
                try {
                    if (work != null) {
                        pool.finishLocked(work);
                    }
                    leaveIdleLocked(worker);
                    work = pool.claimAnyLocked(self);
                    if (work != null) {
                        pool.kickLocked(); // more runnable work goes to the next pool.idle worker, or the pool.manager
                    } else if (pool.stopping) {
                        removeWorkerLocked(worker);
                        return;
                    } else {
                        enterIdleLocked(worker);
                    }
                    // The last worker waits without a timeout, so an idle pool makes no timer events.
                    idleTimeout = pool.workers.size() > 1 ? WorkerPool.IDLE_TIMEOUT_NANOS : -1;
                } finally {
                    pool.lock.unlock();
                }
                if (work != null) {
                    pool.execute(self, work);
                    continue;
                }
                boolean woken = worker.idleWait.waitEventTimeout(() -> worker.kicked || pool.stopping, worker.idleWhat,
                        idleTimeout, true);
                if (!woken && exitIfIdleTooLong(worker)) {
                    return;
                }
            }
        } finally {
            for (Page page : worker.pages) {
                pool.kernel.pages().free(page);
            }
        }
    }

    /** After an idle timeout: leaves the pool unless kicked meanwhile or the last worker. */
    private boolean exitIfIdleTooLong(Worker worker) {
        pool.lock.lock();
        try {
            if (worker.kicked || pool.stopping || pool.workers.size() <= 1) {
                return false;
            }
            removeWorkerLocked(worker);
            return true;
        } finally {
            pool.lock.unlock();
        }
    }

    /** The manager's life: when kicked, create workers while work is runnable and none is idle. */
    void runManager() {
        while (true) {
            pool.managerWait.waitEventTimeout(() -> pool.managerKicked || pool.stopping, pool.managerIdleWhat, -1, true);
            boolean need;
            pool.lock.lock();
            try {
                if (pool.stopping) {
                    return;
                }
                pool.managerKicked = false;
                need = pool.needToCreateLocked();
            } finally {
                pool.lock.unlock();
            }
            while (need) {
                if (!createWorker()) {
                    pool.createFailures.incrementAndGet();
                    pool.managerWait.waitEventTimeout(() -> pool.stopping, pool.managerCooldownWhat, WorkerPool.CREATE_COOLDOWN_NANOS, true);
                }
                pool.lock.lock();
                try {
                    need = pool.needToCreateLocked();
                } finally {
                    pool.lock.unlock();
                }
            }
        }
    }

    /**
     * Creates one worker: charges its pages to the arena (failing rather than waiting), adds it to
     * the pool as idle and kicked, and spawns its task. Returns whether a worker now exists.
     */
    private boolean createWorker() {
        if (pool.kernel.faults().shouldFail(WorkerPool.FAULT_SITE)) {
            return false;
        }
        PageAllocator allocator = pool.kernel.pages();
        Page[] pages = new Page[WorkerPool.WORKER_PAGES];
        for (int i = 0; i < WorkerPool.WORKER_PAGES; i++) {
            pages[i] = allocator.alloc(WorkerPool.CREATE_GFP);
            if (pages[i] == null) {
                freePages(pages, i);
                return false;
            }
        }
        Worker worker;
        pool.lock.lock();
        try {
            if (pool.stopping || pool.workers.size() >= WorkerPool.WORKERS_MAX) {
                worker = null;
            } else {
                int id = ++pool.workerIds;
                worker = new Worker(id, "kworker/" + id, pages);
                pool.workers.add(worker);
                enterIdleLocked(worker);
                pool.kickLocked();
            }
        } finally {
            pool.lock.unlock();
        }
        if (worker == null) {
            freePages(pages, WorkerPool.WORKER_PAGES);
            return false;
        }
        // Counted before the task starts: it may run items (and a caller see them done) before
        // spawn returns here.
        pool.workersCreated.incrementAndGet();
        try {
            worker.task = pool.kernel.spawn(worker.name, TaskKind.WORKER, () -> runWorker(worker));
        } catch (RuntimeException e) {
            pool.workersCreated.decrementAndGet();
            pool.lock.lock();
            try {
                removeWorkerLocked(worker);
                // The worker sat on the idle list while spawn failed: a mayday timer that fired
                // then saw an idle worker and lapsed. Kick again, so runnable work with no idle
                // worker re-arms mayday. (Spawning fails only once the kernel or the simulation is
                // torn down; it once failed through the whole of the kernel's close, and this
                // window then hung a log-writes close in CI.)
                pool.kickLocked();
            } finally {
                pool.lock.unlock();
            }
            freePages(pages, WorkerPool.WORKER_PAGES);
            return false;
        }
        return true;
    }

    private void freePages(Page[] pages, int count) {
        for (int i = 0; i < count; i++) {
            pool.kernel.pages().free(pages[i]);
        }
    }
}
