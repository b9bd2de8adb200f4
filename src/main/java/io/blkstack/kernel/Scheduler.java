package io.blkstack.kernel;

import java.util.List;

/**
 * Runs a kernel's tasks and owns its clock and timers.
 *
 * <p>Every blocking operation in blkstack ends in {@link #sleep}; every wake-up in {@link #wake}.
 * Components never block any other way (DESIGN.md section 7), which is what lets a deterministic
 * scheduler replace the real one without changing a line of component code. The contract is the
 * kernel's {@code set_current_state} / {@code schedule} / {@code wake_up_process} triple:
 * {@link #prepareToSleep} clears a pending wake-up, {@link #wake} sets it, and {@link #sleep}
 * returns at once if it is set. Callers re-check their condition in a loop, so spurious returns
 * are allowed.
 */
public interface Scheduler extends AutoCloseable {

    /** Binds this scheduler to the kernel it serves; called once by {@link Kernel}. */
    void bind(Kernel kernel);

    /** Starts a new task that runs {@code body} and exits when it returns. */
    Task spawn(String name, TaskKind kind, Runnable body);

    /** Makes the calling thread, which the scheduler did not start, a task of this kernel. */
    Task attach(String name);

    /** Undoes {@link #attach} for the calling thread. */
    void detach(Task task);

    /** Clears any pending wake-up of {@code self}; the next {@link #sleep} blocks until a new one. */
    void prepareToSleep(Task self);

    /**
     * Blocks {@code self} until it is woken or the timeout passes.
     *
     * @param timeoutNanos how long to sleep at most, or a negative value to sleep until woken
     * @return true if woken, false if the timeout passed first
     */
    boolean sleep(Task self, long timeoutNanos);

    /** Wakes {@code task} if it sleeps, or makes its next {@link #sleep} return at once. */
    void wake(Task task);

    /** A point where another task may run; the real scheduler ignores it. */
    void preemptionPoint(Task self);

    /** Gives other runnable tasks a turn. */
    void yieldNow(Task self);

    /** The kernel's monotonic clock in nanoseconds (virtual under simulation). */
    long nanoTime();

    /** Runs {@code callback} in timer context after {@code delayNanos}; the callback must not block. */
    Timer addTimer(long delayNanos, String name, Runnable callback);

    /** The live tasks, for the watchdog and the checker. */
    List<Task> tasks();

    /** Waits for {@code task} to exit; used only at shutdown. */
    void join(Task task);

    /** Whether this scheduler runs tasks one at a time under a seeded strategy. */
    boolean isSimulated();

    /**
     * Whether the run was torn down (the simulator, after a finding): tasks are being unwound, and
     * an exception one of them meets now is a consequence of the teardown, not a bug to report.
     */
    default boolean tornDown() {
        return false;
    }

    /** Stops the timer machinery; tasks must have exited before. */
    @Override
    void close();
}
