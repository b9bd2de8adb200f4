package io.blkstack.wq;

/**
 * A work item queued after a delay on the kernel clock: the kernel's {@code delayed_work}.
 *
 * <p>{@link Workqueue#queueDelayed} arms a timer on the kernel's scheduler; the timer callback
 * queues the item (it never blocks). While the timer is armed the item counts as pending, so a
 * second {@code queueDelayed} or {@code queue} returns false, as in the kernel.
 */
public final class DelayedWork extends Work {

    /** Creates an idle delayed work item. */
    public DelayedWork(String name, Runnable function) {
        super(name, function);
    }

    /**
     * Disarms the timer if it is armed; an item the timer already queued stays queued.
     *
     * @return whether the timer was armed (the item is no longer pending)
     */
    public boolean cancelTimer() {
        WorkerPool p = pool;
        return p != null && p.cancelWork(this, true);
    }

    @Override
    public String toString() {
        return "delayed work " + name();
    }
}
