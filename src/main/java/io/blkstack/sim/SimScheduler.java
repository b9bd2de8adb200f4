package io.blkstack.sim;

import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Scheduler;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.Timer;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.PriorityQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.function.Function;

/**
 * The deterministic scheduler: every task is a virtual thread, but exactly one holds the token and
 * runs at a time. The token passes only at scheduling points — {@link #sleep}, {@link #yieldNow},
 * {@link #preemptionPoint} and task exit — to the task a seeded {@link Strategy} picks, so a seed
 * replays the same interleaving.
 *
 * <p>The <em>controller</em> is a virtual thread too, started by {@link #run}. It is bound to the
 * kernel's timer task and fires timers there in atomic context (so a callback that blocks is
 * reported as misuse, exactly as under the real scheduler), advances the virtual clock to the next
 * timer when no task can run, and detects the findings: deadlock (no task can run, no timer can
 * wake one, and some task owes work), livelock (only retry timers fire and a fingerprint of tasks'
 * waits, components and free pages does not change over several rounds), misuse and crashes (the
 * kernel's reports). Tasks hand the token straight to each other while the controller is not
 * needed.
 *
 * <p>Why virtual threads: a hand-over is "unpark exactly the next one, then park". Between platform
 * threads both halves are system calls and a sleep/wake-up of the OS scheduler; between virtual
 * threads the unparked one is queued for a carrier and the parking one unmounts, so the carrier
 * picks the next up at once: no system call per switch. Each run has a carrier thread of its own
 * ({@link SimCarrier}), so the next task runs on the same core and runs side by side do not share
 * one; where the JDK refuses that, the JDK's shared pool carries them. Only one task ever runs, so
 * the carrier changes nothing in the trace. What must block is always a kernel primitive (a
 * scheduling point): JDK 24 and later no longer pin a virtual thread inside {@code synchronized}.
 *
 * <p>The thread that calls {@link #run} stays a platform thread and is the watchdog: it waits for
 * the controller to finish and, if the running task reaches no scheduling point within a real-time
 * bound, reports uncontrolled blocking (the task blocks outside the kernel primitives, or spins);
 * it first gives the run a second carrier, since a spinning task holds the first.
 *
 * <p>All scheduler state is touched only by the token holder; the volatile token flags order the
 * hand-overs. After a run the caller tears it down: every task thread is unparked with
 * a "killed" signal that makes its scheduling point throw a private {@link Error}, which unwinds
 * the task to its wrapper, and every thread is joined.
 */
public final class SimScheduler implements Scheduler {

    /** Unwinds a torn-down task; caught by the task wrapper only. Thrown new each time (it takes no stack trace). */
    private static final class Killed extends Error {
        Killed() {
            super("simulated task torn down", null, false, false);
        }
    }


    /** Data mismatch reports kept per run. */
    static final int DATA_MISMATCHES_MAX = 8;

    /** How many uncontrolled-blocking bounds the watchdog waits for the controller after silencing a task. */
    private static final int SILENCED_END_BOUNDS = 4;
    /**
     * Looks of the watchdog per real-time bound: a silent task is found between one bound and
     * one bound and a look after its last scheduling point.
     */
    private static final int WATCH_LOOKS = 8;

    /** How long teardown waits for one task thread to unwind. */
    private static final long JOIN_MILLIS = 2_000;

    /** What a finished run's controller loop found. */
    record Finding(Outcome outcome, String headline, SimTask culprit) {
    }

    /** A pending timer: a kernel callback, or the timeout of one sleeping task. */
    final class SimTimer implements Timer, Comparable<SimTimer> {
        final long deadline;
        final long sequence;
        final String name;
        final Runnable callback;
        final SimTask sleeper;
        boolean pending = true;

        SimTimer(long deadline, long sequence, String name, Runnable callback, SimTask sleeper) {
            this.deadline = deadline;
            this.sequence = sequence;
            this.name = name;
            this.callback = callback;
            this.sleeper = sleeper;
        }

        @Override
        public boolean cancel() {
            if (!pending || killed) {
                return false;
            }
            pending = false;
            timers.remove(this);
            return true;
        }

        @Override
        public int compareTo(SimTimer o) {
            int c = Long.compare(deadline, o.deadline);
            return c != 0 ? c : Long.compare(sequence, o.sequence);
        }

