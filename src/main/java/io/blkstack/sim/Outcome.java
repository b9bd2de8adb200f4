package io.blkstack.sim;

/** How a simulated run ended. Everything but {@link #OK} is a finding. */
public enum Outcome {
    /** Every task of the workload finished and the kernel closed cleanly. */
    OK,
    /** Tasks that owe work are blocked and nothing can wake them. */
    DEADLOCK,
    /** Only retry timers fire and the state does not change across rounds. */
    LIVELOCK,
    /** A kernel object was misused: blocking in atomic context, double free, leak at close. */
    MISUSE,
    /** A read returned data other than what the workload's reference model says was last written. */
    DATA_MISMATCH,
    /** A task died of an exception. */
    CRASH,
    /** The running task did not reach a scheduling point within the real-time bound. */
    UNCONTROLLED_BLOCKING,
    /** The run took more scheduling steps than allowed. */
    STEP_LIMIT,
    /** The virtual clock passed its limit. */
    TIME_LIMIT;

    /** Whether this outcome is a finding (something to report). */
    public boolean isFinding() {
        return this != OK;
    }
}
