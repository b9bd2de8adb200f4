package io.blkstack.block;

import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Plug;
import io.blkstack.kernel.Scheduler;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.WaitQueue;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.BooleanSupplier;

/**
 * A bottom device's hardware queue: a fixed-capacity ring of requests served by a fixed set of
 * device I/O tasks ({@link TaskKind#DEVICE}), the user-space stand-in for a disk's queue depth and
 * its DMA engines.
 *
 * <p>Both sides are bounded. At most {@code depth} requests are in flight (queued in the ring or
 * being served), and a submitter that finds every slot taken either gets {@link Admit#FULL} back
 * ({@link #tryEnqueue}, for {@code NOWAIT} bios) or sleeps on the queue's slot wait queue until a
 * request finishes ({@link #enqueue}): backpressure is a wait on a bounded resource, never growth
 * (rule 5 of DESIGN.md section 1). A slot is held until the handler returns, so the handler's
 * completion of a request (its {@code endio}) happens before the slot is reused.
 *
 * <p>A request admitted by a task holding its {@link Plug} does not wake an I/O task at once: the
 * plug delivers the wake-ups for the whole burst when the task unplugs or sleeps ({@link #kick}).
 *
 * <p><b>Direct issue</b> (blk-mq's {@code blk_mq_try_issue_directly}): {@link #tryIssueDirectly}
 * lets a submitter serve a request itself when the ring is empty (so it overtakes nothing queued),
 * a slot is free and one of the queue's direct lanes is free. The request takes a slot like any
 * other, so the depth bounds both paths together; the lane (at most as many as I/O tasks) tells
 * the caller which private per-lane state to use, and {@link #finishDirect} gives both back.
 *
 * <p>{@link #stop} refuses new requests, lets the I/O tasks drain what is already queued, waits
 * for direct issues in progress, and joins the tasks: every request admitted before the stop is
 * served.
 *
 * @param <T> the request type (a bio for the block devices)
 */
public final class DeviceQueue<T> implements Plug.Kickable {

    /** What {@link #tryEnqueue} did with a request. */
    public enum Admit {
        /** The request took a slot and an I/O task will serve it. */
        QUEUED,
        /** Every slot is in flight; the caller may wait or give up. */
        FULL,
        /** The queue is stopping; the request was refused and the caller still owns it. */
        STOPPED
    }

    /** Serves one request on a device I/O task; must complete the request and must not throw. */
    @FunctionalInterface
    public interface Handler<T> {
        /** Serves {@code request} on the I/O task number {@code taskIndex}. */
        void serve(T request, int taskIndex);
    }

    /** Largest queue depth accepted; a bound on the ring's memory. */
    public static final int DEPTH_MAX = 4096;
    /** Largest number of I/O tasks per queue. */
    public static final int TASKS_MAX = 64;

    private final Kernel kernel;
    private final String name;
    private final Handler<T> handler;
    private final Object[] ring;
    private final int depth;
    private final SpinLock lock;
    private final WaitQueue slotFree;
    private final WaitQueue work;
    private final Task[] tasks;
    // Wait conditions made once: a capturing lambda at the wait site would allocate per wait.
    private final BooleanSupplier workOrStop;
    private final BooleanSupplier slotOrStop;
    private final BooleanSupplier noDirectIssue;
    /** Direct lanes in use, one bit per lane; guarded by {@link #lock}. */
    private long directLanesBusy;
    private final int directLanes;
    private final AtomicLong directIssues = new AtomicLong();
    private final AtomicLong served = new AtomicLong();
    private final AtomicLong submitWaits;
    private int head;
    private volatile int queued;
    private volatile int inFlight;
    private volatile int directInFlight;
    private volatile boolean stopping;
    private boolean stopped;