        @Override
        public String toString() {
            return "timer " + name + " at " + deadline + " ns";
        }
    }

    /** What a joiner waits on, for the watchdog and explanations. */
    record JoinWait(Task target) {
        @Override
        public String toString() {
            return "exit of " + target;
        }
    }

    private final SimConfig config;
    private final SimRandom random;
    private final Strategy strategy;
    private final SimTrace trace;
    private final List<SimTask> live = new ArrayList<>();
    private final List<SimTask> all = new ArrayList<>();
    private final List<SimTask> scratch = new ArrayList<>();
    /** The runnable tasks, by {@link SimTask#ordinal} (an index into {@link #all}); kept by {@link #setState}. */
    private final BitSet runnable = new BitSet();
    private int runnableCount;
    private final PriorityQueue<SimTimer> timers = new PriorityQueue<>();
    private Kernel kernel;
    private Task timerTask;
    private AtomicLong misuseCount;
    private AtomicLong crashCount;
    private long now;
    private long timerSequence;
    private long steps;
    private long decisions;
    private long stallFingerprint;
    /** The least virtual time a timers-only stall must last before it is called a livelock. */
    static final long STALL_NANOS_MIN = 1_000_000_000L;
    private int stallJumps;
    /** When the current stall (unchanged fingerprint) began, in virtual time. */
    private long stallSinceNanos;
    /** The waits of the tasks that owe work at the last stall check, and since when they are unchanged. */
    private long owingWaits;
    private long owingWaitsSinceNanos;
    /** The timer sequence number when those waits were first seen: timeouts armed before it have not fired since. */
    private long owingWaitsSinceSequence;
    private SimTask main;
    private boolean mainExited;
    private boolean closed;
    private Thread controller;
    /** The carrier that mounts this run's virtual threads (its own thread unless configured or refused). */
    private final SimCarrier carrier;
    /** Set by the watchdog when the running task went silent; the controller then ends the run. */
    private volatile boolean silenced;
    private Finding controllerFinding;
    private Throwable controllerFailure;
    private String explanation = "";
    private volatile boolean killed;
    private volatile boolean controllerTurn;
    private volatile SimTask running;
    /**
     * Scheduling points so far, for the watchdog: written only by the token holder (an opaque
     * store, no fence and no clock read per point), read by the watchdog now and then.
     */
    private final AtomicLong points = new AtomicLong();
    private int leakedThreads;
    private final List<String> dataMismatches = new ArrayList<>();

    /** A scheduler for one run; {@code strategy} and the faults must share {@code random}. */
    SimScheduler(SimConfig config, SimRandom random, Strategy strategy, SimTrace trace) {
        this.config = config;
        this.random = random;
        this.strategy = strategy;
        this.trace = trace;
        this.carrier = SimCarrier.open("sim-" + random.seed(), config.ownCarrier());
        trace.clock(() -> now);
    }

    // ---- Scheduler ---------------------------------------------------------------------------

    @Override
    public void bind(Kernel value) {
        if (this.kernel != null) {
            throw new IllegalStateException("simulated scheduler already bound to " + this.kernel);
        }
        this.kernel = value;
        this.timerTask = value.newTask("timer", TaskKind.TIMER);
        this.misuseCount = value.counters().get("misuse");
        this.crashCount = value.counters().get("task.crashes");
    }

    @Override
    public Task spawn(String name, TaskKind kind, Runnable body) {
        if (killed) {
            throw new IllegalStateException("simulation torn down; cannot spawn " + name);
        }
        Task task = kernel.newTask(name, kind);
        SimTask st = new SimTask(task);
        task.schedulerState = st;
        if (!live.isEmpty() && live.get(live.size() - 1).id >= st.id) {
            throw new IllegalStateException("task ids must grow: " + st + " after " + live.get(live.size() - 1));
        }
        st.ordinal = all.size();
        live.add(st);
        all.add(st);
        runnable.set(st.ordinal);
        runnableCount++;
        strategy.onSpawn(st);
        trace.record(taskName(), "spawn", task.toString());
        Thread thread = carrier.unstarted("sim-" + random.seed() + "/" + task, () -> taskMain(st, body));
        st.thread = thread;
        if (main == null) {
            main = st;
        }
        thread.start();
        return task;
    }

