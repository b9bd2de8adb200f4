package io.blkstack.dm;

/** What a target's {@link Target#map} did with a clone (the kernel's {@code DM_MAPIO_*}). */
public enum MapResult {
    /** The target pointed the clone at a device and sector; the core submits it. */
    REMAPPED,
    /**
     * The target took the clone over: it will submit it itself, or end it with
     * {@link io.blkstack.bio.Bio#endio} (with a status set), possibly already has.
     */
    SUBMITTED,
    /** Fail the clone with {@link io.blkstack.bio.BioStatus#IOERR} (or the status the target set). */
    KILL,
    /** Map the fragment again later, from the device's workqueue (and after a resume if suspended). */
    REQUEUE
}
