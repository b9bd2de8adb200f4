package io.blkstack.wq;

import io.blkstack.kernel.Task;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.mem.Page;

/**
 * One worker of a {@link WorkerPool}: the kernel's {@code struct worker} (a kworker thread).
 *
 * <p>A worker costs memory: it holds {@link WorkerPool#WORKER_PAGES} pages of the kernel's arena
 * (its stand-in for a kernel stack) from creation until it exits. That is what makes worker
 * creation fail under memory pressure, and so what the mayday path and the rescuers exist for.
 * Fields other than the final ones are guarded by the pool lock; {@code kicked} is also read by
 * the worker's idle-wait condition.
 */
final class Worker {

    final int id;
    final String name;
    final Page[] pages;
    /** The worker sleeps here while idle; a kick wakes it. */
    final WaitQueue idleWait;
    final String idleWhat;

    /** The worker's task, set by the manager after spawning and by the worker itself at start. */
    volatile Task task;
    /** Asked to look for work (set while idle, cleared when it leaves idle). */
    volatile boolean kicked;
    /** On the pool's idle list. */
    boolean idle;
    /** When it last became idle, on the kernel clock. */
    long idleSinceNanos;

    Worker(int id, String name, Page[] pages) {
        this.id = id;
        this.name = name;
        this.pages = pages;
        this.idleWait = new WaitQueue(name + " idle");
        this.idleWhat = name + " idle";
    }

    @Override
    public String toString() {
        Task t = task;
        return t == null ? name + " (starting)" : t.toString();
    }
}