    @Override
    public Task attach(String name) {
        throw new UnsupportedOperationException("the simulated scheduler cannot attach thread "
                + Thread.currentThread().getName() + " as " + name + ": spawn a task instead");
    }

    @Override
    public void detach(Task task) {
        throw new UnsupportedOperationException("the simulated scheduler has no attached tasks: " + task);
    }

    @Override
    public void prepareToSleep(Task self) {
        SimTask st = simTask(self);
        if (st != null) {
            st.permit = false;
        }
    }

    @Override
    public boolean sleep(Task self, long timeoutNanos) {
        if (killed) {
            throw new Killed();
        }
        SimTask st = ownTask(self);
        if (st.permit) {
            st.permit = false;
            return true;
        }
        if (timeoutNanos == 0) {
            return false;
        }
        setState(st, SimTask.State.BLOCKED);
        st.timedOut = false;
        st.blockedWithTimeout = timeoutNanos > 0;
        if (timeoutNanos > 0) {
            long deadline = now + timeoutNanos < now ? Long.MAX_VALUE : now + timeoutNanos;
            st.timeout = new SimTimer(deadline, timerSequence++, "timeout", null, st);
            timers.add(st.timeout);
        }
        if (timeoutNanos < 0) {
            trace.record(self.toString(), "sleep", "");
        } else {
            trace.record(self.toString(), "sleep", "", "", timeoutNanos);
        }
        reschedule(st);
        boolean woken = !st.timedOut;
        st.timedOut = false;
        return woken;
    }

    @Override
    public void wake(Task task) {
        if (killed) {
            return;
        }
        SimTask st = simTask(task);
        if (st == null || st.state == SimTask.State.EXITED) {
            return;
        }
        if (st.state == SimTask.State.BLOCKED) {
            if (st.timeout != null) {
                st.timeout.cancel();
                st.timeout = null;
            }
            st.timedOut = false;
            setState(st, SimTask.State.RUNNABLE);
            trace.record(taskName(), "wake", task.toString());
        } else {
            st.permit = true;
        }
    }

    @Override
    public void preemptionPoint(Task self) {
        if (killed) {
            return;
        }
        SimTask st = simTask(self);
        if (st == null || !self.mayBlock() || Thread.currentThread() != st.thread) {
            return; // timer context, atomic context or a spin lock held: no hand-over here
        }
        reschedule(st);
    }

    @Override
    public void yieldNow(Task self) {
        if (killed) {
            throw new Killed();
        }
        SimTask st = ownTask(self);
        strategy.onDemote(st);
        trace.record(self.toString(), "yield", "");
        reschedule(st);
    }

    @Override
    public long nanoTime() {
        return now;
    }

    @Override
    public Timer addTimer(long delayNanos, String name, Runnable callback) {
        if (delayNanos < 0) {
            throw new IllegalArgumentException("timer " + name + ": negative delay " + delayNanos + " ns");
        }
        if (closed) {
            throw new IllegalStateException("timer " + name + " added after the scheduler closed");
        }
        long deadline = now + delayNanos < now ? Long.MAX_VALUE : now + delayNanos;
        SimTimer timer = new SimTimer(deadline, timerSequence++, name, callback, null);
        if (killed) {
            timer.pending = false; // torn down: the timer never fires
            return timer;
        }
        timers.add(timer);
        trace.record(taskName(), "add-timer", name, " +", delayNanos);
        return timer;
    }

    @Override
    public List<Task> tasks() {
        List<Task> list = new ArrayList<>(live.size());
        for (SimTask st : live) {
            list.add(st.task);
        }
        return list;
    }

    @Override
    public void join(Task task) {
        SimTask target = simTask(task);
        if (target == null || target.state == SimTask.State.EXITED) {
            return;
        }
        Task self = Task.current();
        SimTask me = ownTask(self);
        if (me == target) {
            throw new IllegalStateException("task " + self + " joins itself");
        }
        JoinWait what = new JoinWait(task);
        boolean started = self.beginWait(what, false);
        try {
            target.joiners.add(me);
            while (target.state != SimTask.State.EXITED) {
                me.permit = false;
                self.sleep(what, -1);
            }
        } finally {
            target.joiners.remove(me);
            self.endWait(started);
        }
    }

