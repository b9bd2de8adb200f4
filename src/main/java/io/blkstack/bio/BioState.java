package io.blkstack.bio;

/**
 * Where a bio is in its life, for the checker's wait-for explanations: together with
 * {@link Bio#holder()} it says who owes the bio's completion (and so its pool element).
 */
public enum BioState {
    /** In its pool; holder is the bio set. */
    FREE,
    /** Allocated and not yet submitted; holder is the allocating task. */
    ALLOCATED,
    /** On a task's pending submit lists; holder is that task. */
    PENDING,
    /** Handed to a device; holder is the device. */
    IN_FLIGHT,
    /** Punted to a bio set's rescuer; holder is the bio set. */
    RESCUE,
    /**
     * Held by a driver on a queue of its own until a resource comes back (a thin pool's writes
     * waiting for data space); holder names the queue and what it waits for.
     */
    QUEUED,
    /** Its completion is running; holder is the completing task (may be null). */
    COMPLETING
}
