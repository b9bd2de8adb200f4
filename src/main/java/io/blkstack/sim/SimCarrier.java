package io.blkstack.sim;

import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.reflect.Constructor;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.Executor;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.LockSupport;

/**
 * The carrier of one simulated run's virtual threads: a platform thread of the run's own that
 * mounts them one after another, instead of the JDK's shared carrier pool.
 *
 * <p>Why: only one task of a run holds the token, so a hand-over is "unpark the next, park
 * myself". On the shared pool (one carrier per core) the unparked task is often taken by the
 * other carrier, which first has to be woken: the hand-over then costs an OS wake-up and moves the
 * run's working set between cores at every step. With one carrier per run the unparked task is
 * queued here and runs as soon as the parking one unmounts, on the same core, without a system
 * call; and two runs (or anything else in the JVM) no longer share a carrier, so campaigns can
 * run side by side.
 *
 * <p>The JDK has no public API for a virtual thread's scheduler in JDK 25; this uses the
 * package-private builder constructor that takes one ({@code java.lang.ThreadBuilders
 * $VirtualThreadBuilder(Executor)}), which needs {@code --add-opens java.base/java.lang} (the jar's
 * manifest and the test runner give it). Without it, {@link #open} returns the shared pool's
 * builder: the same runs and traces, only slower ({@link #own()} says which).
 *
 * <p>The queue holds at most one entry per virtual thread of the run (a virtual thread is
 * submitted again only after it ran), so it is bounded by the run's task count. If a task blocks
 * its carrier outside the kernel primitives (a busy loop, a pinned native wait), nothing else of
 * the run could be mounted: the watchdog then calls {@link #rescue}, which starts a second carrier
 * on the same queue so that the controller can end the run and teardown can unwind the tasks.
 */
final class SimCarrier implements Executor, AutoCloseable {

    /** The builder constructor that takes a scheduler, or null where java.lang is not open to us. */
    private static final MethodHandle SCHEDULED_BUILDER = scheduledBuilder();

    /** How long {@link #close} waits for each carrier thread to end. */
    private static final java.time.Duration CLOSE_WAIT = java.time.Duration.ofSeconds(2);

    /** Tells a carrier thread to end; queued once per carrier at close. */
    private static final Runnable STOP = () -> { };

    private final String name;
    private final ConcurrentLinkedQueue<Runnable> queue = new ConcurrentLinkedQueue<>();
    /** Carrier threads parked on an empty queue; {@link #execute} unparks them. */
    private final AtomicInteger idle = new AtomicInteger();
    private volatile Thread first;
    private volatile Thread rescuer;
    private final Thread.Builder.OfVirtual builder;
    private boolean closed;

    private SimCarrier(String name, boolean own) {
        this.name = name;
        this.builder = own ? scheduledBy(this) : null;
    }

    /**
     * A carrier for a run named {@code name}: its own thread if {@code own} and the JDK lets us,
     * else the shared pool.
     */
    static SimCarrier open(String name, boolean own) {
        return new SimCarrier(name, own && SCHEDULED_BUILDER != null);
    }

    /** Whether this run's virtual threads have their own carrier (false: the JDK's shared pool). */
    boolean own() {
        return builder != null;
    }

    /** An unstarted virtual thread named {@code threadName} on this carrier. */
    Thread unstarted(String threadName, Runnable body) {
        Thread.Builder.OfVirtual b = builder != null ? builder : Thread.ofVirtual();
        return b.name(threadName).unstarted(body);
    }

    /** Called by the JDK with a virtual thread's continuation to mount. Never refuses. */
    @Override
    public void execute(Runnable continuation) {
        queue.add(continuation);
        if (first == null) {
            startFirst();
        } else if (idle.get() > 0) {
            LockSupport.unpark(first);
            Thread r = rescuer;
            if (r != null) {
                LockSupport.unpark(r);
            }
        }
    }

    /** The first carrier starts with the first thread mounted. */
    private synchronized void startFirst() {
        if (first == null && !closed) {
            Thread t = newCarrier(name + "/carrier");
            first = t; // published before it starts, so that an execute that finds it idle unparks it
            t.start();
        }
    }

    /**
     * Starts a second carrier on the same queue (once), for when the first is held by a task that
     * blocks outside the kernel primitives.
     */
    synchronized void rescue() {
        if (builder != null && first != null && rescuer == null && !closed) {
            Thread t = newCarrier(name + "/rescue-carrier");
            rescuer = t;
            t.start();
        }
    }

    /**
     * Ends the carrier threads once they have run what is queued before this, and waits (at most
     * {@link #CLOSE_WAIT} each) until they have, so that a closed run leaves no thread behind.
     */
    @Override
    public void close() {
        Thread[] carriers;
        synchronized (this) {
            if (closed || builder == null) {
                return;
            }
            closed = true;
            carriers = new Thread[] {first, rescuer};
            for (Thread t : carriers) {
                if (t != null) {
                    execute(STOP);
                }
            }
        }
        for (Thread t : carriers) {
            if (t == null || t == Thread.currentThread()) {
                continue;
            }
            try {
                t.join(CLOSE_WAIT);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }

    private Thread newCarrier(String threadName) {
        return Thread.ofPlatform().name(threadName).daemon(true).unstarted(this::carry);
    }

    /**
     * A carrier thread's loop: mount what is queued, one at a time, until told to stop. Mostly the
     * carrier itself queued the next (the running task unparked it), so the queue is rarely empty;
     * when it is, the carrier says it is idle, looks once more, and parks until {@link #execute}.
     */
    private void carry() {
        while (true) {
            Runnable r;
            while ((r = queue.poll()) == null) {
                idle.incrementAndGet();
                if (queue.isEmpty()) { // looked at after saying so: an execute since then unparks us
                    LockSupport.park(this);
                }
                idle.decrementAndGet();
            }
            if (r == STOP) {
                return;
            }
            r.run();
        }
    }

    private static Thread.Builder.OfVirtual scheduledBy(Executor scheduler) {
        try {
            return (Thread.Builder.OfVirtual) SCHEDULED_BUILDER.invoke(scheduler);
        } catch (Throwable t) {
            throw new IllegalStateException("cannot build a virtual thread builder on a run's own carrier", t);
        }
    }

    private static MethodHandle scheduledBuilder() {
        try {
            Class<?> c = Class.forName("java.lang.ThreadBuilders$VirtualThreadBuilder");
            Constructor<?> ctor = c.getDeclaredConstructor(Executor.class);
            ctor.setAccessible(true);
            return MethodHandles.lookup().unreflectConstructor(ctor);
        } catch (ReflectiveOperationException | RuntimeException e) {
            return null; // java.lang not opened to us, or the JDK changed: use the shared pool
        }
    }
}