    @Override
    public boolean isSimulated() {
        return true;
    }

    @Override
    public boolean tornDown() {
        return killed;
    }

    @Override
    public void close() {
        closed = true;
    }

    /**
     * A workload's data check found a read that disagrees with its reference model; the run ends as
     * {@link Outcome#DATA_MISMATCH} at the reporting task's next scheduling point. Called by the
     * token holder only; at most {@link #DATA_MISMATCHES_MAX} reports are kept.
     */
    public void reportDataMismatch(Task task, String what) {
        if (killed) {
            return;
        }
        if (dataMismatches.size() < DATA_MISMATCHES_MAX) {
            dataMismatches.add(task + ": " + what);
        }
        trace.record(task == null ? "-" : task.toString(), "data-mismatch", what);
    }

    // ---- accessors ---------------------------------------------------------------------------

    /** The run's random stream, for simulated devices' latencies. */
    public SimRandom random() {
        return random;
    }

    /** The run's trace. */
    public SimTrace trace() {
        return trace;
    }

    /** Scheduling steps so far. */
    public long steps() {
        return steps;
    }

    /** Steps at which more than one task could run. */
    public long decisions() {
        return decisions;
    }

    /** What the run's explainer said about its finding; empty after a clean run. */
    String explanation() {
        return explanation;
    }

    /** Task threads that did not exit at teardown. */
    int leakedThreads() {
        return leakedThreads;
    }

    /** The live tasks, sorted by id (for explanations). */
    List<SimTask> liveTasks() {
        return List.copyOf(live);
    }

    // ---- the task side -----------------------------------------------------------------------

    /** Body of every task thread: wait for the token, run, exit, hand the token on. */
    private void taskMain(SimTask st, Runnable body) {
        Task task = st.task;
        task.bindToCurrentThread();
        try {
            awaitGrant(st);
            body.run();
        } catch (Killed k) {
            // torn down after a finding: unwind quietly
        } catch (Throwable t) {
            if (!killed) {
                kernel.reportCrash(task, t);
            }
        } finally {
            task.unbindFromCurrentThread();
            if (killed) {
                st.state = SimTask.State.EXITED; // torn down: no one picks again, and tasks end at once
            } else {
                exit(st);
            }
        }
    }

    /** A task ends: wake its joiners and pass the token on without waiting for it again. */
    private void exit(SimTask st) {
        setState(st, SimTask.State.EXITED);
        if (st.timeout != null) {
            st.timeout.cancel();
            st.timeout = null;
        }
        live.remove(st);
        if (st == main) {
            mainExited = true;
        }
        for (SimTask joiner : List.copyOf(st.joiners)) {
            wake(joiner.task);
        }
        trace.record(st.task.toString(), "exit", "");
        steps++;
        handOff(needController() ? null : chooseRunnable());
    }

    /**
     * A scheduling point of the token holder {@code self} (its state already set): picks who runs
     * next and, if that is someone else, hands the token over and waits for it to come back.
     */
    private void reschedule(SimTask self) {
        points.setOpaque(points.getPlain() + 1);
        steps++;
        SimTask next = needController() ? null : chooseRunnable();
        if (next == self) {
            return;
        }
        handOff(next);
        awaitGrant(self);
    }

    /** Whether the controller must act before any task runs on. */
    private boolean needController() {
        if (mainExited || steps >= config.maxSteps() || misuseCount.get() > 0 || crashCount.get() > 0
                || !dataMismatches.isEmpty()) {
            return true;
        }
        SimTimer head = timers.peek();
        return head != null && head.deadline <= now;
    }

    /** Gives the token to {@code next}, or to the controller if null. */
    private void handOff(SimTask next) {
        if (next == null) {
            running = null;
            controllerTurn = true;
            LockSupport.unpark(controller);
        } else {
            grant(next);
        }
    }

    private void grant(SimTask next) {
        running = next;
        points.setOpaque(points.getPlain() + 1);
        next.granted = true;
        LockSupport.unpark(next.thread);
    }

