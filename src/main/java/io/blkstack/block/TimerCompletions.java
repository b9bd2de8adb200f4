package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.WaitQueue;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Consumer;

/**
 * Completes bios after a latency from kernel timers, with a bounded number in flight: the
 * {@code null_blk} driver's timer completion mode, shared by {@link MemoryDevice} and
 * {@link NullDevice}.
 *
 * <p>A bio takes one of {@code depth} slots before its timer is armed; each slot is a
 * preallocated callback, so arming allocates only the scheduler's timer record. A full device
 * makes the submitter sleep until a timer frees a slot (or refuses a {@code NOWAIT} bio). Timer
 * callbacks run in atomic context: they free the slot and call {@link Bio#endio}, and never block
 * (rule 2 of DESIGN.md section 1).
 */
final class TimerCompletions {

    /** One in-flight bio and the timer callback that completes it. */
    private final class Slot implements Runnable {
        final int index;
        Bio bio;
        /** Serve the bio when the timer fires, before completing it (a READ served at completion). */
        boolean serve;

        Slot(int index) {
            this.index = index;
        }

        /** The timer callback: frees the slot, then completes the bio. */
        @Override
        public void run() {
            Bio done = bio;
            if (done == null) {
                throw new IllegalStateException(name + ": timer fired for empty slot " + index);
            }
            bio = null;
            boolean serveNow = serve;
            serve = false;
            release(this);
            try {
                if (serveNow) {
                    server.accept(done);
                }
                done.endio();
            } finally {
                if (outstanding.decrementAndGet() == 0) {
                    drained.wakeAll();
                }
            }
        }
    }

    private final Kernel kernel;
    private final String name;
    /** Serves a bio whose timer was armed with {@code serveAtCompletion} (atomic context: never blocks). */
    private final Consumer<Bio> server;
    private final Slot[] freeSlots;
    private final SpinLock lock;
    private final WaitQueue slotFree;
    private final WaitQueue drained;
    private final AtomicInteger outstanding = new AtomicInteger();
    private volatile int freeCount;

    TimerCompletions(Kernel kernel, String name, int depth, Consumer<Bio> server) {
        if (depth < 1 || depth > DeviceQueue.DEPTH_MAX) {
            throw new IllegalArgumentException(name + ": queue depth " + depth + " not in [1, " + DeviceQueue.DEPTH_MAX
                    + "]");
        }
        this.kernel = kernel;
        this.name = name;
        this.server = server;
        this.freeSlots = new Slot[depth];
        for (int i = 0; i < depth; i++) {
            freeSlots[i] = new Slot(i);
        }
        this.freeCount = depth;
        this.lock = new SpinLock(name + " timer slots");
        this.slotFree = new WaitQueue(name + " timer slots");
        this.drained = new WaitQueue(name + " drained");
    }

    /**
     * Arms a timer that completes {@code bio} after {@code delayNanos}, serving it first if
     * {@code serveAtCompletion}. Sleeps for a free slot, unless {@code mayWait} is false: then
     * returns false at once if none is free.
     */
    boolean complete(Bio bio, long delayNanos, boolean mayWait, boolean serveAtCompletion) {
        if (delayNanos < 0) {
            throw new IllegalArgumentException(name + ": negative completion delay " + delayNanos + " ns");
        }
        Slot slot = tryTake();
        while (slot == null) {
            if (!mayWait) {
                return false;
            }
            slotFree.waitEvent(() -> freeCount > 0, this);
            slot = tryTake();
        }
        slot.bio = bio;
        slot.serve = serveAtCompletion;
        outstanding.incrementAndGet();
        kernel.scheduler().addTimer(delayNanos, name, slot);
        return true;
    }

    private Slot tryTake() {
        lock.lock();
        try {
            if (freeCount == 0) {
                return null;
            }
            Slot slot = freeSlots[--freeCount];
            freeSlots[freeCount] = null;
            return slot;
        } finally {
            lock.unlock();
        }
    }

    private void release(Slot slot) {
        lock.lock();
        try {
            if (freeCount == freeSlots.length) {
                throw new IllegalStateException(name + ": slot " + slot.index + " freed with every slot free");
            }
            freeSlots[freeCount++] = slot;
        } finally {
            lock.unlock();
        }
        slotFree.wakeOne();
    }

    /** Bios whose timers have not completed them yet. */
    int inFlight() {
        return outstanding.get();
    }

    /**
     * Waits until every armed timer has completed its bio (device close). Attaches the calling
     * thread to the kernel for the wait if it is not a task.
     */
    void drain() {
        if (outstanding.get() == 0) {
            return;
        }
        Kernel.Attachment attachment = Task.currentOrNull() == null ? kernel.attach(name + "-close") : null;
        try {
            drained.waitEvent(() -> outstanding.get() == 0, this);
        } finally {
            if (attachment != null) {
                attachment.close();
            }
        }
    }

    @Override
    public String toString() {
        return name + " timer completions";
    }
}
