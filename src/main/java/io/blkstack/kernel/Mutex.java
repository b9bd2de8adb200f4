package io.blkstack.kernel;

/**
 * A sleeping lock that knows its owner: the kernel's {@code struct mutex}.
 *
 * <p>The owner is what the checker's wait-for explanation names when a task waits here. Not
 * reentrant: a second lock by the owner is a self-deadlock and throws.
 */
public final class Mutex {

    private final WaitQueue waiters;
    private final SpinLock lock;
    private final String name;
    private Task owner;

    public Mutex(String name) {
        this.name = name;
        this.waiters = new WaitQueue("mutex " + name);
        this.lock = new SpinLock("mutex " + name);
    }

    /** Takes the mutex, sleeping while another task owns it. */
    public void lock() {
        Task self = Task.current();
        if (owner == self) {
            throw new IllegalStateException("task " + self + " locks mutex " + name + " it already owns");
        }
        self.kernel().scheduler().preemptionPoint(self);
        waiters.waitEvent(() -> tryAcquire(self), this);
    }

    /** Takes the mutex if it is free; returns whether it did. */
    public boolean tryLock() {
        Task self = Task.current();
        self.kernel().scheduler().preemptionPoint(self);
        return tryAcquire(self);
    }

    /** Releases the mutex and wakes one waiter. */
    public void unlock() {
        Task self = Task.current();
        lock.lock();
        try {
            if (owner != self) {
                throw new IllegalStateException("task " + self + " unlocks mutex " + name + " owned by " + owner);
            }
            owner = null;
        } finally {
            lock.unlock();
        }
        waiters.wakeOne();
    }

    /** The owner, or null; for explanations. */
    public Task owner() {
        return owner;
    }

    /** Whether the calling task owns the mutex. */
    public boolean isHeldByCurrentTask() {
        return owner == Task.currentOrNull();
    }

    public String name() {
        return name;
    }

    private boolean tryAcquire(Task self) {
        lock.lock();
        try {
            if (owner != null) {
                return false;
            }
            owner = self;
            return true;
        } finally {
            lock.unlock();
        }
    }

    @Override
    public String toString() {
        return "mutex " + name + (owner == null ? "" : " (owner " + owner + ")");
    }
}