    /** Parks until this task holds the token; throws {@link Killed} on teardown. */
    private void awaitGrant(SimTask self) {
        while (!self.granted) {
            if (killed) {
                throw new Killed();
            }
            LockSupport.park(this);
        }
        self.granted = false;
        if (killed) {
            throw new Killed();
        }
    }

    /** Moves a task to {@code state}, keeping the runnable set (every change of state but teardown's). */
    private void setState(SimTask st, SimTask.State state) {
        boolean was = st.state == SimTask.State.RUNNABLE;
        boolean is = state == SimTask.State.RUNNABLE;
        st.state = state;
        if (was != is) {
            runnable.set(st.ordinal, is);
            runnableCount += is ? 1 : -1;
        }
    }

    /**
     * The runnable tasks by id, one of them picked by the strategy when there is a choice. Most
     * scheduling points have one runnable task or none: those read the count and at most one bit.
     */
    private SimTask chooseRunnable() {
        if (runnableCount == 0) {
            return null;
        }
        if (runnableCount == 1) {
            return all.get(runnable.nextSetBit(0));
        }
        scratch.clear();
        for (int i = runnable.nextSetBit(0); i >= 0; i = runnable.nextSetBit(i + 1)) {
            scratch.add(all.get(i));
        }
        decisions++;
        SimTask chosen = strategy.choose(scratch, decisions);
        trace.record("sim", "pick", chosen.task.toString(), "/", scratch.size());
        return chosen;
    }

    // ---- the controller ----------------------------------------------------------------------

    /**
     * Runs the simulation until the main task and everything it waited for finished, or until a
     * finding. The controller runs on a virtual thread; the calling thread watches it (see
     * {@link #watch}). When the run ends in a finding, the controller calls {@code explain} while
     * every task is still parked where it blocked and it is still the timer task (explanations take
     * the kernel's spin locks); the text is then {@link #explanation()}. Returns what ended the
     * run; the caller must then call {@link #tearDown}.
     */
    Finding run(Function<Finding, String> explain) {
        if (controller != null) {
            throw new IllegalStateException("a simulated scheduler runs once");
        }
        if (main == null) {
            throw new IllegalStateException("no task to run: spawn the main task first");
        }
        if (Thread.currentThread().isVirtual()) {
            throw new IllegalStateException("the simulation's watchdog must be a platform thread, not "
                    + Thread.currentThread());
        }
        controller = carrier.unstarted("sim-" + random.seed() + "/controller", () -> controllerMain(explain));
        controller.start();
        watch();
        if (controllerFailure != null) {
            throw new IllegalStateException("simulation controller failed: " + controllerFailure, controllerFailure);
        }
        if (controllerFinding == null) {
            throw new IllegalStateException("simulation controller ended without an outcome");
        }
        return controllerFinding;
    }

    /** Body of the controller thread: bound to the timer task for the length of the run. */
    private void controllerMain(Function<Finding, String> explain) {
        timerTask.bindToCurrentThread();
        try {
            Finding f = loop();
            if (f.outcome().isFinding()) {
                explanation = explain.apply(f);
            }
            controllerFinding = f;
        } catch (Throwable t) {
            controllerFailure = t;
        } finally {
            timerTask.unbindFromCurrentThread();
        }
    }

    /**
     * The watchdog, on the caller's platform thread: waits for the controller to end, looking
     * {@link #WATCH_LOOKS} times per real-time bound whether the count of scheduling points moved.
     * When a task has held the token for longer than {@link SimConfig#uncontrolledBlockingNanos}
     * without reaching a scheduling point, tells the controller to end the run as
     * {@link Outcome#UNCONTROLLED_BLOCKING}.
     */
    private void watch() {
        long bound = config.uncontrolledBlockingNanos();
        long look = Math.max(bound / WATCH_LOOKS, 1);
        long seen = points.getOpaque();
        long seenAt = System.nanoTime();
        long lastLook = seenAt;
        long silencedAt = 0;
        try {
            while (!controller.join(java.time.Duration.ofNanos(look))) {
                long t = System.nanoTime();
                long stalled = t - lastLook - look;
                lastLook = t;
                if (stalled > look) {
                    // This thread did not run for a while: the whole process was stopped (SIGSTOP,
                    // a paused background campaign) or starved. The tasks did not run either, so
                    // the gap is not held against the running one.
                    seenAt += stalled;
                    silencedAt += stalled;
                }
                if (silenced && t - silencedAt > SILENCED_END_BOUNDS * bound) {
                    killed = true;
                    throw new IllegalStateException("the simulation's controller did not end " + SILENCED_END_BOUNDS
                            + " real-time bounds after task " + running + " went silent");
                }
                long p = points.getOpaque();
                if (p != seen) { // a scheduling point since the last look
                    seen = p;
                    seenAt = t;
                    continue;
                }
                if (!silenced && running != null && t - seenAt >= bound) {
                    silenced = true;
                    silencedAt = t;
                    carrier.rescue(); // the silent task may be holding the run's only carrier
                    LockSupport.unpark(controller);
                }
            }
        } catch (InterruptedException e) {
            killed = true;
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while the simulation ran", e);
        }
    }

