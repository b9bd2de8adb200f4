package io.blkstack.kernel;

import java.util.ArrayList;
import java.util.List;
import java.util.PriorityQueue;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Platform threads and real time. Sleeping is {@link LockSupport#park}, waking is
 * {@link LockSupport#unpark} plus the task's pending wake-up flag, and timers run on one timer
 * thread in atomic context. This is the only place (with the simulated scheduler) that blocks a
 * thread directly.
 */
public final class RealScheduler implements Scheduler {

    private final Set<Task> tasks = ConcurrentHashMap.newKeySet();
    private final AtomicLong timerSequence = new AtomicLong();
    private final ReentrantLock timerLock = new ReentrantLock();
    private final Condition timerChanged = timerLock.newCondition();
    private final PriorityQueue<RealTimer> timers = new PriorityQueue<>();
    private Kernel kernel;
    private Thread timerThread;
    private volatile boolean closed;

    @Override
    public void bind(Kernel kernel) {
        if (this.kernel != null) {
            throw new IllegalStateException("scheduler already bound to kernel " + this.kernel.name());
        }
        this.kernel = kernel;
        Task timerTask = kernel.newTask("timer", TaskKind.TIMER);
        timerThread = new Thread(() -> runTimers(timerTask), kernel.name() + "/timer");
        timerThread.setDaemon(true);
        timerThread.start();
    }

    @Override
    public Task spawn(String name, TaskKind kind, Runnable body) {
        Task task = kernel.newTask(name, kind);
        tasks.add(task);
        Thread thread = new Thread(() -> {
            task.bindToCurrentThread();
            try {
                body.run();
            } catch (Throwable t) {
                kernel.reportCrash(task, t);
            } finally {
                tasks.remove(task);
                task.unbindFromCurrentThread();
            }
        }, kernel.name() + "/" + name);
        thread.setDaemon(true);
        task.assignThread(thread);
        thread.start();
        return task;
    }

    @Override
    public Task attach(String name) {
        Task task = kernel.newTask(name, TaskKind.USER);
        task.bindToCurrentThread();
        tasks.add(task);
        return task;
    }

    @Override
    public void detach(Task task) {
        tasks.remove(task);
        task.unbindFromCurrentThread();
    }

    @Override
    public void prepareToSleep(Task self) {
        self.wakeup.set(false);
    }

    @Override
    public boolean sleep(Task self, long timeoutNanos) {
        if (timeoutNanos < 0) {
            while (!self.wakeup.getAndSet(false)) {
                LockSupport.park(self);
            }
            return true;
        }
        long deadline = System.nanoTime() + timeoutNanos;
        while (!self.wakeup.getAndSet(false)) {
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                return false;
            }
            LockSupport.parkNanos(self, left);
        }
        return true;
    }

    @Override
    public void wake(Task task) {
        task.wakeup.set(true);
        Thread thread = task.thread();
        if (thread != null) {
            LockSupport.unpark(thread);
        }
    }

    @Override
    public void preemptionPoint(Task self) {
        // Real threads are preempted by the operating system.
    }

    @Override
    public void yieldNow(Task self) {
        Thread.yield();
    }

    @Override
    public long nanoTime() {
        return System.nanoTime();
    }

    @Override
    public Timer addTimer(long delayNanos, String name, Runnable callback) {
        if (delayNanos < 0) {
            throw new IllegalArgumentException("timer " + name + ": negative delay " + delayNanos + " ns");
        }
        RealTimer timer = new RealTimer(System.nanoTime() + delayNanos, timerSequence.getAndIncrement(), name, callback);
        timerLock.lock();
        try {
            if (closed) {
                throw new IllegalStateException("timer " + name + " added after the scheduler closed");
            }
            timers.add(timer);
            if (timers.peek() == timer) {
                timerChanged.signal();
            }
        } finally {
            timerLock.unlock();
        }
        return timer;
    }

    @Override
    public List<Task> tasks() {
        return new ArrayList<>(tasks);
    }

    @Override
    public void join(Task task) {
        Thread thread = task.thread();
        if (thread == null) {
            return;
        }
        try {
            thread.join();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while joining " + task, e);
        }
    }

    @Override
    public boolean isSimulated() {
        return false;
    }

    @Override
    public void close() {
        timerLock.lock();
        try {
            closed = true;
            timers.clear();
            timerChanged.signal();
        } finally {
            timerLock.unlock();
        }
        if (timerThread != null) {
            try {
                timerThread.join(TimeUnit.SECONDS.toMillis(10));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** The timer thread: fires due timers in atomic context, one at a time. */
    private void runTimers(Task timerTask) {
        timerTask.bindToCurrentThread();
        timerTask.enterAtomic();
        try {
            while (true) {
                RealTimer due = nextDueTimer();
                if (due == null) {
                    return;
                }
                try {
                    due.callback.run();
                } catch (Throwable t) {
                    kernel.reportFault(timerTask, t);
                }
            }
        } finally {
            timerTask.exitAtomic();
            timerTask.unbindFromCurrentThread();
        }
    }

    /** Waits for the next timer to be due and claims it; null once the scheduler is closed. */
    private RealTimer nextDueTimer() {
        timerLock.lock();
        try {
            while (!closed) {
                RealTimer head = timers.peek();
                if (head == null) {
                    timerChanged.awaitUninterruptibly();
                    continue;
                }
                long left = head.deadline - System.nanoTime();
                if (left > 0) {
                    timerChanged.awaitNanos(left);
                    continue;
                }
                timers.poll();
                if (head.claim()) {
                    return head;
                }
            }
            return null;
        } catch (InterruptedException e) {
            return null;
        } finally {
            timerLock.unlock();
        }
    }

    /** One timer; fires at most once, and cancel and fire race on one state word. */
    private final class RealTimer implements Timer, Comparable<RealTimer> {
        private static final int PENDING = 0;
        private static final int FIRED = 1;
        private static final int CANCELLED = 2;

        final long deadline;
        final long sequence;
        final String name;
        final Runnable callback;
        private final java.util.concurrent.atomic.AtomicInteger state = new java.util.concurrent.atomic.AtomicInteger(PENDING);

        RealTimer(long deadline, long sequence, String name, Runnable callback) {
            this.deadline = deadline;
            this.sequence = sequence;
            this.name = name;
            this.callback = callback;
        }

        boolean claim() {
            return state.compareAndSet(PENDING, FIRED);
        }

        @Override
        public boolean cancel() {
            if (!state.compareAndSet(PENDING, CANCELLED)) {
                return false;
            }
            timerLock.lock();
            try {
                timers.remove(this);
            } finally {
                timerLock.unlock();
            }
            return true;
        }

        @Override
        public int compareTo(RealTimer other) {
            int byDeadline = Long.compare(deadline - other.deadline, 0);
            return byDeadline != 0 ? byDeadline : Long.compare(sequence, other.sequence);
        }

        @Override
        public String toString() {
            return "timer " + name;
        }
    }
}
