package io.blkstack.kernel;

import java.util.concurrent.locks.ReentrantLock;

/**
 * A short critical section that never sleeps: the kernel's spinlock.
 *
 * <p>Holding one makes any sleep of the holder a reported bug, which keeps the simulated scheduler
 * sound: only one task runs at a time there, and it can only hand over at a sleep, so a held spin
 * lock is never contended across a hand-over. Under the real scheduler it is a plain lock.
 */
public final class SpinLock {

    private final ReentrantLock lock = new ReentrantLock();
    private final String name;

    public SpinLock(String name) {
        this.name = name;
    }

    /** Takes the lock; the calling thread must be a kernel task. */
    public void lock() {
        Task self = Task.current();
        if (self.spinDepth == 0) {
            self.kernel().scheduler().preemptionPoint(self);
        }
        lock.lock();
        self.spinDepth++;
    }

    /** Releases the lock. */
    public void unlock() {
        if (!lock.isHeldByCurrentThread()) {
            throw new IllegalStateException("spin lock " + name + " released by a thread that does not hold it: "
                    + Thread.currentThread().getName());
        }
        Task self = Task.current();
        self.spinDepth--;
        lock.unlock();
    }

    /** Whether the calling thread holds the lock. */
    public boolean isHeldByCurrentThread() {
        return lock.isHeldByCurrentThread();
    }

    @Override
    public String toString() {
        return "spinlock " + name;
    }
}