    private Finding loop() {
        while (true) {
            fireDueTimers();
            Finding f = reported();
            if (f != null) {
                return f;
            }
            if (steps >= config.maxSteps()) {
                return new Finding(Outcome.STEP_LIMIT, "no end after " + steps + " scheduling steps", null);
            }
            steps++;
            SimTask next = chooseRunnable();
            if (next != null) {
                controllerTurn = false;
                grant(next);
                if (!awaitController()) {
                    SimTask culprit = running;
                    return new Finding(Outcome.UNCONTROLLED_BLOCKING, "task " + culprit
                            + " reached no scheduling point for "
                            + TimeUnit.NANOSECONDS.toMillis(config.uncontrolledBlockingNanos())
                            + " ms of real time: it blocks outside the kernel primitives", culprit);
                }
                continue;
            }
            if (mainExited) {
                if (!live.isEmpty()) {
                    String msg = "task(s) still alive after the main task closed the kernel: " + live;
                    kernel.reportMisuse(null, msg);
                    return new Finding(Outcome.MISUSE, msg, null);
                }
                return new Finding(Outcome.OK, "all tasks finished", null);
            }
            f = stalled();
            if (f != null) {
                return f;
            }
            SimTimer head = timers.peek();
            if (head.deadline > config.maxVirtualNanos()) {
                return new Finding(Outcome.TIME_LIMIT, "next event at " + head.deadline + " ns is past the virtual time limit "
                        + config.maxVirtualNanos() + " ns", null);
            }
            now = head.deadline;
        }
    }

    /** Misuse, data mismatches and crashes reported during the run, in that order of precedence. */
    private Finding reported() {
        if (misuseCount.get() > 0) {
            List<String> m = kernel.misuses();
            return new Finding(Outcome.MISUSE, m.isEmpty() ? "misuse reported" : String.join("; ", m), null);
        }
        if (!dataMismatches.isEmpty()) {
            return new Finding(Outcome.DATA_MISMATCH, String.join("; ", dataMismatches), null);
        }
        if (crashCount.get() > 0) {
            List<String> c = kernel.crashes();
            return new Finding(Outcome.CRASH, c.isEmpty() ? "task crashed" : c.get(0), null);
        }
        return null;
    }

    /** Waits for the token to come back to the controller; false if the watchdog found the running task silent. */
    private boolean awaitController() {
        while (!controllerTurn) {
            if (silenced) {
                return false;
            }
            LockSupport.park(this);
        }
        return true;
    }

    /** Fires every timer that is due, in deadline order: timeouts wake sleepers, callbacks run in atomic context. */
    private void fireDueTimers() {
        for (SimTimer t = timers.peek(); t != null && t.deadline <= now; t = timers.peek()) {
            timers.poll();
            t.pending = false;
            SimTask sleeper = t.sleeper;
            if (sleeper != null) {
                if (sleeper.timeout == t && sleeper.state == SimTask.State.BLOCKED) {
                    sleeper.timeout = null;
                    sleeper.timedOut = true;
                    setState(sleeper, SimTask.State.RUNNABLE);
                    sleeper.retriesInStall++;
                    if (sleeper.task.waitingOn() != null) {
                        strategy.onDemote(sleeper); // a retry must not starve the task it waits for
                    }
                    trace.record("sim", "timeout", sleeper.task.toString());
                }
                continue;
            }
            trace.record("sim", "timer", t.name);
            timerTask.enterAtomic();
            try {
                t.callback.run();
            } catch (RuntimeException | Error e) {
                kernel.reportFault(timerTask, e);
            } finally {
                timerTask.exitAtomic();
            }
        }
    }

