package io.blkstack.kernel;

/**
 * A task's plug: the kernel's {@code blk_plug}. While a submitter holds its plug, the device
 * queues it fills hold back the wake-ups of their I/O tasks; the plug flushes them together when
 * the submitter unplugs, and always before the submitter sleeps, as the kernel's
 * {@code schedule()} flushes a plug in {@code sched_submit_work}.
 *
 * <p>Why: a submitter that queues a burst of requests and wakes a device task for each one is
 * preempted by each task it wakes, and every woken task serves one request and sleeps again.
 * Waking after the burst lets the woken tasks find several requests each.
 *
 * <p>No request can be stranded: a deferred wake-up is owed only while the plugging task runs,
 * and it flushes before any sleep ({@link Task#sleep}) and when its outermost scope closes. A task
 * that blocks outside the kernel primitives (a socket read at the edge of the system) must call
 * {@link #flush} first. Bounded: it remembers at most {@link #QUEUES_MAX} queues; a submission to
 * one more queue wakes at once. Only its own task touches a plug, so it needs no lock.
 */
public final class Plug {

    /** A device queue whose wake-ups a plug can hold back. */
    public interface Kickable {
        /** Wakes the queue's I/O tasks for {@code queued} requests admitted under a plug. */
        void kick(int queued);
    }

    /** Most distinct queues one plug defers for. */
    public static final int QUEUES_MAX = 8;

    private final Kickable[] queues = new Kickable[QUEUES_MAX];
    private final int[] counts = new int[QUEUES_MAX];
    private final Scope scope = new Scope();
    private int size;
    private int depth;

    Plug() {
    }

    /** Starts plugging (scopes nest); close the returned scope to unplug. */
    public Scope start() {
        depth++;
        return scope;
    }

    /** Whether the task is plugged. */
    public boolean active() {
        return depth > 0;
    }

    /**
     * Records one request admitted to {@code queue} without a wake-up; false if the task is not
     * plugged or the plug is full, and the caller must wake the queue itself.
     */
    public boolean defer(Kickable queue) {
        if (depth == 0) {
            return false;
        }
        for (int i = 0; i < size; i++) {
            if (queues[i] == queue) {
                counts[i]++;
                return true;
            }
        }
        if (size == QUEUES_MAX) {
            return false;
        }
        queues[size] = queue;
        counts[size] = 1;
        size++;
        return true;
    }

    /** Requests admitted under the plug whose wake-ups are still held back. */
    public int deferred() {
        int total = 0;
        for (int i = 0; i < size; i++) {
            total += counts[i];
        }
        return total;
    }

    /** Delivers every held-back wake-up; the plug stays active. Never blocks. */
    public void flush() {
        while (size > 0) {
            size--;
            Kickable queue = queues[size];
            int queued = counts[size];
            queues[size] = null;
            counts[size] = 0;
            queue.kick(queued);
        }
    }

    /** The scope returned by {@link #start}; one object per task, so plugging allocates nothing. */
    public final class Scope implements AutoCloseable {
        @Override
        public void close() {
            if (depth <= 0) {
                throw new IllegalStateException("plug closed more often than started");
            }
            if (--depth == 0) {
                flush();
            }
        }
    }
}