    /**
     * Creates the queue and starts its I/O tasks.
     *
     * @param depth how many requests may be in flight at once (queued or being served)
     * @param taskCount how many device I/O tasks serve the ring
     */
    public DeviceQueue(Kernel kernel, String name, int depth, int taskCount, Handler<T> handler) {
        if (depth < 1 || depth > DEPTH_MAX) {
            throw new IllegalArgumentException("device queue " + name + ": depth " + depth + " not in [1, " + DEPTH_MAX + "]");
        }
        if (taskCount < 1 || taskCount > TASKS_MAX) {
            throw new IllegalArgumentException("device queue " + name + ": task count " + taskCount + " not in [1, "
                    + TASKS_MAX + "]");
        }
        this.kernel = kernel;
        this.name = name;
        this.handler = handler;
        this.depth = depth;
        this.workOrStop = () -> queued > 0 || stopping;
        this.slotOrStop = () -> inFlight < depth || stopping;
        this.noDirectIssue = () -> directInFlight == 0;
        this.directLanes = taskCount;
        this.ring = new Object[depth];
        this.lock = new SpinLock("device queue " + name);
        this.slotFree = new WaitQueue("device queue " + name + " slots");
        this.work = new WaitQueue("device queue " + name + " work");
        this.submitWaits = kernel.counters().get("device.submit-waits");
        this.tasks = new Task[taskCount];
        for (int i = 0; i < taskCount; i++) {
            final int index = i;
            try {
                tasks[i] = kernel.spawn(name + "/io" + i, TaskKind.DEVICE, () -> runIoTask(index));
            } catch (RuntimeException e) {
                stopping = true;
                work.wakeAll();
                for (int j = 0; j < i; j++) {
                    kernel.scheduler().join(tasks[j]);
                }
                throw e;
            }
        }
    }

    /** Admits a request if a slot is free; never blocks. */
    public Admit tryEnqueue(T request) {
        if (request == null) {
            throw new IllegalArgumentException("device queue " + name + ": null request");
        }
        lock.lock();
        try {
            if (stopping) {
                return Admit.STOPPED;
            }
            if (inFlight == depth) {
                return Admit.FULL;
            }
            int tail = (head + queued) % depth;
            if (ring[tail] != null) {
                throw new IllegalStateException("device queue " + name + ": ring slot " + tail + " busy with "
                        + queued + " queued and " + inFlight + " in flight");
            }
            ring[tail] = request;
            queued++;
            inFlight++;
        } finally {
            lock.unlock();
        }
        Task self = Task.currentOrNull();
        if (self == null || !self.plug().defer(this)) {
            work.wakeOne();
        }
        return Admit.QUEUED;
    }

    /**
     * Wakes I/O tasks for {@code queued} requests admitted under a plug: one task for every two
     * requests (at least one, at most every task). A woken task drains the ring before it sleeps
     * again, so a task per request would only make tasks that find nothing left.
     */
    @Override
    public void kick(int queued) {
        int wakes = Math.min(tasks.length, (queued + 1) / 2);
        for (int i = 0; i < wakes; i++) {
            if (!work.wakeOne()) {
                return; // every task is awake already
            }
        }
    }

    /**
     * Admits a request, sleeping until a slot frees if every slot is in flight (the device's queue
     * depth is the bound). Returns {@link Admit#QUEUED}, or {@link Admit#STOPPED} if the queue
     * stopped first.
     */
    public Admit enqueue(T request) {
        while (true) {
            Admit admit = tryEnqueue(request);
            if (admit != Admit.FULL) {
                return admit;
            }
            submitWaits.incrementAndGet();
            slotFree.waitEvent(slotOrStop, this);
        }
    }

    /**
     * Admits a request to be served by the caller itself, if the queue is idle enough: not
     * stopping, nothing queued in the ring (a direct issue must not overtake a queued request),
     * a slot free and a direct lane free. Never blocks.
     *
     * @return the lane (0 to {@link #directLanes} - 1) the caller serves on, or -1 to queue instead
     */
    public int tryIssueDirectly() {
        lock.lock();
        try {
            if (stopping || queued > 0 || inFlight == depth) {
                return -1;
            }
            long free = ~directLanesBusy & laneMask();
            if (free == 0) {
                return -1;
            }
            int lane = Long.numberOfTrailingZeros(free);
            directLanesBusy |= 1L << lane;
            inFlight++;
            directInFlight++;
            return lane;
        } finally {
            lock.unlock();
        }
    }