    /**
     * Nothing can run: decides between a deadlock, a livelock and waiting for the next timer.
     *
     * <p>With no timer at all, every blocked task is blocked for good. Otherwise the state's
     * fingerprint is compared with the previous time jump's: while it stays the same, every timeout
     * is a retry of the same wait. A livelock is when every task that owes work either waits without
     * a timeout or has retried {@link SimConfig#livelockRounds} times; with no retrying task, only
     * timers that cannot wake anyone who owes work (idle tasks' timeouts) mean a deadlock, and
     * kernel timers that keep firing without changing anything mean a livelock after
     * {@link SimConfig#stallJumpsMax} jumps spanning at least {@link #STALL_NANOS_MIN} of virtual time.
     * Before all that, {@link #stuckWaits} catches the stall whose fingerprint keeps changing.
     */
    private Finding stalled() {
        if (timers.isEmpty()) {
            return new Finding(Outcome.DEADLOCK, "no task can run and no timer is pending", null);
        }
        Finding stuck = stuckWaits();
        if (stuck != null) {
            return stuck;
        }
        long f = fingerprint();
        if (f != stallFingerprint) {
            stallFingerprint = f;
            stallJumps = 0;
            stallSinceNanos = now;
            for (SimTask t : live) {
                t.retriesInStall = 0;
            }
            return null;
        }
        stallJumps++;
        boolean retrying = false;
        for (SimTask t : live) {
            if (!owesWork(t)) {
                continue;
            }
            if (t.blockedWithTimeout) {
                if (t.retriesInStall < config.livelockRounds()) {
                    return null;
                }
                retrying = true;
            }
        }
        if (retrying) {
            return new Finding(Outcome.LIVELOCK, "only retry timers fire and nothing changed over "
                    + config.livelockRounds() + " retries of every waiting task (virtual time " + now + " ns)", null);
        }
        if (!timerThatMatters()) {
            return new Finding(Outcome.DEADLOCK, "no task can run and only idle tasks' timers are pending", null);
        }
        // Both many jumps and a long virtual time: a fast periodic timer (a sampling probe) must not
        // turn a wait for the slower kernel machinery (mayday every 100 ms) into a false livelock.
        if (stallJumps > config.stallJumpsMax() && now - stallSinceNanos >= STALL_NANOS_MIN) {
            return new Finding(Outcome.LIVELOCK, "only timers fire and nothing changed over " + stallJumps
                    + " time jumps (virtual time " + now + " ns)", null);
        }
        return null;
    }

    /**
     * The stall the fingerprint cannot see: timers keep changing something (periodic work such as a
     * buffer cache's eviction, a nested retry's counters), but no task that owes work has left its
     * logical wait for {@link SimConfig#stuckWaitNanosMax} of virtual time. If none of them waits
     * with a timeout, no timer can wake them: a deadlock; else they retry in vain: a livelock.
     * Without this such a run ran on to the time limit.
     */
    private Finding stuckWaits() {
        long h = 17;
        boolean anyOwing = false;
        boolean anyRetrying = false;
        for (SimTask t : live) {
            if (owesWork(t)) {
                anyOwing = true;
                anyRetrying |= t.blockedWithTimeout;
                h = h * 31 + t.id;
                h = h * 31 + System.identityHashCode(t.task.waitingOn());
                h = h * 31 + t.task.waitSinceNanos();
            }
        }
        if (!anyOwing || h != owingWaits) {
            owingWaits = h;
            owingWaitsSinceNanos = now;
            owingWaitsSinceSequence = timerSequence;
            return null;
        }
        long stuckNanos = now - owingWaitsSinceNanos;
        if (stuckNanos < config.stuckWaitNanosMax() || awaitsItsOwnTimeout()) {
            return null;
        }
        String since = stuckNanos / 1_000_000_000L + " s of virtual time (virtual time " + now + " ns)";
        return anyRetrying
                ? new Finding(Outcome.LIVELOCK, "tasks that owe work retry on timeouts but none has left its wait for "
                        + since, null)
                : new Finding(Outcome.DEADLOCK, "tasks that owe work wait without a timeout and none has left its wait"
                        + " for " + since + "; only other timers fire", null);
    }

