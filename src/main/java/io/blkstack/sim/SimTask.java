package io.blkstack.sim;

import io.blkstack.kernel.Task;
import java.util.ArrayList;
import java.util.List;

/**
 * The simulator's record of one task: its thread, whether it may run, its pending wake-up, its
 * timeout timer and its strategy priority. Kept in {@link Task#schedulerState}. Fields are written
 * only by the holder of the simulator's token; the volatile {@link #granted} flag is the token.
 */
final class SimTask {

    /** Where a task is in its life. */
    enum State { RUNNABLE, BLOCKED, EXITED }

    final Task task;
    final long id;
    /** Its index among the run's tasks in spawn order (which is id order). */
    int ordinal;
    Thread thread;
    volatile boolean granted;
    State state = State.RUNNABLE;
    boolean permit;
    boolean timedOut;
    SimScheduler.SimTimer timeout;
    long priority;
    final List<SimTask> joiners = new ArrayList<>(2);
    /** Timeout wake-ups during the current stall, for livelock detection. */
    int retriesInStall;
    /** Whether the current block has a timeout (a retry) rather than waiting for a wake-up only. */
    boolean blockedWithTimeout;

    SimTask(Task task) {
        this.task = task;
        this.id = task.id();
    }

    boolean runnable() {
        return state == State.RUNNABLE;
    }

    @Override
    public String toString() {
        return task.toString();
    }
}