    /** Ends a direct issue on {@code lane}: frees its slot and lane, wakes a waiting submitter. */
    public void finishDirect(int lane) {
        if (lane < 0 || lane >= directLanes) {
            throw new IllegalArgumentException("device queue " + name + ": direct lane " + lane + " not in [0, "
                    + directLanes + ")");
        }
        lock.lock();
        try {
            if ((directLanesBusy & (1L << lane)) == 0) {
                throw new IllegalStateException("device queue " + name + ": direct lane " + lane + " finished but not busy");
            }
            directLanesBusy &= ~(1L << lane);
            directInFlight--;
        } finally {
            lock.unlock();
        }
        directIssues.incrementAndGet();
        release();
        if (directInFlight == 0 && stopping) {
            slotFree.wakeAll(); // stop waits here for the last direct issue
        }
    }

    /** How many requests may be served by submitters at once (the lanes of {@link #tryIssueDirectly}). */
    public int directLanes() {
        return directLanes;
    }

    /** Requests served by their submitters since the queue started. */
    public long directIssues() {
        return directIssues.get();
    }

    private long laneMask() {
        return directLanes == Long.SIZE ? -1L : (1L << directLanes) - 1;
    }

    /** The body of one device I/O task: serve requests until stopped and drained. */
    private void runIoTask(int index) {
        while (true) {
            work.waitEventTimeout(workOrStop, this, -1, true);
            T request = take();
            if (request == null) {
                if (stopping) {
                    return;
                }
                continue;
            }
            try {
                handler.serve(request, index);
            } catch (RuntimeException e) {
                // A handler must complete its request itself; report the bug and keep serving.
                // Errors (and the simulator's teardown signal) end the task instead.
                kernel.reportFault(Task.current(), e);
            } finally {
                release();
            }
        }
    }

    /** Takes the oldest queued request, or null if the ring is empty. */
    @SuppressWarnings("unchecked")
    private T take() {
        lock.lock();
        try {
            if (queued == 0) {
                return null;
            }
            T request = (T) ring[head];
            if (request == null) {
                throw new IllegalStateException("device queue " + name + ": empty ring slot " + head + " with "
                        + queued + " queued");
            }
            ring[head] = null;
            head = (head + 1) % depth;
            queued--;
            return request;
        } finally {
            lock.unlock();
        }
    }

    /** Frees the slot of a served request and wakes one submitter waiting for it. */
    private void release() {
        lock.lock();
        try {
            if (inFlight <= queued) {
                throw new IllegalStateException("device queue " + name + ": release with " + inFlight
                        + " in flight and " + queued + " queued");
            }
            inFlight--;
        } finally {
            lock.unlock();
        }
        served.incrementAndGet();
        slotFree.wakeOne();
    }

    /**
     * Refuses new requests, lets the I/O tasks serve everything already admitted, and waits for
     * them to exit. Idempotent; must not be called from one of this queue's own I/O tasks.
     */
    public void stop() {
        Task self = Task.currentOrNull();
        for (Task t : tasks) {
            if (t == self) {
                throw new IllegalStateException("device queue " + name + " stopped from its own I/O task " + self);
            }
        }
        lock.lock();
        try {
            if (stopped) {
                return;
            }
            stopped = true;
            stopping = true;
        } finally {
            lock.unlock();
        }
        work.wakeAll();
        slotFree.wakeAll();
        Scheduler scheduler = kernel.scheduler();
        for (Task t : tasks) {
            scheduler.join(t);
        }
        // A direct issue admitted before the stop ends when its submitter has served it.
        while (directInFlight > 0) {
            slotFree.waitEvent(noDirectIssue, this);
        }
        if (queued != 0 || inFlight != 0) {
            throw new IllegalStateException("device queue " + name + " stopped with " + queued + " queued and "
                    + inFlight + " in flight");
        }
    }

    public String name() {
        return name;
    }

    /** Requests admitted and not yet served to the end. */
    public int inFlight() {
        return inFlight;
    }

    /** Requests served since the queue started. */
    public long served() {
        return served.get();
    }

    /** A line for explanations: occupancy and the submitters waiting for a slot. */
    public String describeState() {
        return "device queue " + name + ": " + inFlight + "/" + depth + " in flight (" + directInFlight
                + " issued directly), " + queued + " queued, " + served.get() + " served, slot waiters "
                + slotFree.waiters();
    }

    @Override
    public String toString() {
        return "device queue " + name;
    }
}
