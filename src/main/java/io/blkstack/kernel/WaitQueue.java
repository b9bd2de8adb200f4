package io.blkstack.kernel;

import java.util.ArrayList;
import java.util.List;
import java.util.function.BooleanSupplier;

/**
 * Tasks waiting for a condition: the kernel's {@code wait_queue_head_t}.
 *
 * <p>The wait list is intrusive (links live in {@link Task}), so waiting allocates nothing and the
 * list is bounded by the number of tasks. The lost-wake-up race is closed the kernel's way: a task
 * first {@link #prepareToWait registers} and clears its pending wake-up, then checks its condition,
 * then sleeps; a wake-up that lands between the check and the sleep makes the sleep return at once.
 */
public final class WaitQueue {

    private final SpinLock lock;
    private final String name;
    private Task head;
    private Task tail;
    private int size;

    public WaitQueue(String name) {
        this.name = name;
        this.lock = new SpinLock("waitqueue " + name);
    }

    public String name() {
        return name;
    }

    /** Registers the current task as a waiter (once) and clears its pending wake-up. */
    public void prepareToWait(Task self) {
        lock.lock();
        try {
            if (self.queuedOn == null) {
                append(self);
            } else if (self.queuedOn != this) {
                throw new IllegalStateException("task " + self + " waits on " + self.queuedOn.name
                        + " and " + name + " at once");
            }
            self.kernel().scheduler().prepareToSleep(self);
        } finally {
            lock.unlock();
        }
    }

    /** Removes the current task from the queue if a wake-up did not already. */
    public void finishWait(Task self) {
        lock.lock();
        try {
            if (self.queuedOn == this) {
                unlink(self);
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * Wakes the first waiter; returns whether there was one. Wakes under the lock, as the kernel
     * does: a wake-up never blocks, and the woken task cannot re-queue before it is unlinked.
     */
    public boolean wakeOne() {
        lock.lock();
        try {
            Task woken = head;
            if (woken == null) {
                return false;
            }
            unlink(woken);
            woken.kernel().scheduler().wake(woken);
            return true;
        } finally {
            lock.unlock();
        }
    }

    /** Wakes every waiter; returns how many there were. */
    public int wakeAll() {
        lock.lock();
        try {
            int count = 0;
            for (Task woken = head; woken != null; woken = head) {
                unlink(woken);
                woken.kernel().scheduler().wake(woken);
                count++;
            }
            return count;
        } finally {
            lock.unlock();
        }
    }

    /** Whether anyone waits. */
    public boolean hasWaiters() {
        lock.lock();
        try {
            return head != null;
        } finally {
            lock.unlock();
        }
    }

    /** The waiting tasks, for explanations. */
    public List<Task> waiters() {
        lock.lock();
        try {
            List<Task> list = new ArrayList<>(size);
            for (Task t = head; t != null; t = t.waitNext) {
                list.add(t);
            }
            return list;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Waits until {@code condition} holds (the kernel's {@code wait_event}). The condition is
     * evaluated without this queue's lock and must not block.
     *
     * @param what what the task waits on, for the watchdog and the checker
     */
    public void waitEvent(BooleanSupplier condition, Object what) {
        waitEventTimeout(condition, what, -1, false);
    }

    /**
     * Waits until {@code condition} holds or the timeout passes.
     *
     * @param timeoutNanos negative to wait without a timeout
     * @param idle true for a worker waiting for work (owes nothing to anyone)
     * @return true if the condition holds, false on timeout
     */
    public boolean waitEventTimeout(BooleanSupplier condition, Object what, long timeoutNanos, boolean idle) {
        if (condition.getAsBoolean()) {
            return true;
        }
        Task self = Task.current();
        Scheduler scheduler = self.kernel().scheduler();
        long deadline = timeoutNanos < 0 ? Long.MAX_VALUE : scheduler.nanoTime() + timeoutNanos;
        // Queue before announcing the wait: whoever sees it begin (Task.awaitWait) also finds this
        // task queued, behind those already waiting, so a wake-up it then causes is ordered.
        prepareToWait(self);
        boolean started = self.beginWait(what, idle);
        try {
            while (true) {
                prepareToWait(self);
                if (condition.getAsBoolean()) {
                    return true;
                }
                long left = timeoutNanos < 0 ? -1 : deadline - scheduler.nanoTime();
                if (timeoutNanos >= 0 && left <= 0) {
                    return false;
                }
                self.sleep(what, left);
            }
        } finally {
            finishWait(self);
            self.endWait(started);
        }
    }

    private void append(Task t) {
        t.queuedOn = this;
        t.waitPrev = tail;
        t.waitNext = null;
        if (tail == null) {
            head = t;
        } else {
            tail.waitNext = t;
        }
        tail = t;
        size++;
    }

    private void unlink(Task t) {
        if (t.waitPrev == null) {
            head = t.waitNext;
        } else {
            t.waitPrev.waitNext = t.waitNext;
        }
        if (t.waitNext == null) {
            tail = t.waitPrev;
        } else {
            t.waitNext.waitPrev = t.waitPrev;
        }
        t.waitNext = null;
        t.waitPrev = null;
        t.queuedOn = null;
        size--;
    }

    @Override
    public String toString() {
        return "waitqueue " + name;
    }
}
