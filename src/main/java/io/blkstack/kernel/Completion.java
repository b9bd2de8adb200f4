package io.blkstack.kernel;

/**
 * A one-shot (or counted) event a task can wait for: the kernel's {@code struct completion}.
 *
 * <p>{@link #complete} never blocks, so completion callbacks may call it (rule 2 of DESIGN.md
 * section 1).
 */
public final class Completion {

    private final WaitQueue waiters;
    private final SpinLock lock;
    private final String name;
    private int done;

    public Completion(String name) {
        this.name = name;
        this.waiters = new WaitQueue("completion " + name);
        this.lock = new SpinLock("completion " + name);
    }

    /** Signals one waiter (or the next one to wait). */
    public void complete() {
        lock.lock();
        try {
            if (done != Integer.MAX_VALUE) {
                done++;
            }
        } finally {
            lock.unlock();
        }
        waiters.wakeOne();
    }

    /** Signals every waiter, present and future. */
    public void completeAll() {
        lock.lock();
        try {
            done = Integer.MAX_VALUE;
        } finally {
            lock.unlock();
        }
        waiters.wakeAll();
    }

    /** Waits until completed, consuming one signal. */
    public void await() {
        waiters.waitEvent(this::tryConsume, this);
    }

    /** Waits until completed or the timeout passes; returns whether it completed. */
    public boolean await(long timeoutNanos) {
        return waiters.waitEventTimeout(this::tryConsume, this, timeoutNanos, false);
    }

    /** Whether a signal is available, without consuming it. */
    public boolean isDone() {
        lock.lock();
        try {
            return done > 0;
        } finally {
            lock.unlock();
        }
    }

    /** Resets to not done, for reuse. */
    public void reinit() {
        lock.lock();
        try {
            done = 0;
        } finally {
            lock.unlock();
        }
    }

    private boolean tryConsume() {
        lock.lock();
        try {
            if (done == 0) {
                return false;
            }
            if (done != Integer.MAX_VALUE) {
                done--;
            }
            return true;
        } finally {
            lock.unlock();
        }
    }

    @Override
    public String toString() {
        return "completion " + name;
    }
}