    /**
     * Whether a task that owes work sleeps on a timeout armed before its wait was first seen stuck
     * and not yet fired: a long sleep (a delay, a no-space timeout) that ends by itself, not a retry.
     */
    private boolean awaitsItsOwnTimeout() {
        for (SimTask t : live) {
            SimTimer timeout = t.timeout;
            if (owesWork(t) && timeout != null && timeout.pending && timeout.sequence < owingWaitsSinceSequence) {
                return true;
            }
        }
        return false;
    }

    /** Whether a pending timer could wake a task that owes work: a kernel callback or such a task's timeout. */
    private boolean timerThatMatters() {
        for (SimTimer t : timers) {
            if (t.sleeper == null || owesWork(t.sleeper)) {
                return true;
            }
        }
        return false;
    }

    /** Whether a live task owes work: it is not an idle worker waiting for work. */
    static boolean owesWork(SimTask t) {
        return !(t.task.waitingOn() != null && t.task.waitIsIdle());
    }

    /**
     * A hash of what progress would change: every task's logical wait (object and start time; idle
     * tasks count only by id), every component's fingerprint, and the free page count. Identity
     * hashes are fine here: the value is only compared within one run.
     */
    private long fingerprint() {
        long h = 17;
        for (SimTask t : live) {
            h = h * 31 + t.id;
            if (owesWork(t)) {
                h = h * 31 + System.identityHashCode(t.task.waitingOn());
                h = h * 31 + t.task.waitSinceNanos();
                h = h * 31 + (t.blockedWithTimeout ? 1 : 0);
            }
        }
        for (Component c : kernel.components()) {
            h = h * 31 + c.fingerprint();
        }
        return h * 31 + kernel.pages().freePages();
    }

    /**
     * Ends the run: every task thread still alive gets the killed signal and is joined; the
     * controller thread leaves the timer task. Call once, after {@link #run}.
     */
    void tearDown(SimTask uncontrolled) {
        killed = true;
        trace.freeze();
        for (SimTask st : all) {
            LockSupport.unpark(st.thread);
        }
        if (uncontrolled != null) {
            uncontrolled.thread.interrupt();
        }
        joinController();
        for (SimTask st : all) {
            try {
                st.thread.join(JOIN_MILLIS);
                if (st.thread.isAlive()) {
                    st.thread.interrupt();
                    st.thread.join(JOIN_MILLIS);
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
            if (st.thread.isAlive()) {
                leakedThreads++;
            }
        }
        if (!anyThreadAlive()) {
            carrier.close(); // else the threads still alive keep their carrier, to end when they can
        }
    }

    private boolean anyThreadAlive() {
        if (controller != null && controller.isAlive()) {
            return true;
        }
        for (SimTask st : all) {
            if (st.thread.isAlive()) {
                return true;
            }
        }
        return false;
    }

    /** Waits for the controller thread to end (it has, unless {@link #run} failed half-way). */
    private void joinController() {
        if (controller == null) {
            return;
        }
        try {
            controller.join(java.time.Duration.ofMillis(JOIN_MILLIS));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** Marks the run over without killing anything: used after a clean end, when every task exited. */
    void finish() {
        tearDown(null);
    }

    // ---- helpers -----------------------------------------------------------------------------

    private static SimTask simTask(Task task) {
        return task.schedulerState instanceof SimTask st ? st : null;
    }

    /** The record of {@code self}, which must be a simulated task on its own thread holding the token. */
    private SimTask ownTask(Task self) {
        SimTask st = simTask(self);
        if (st == null) {
            throw new IllegalStateException("task " + self + " is not a simulated task (timer context or foreign thread)");
        }
        if (Thread.currentThread() != st.thread) {
            throw new IllegalStateException("task " + self + " used from thread " + Thread.currentThread().getName());
        }
        return st;
    }

    /** The name of the token holder for trace events: a task, or "sim" for the controller. */
    private String taskName() {
        Task t = Task.currentOrNull();
        return t == null ? "sim" : t.toString();
    }

    /** The current virtual time. */
    long virtualNanos() {
        return now;
    }
}
