package io.blkstack.mem;

/**
 * A cache that gives memory back under pressure (the kernel's {@code struct shrinker}).
 *
 * <p>Rule 3 of DESIGN.md section 1: reclaim never waits for I/O. Under the fixed policies
 * {@link #scan} frees only what it can without blocking and hands the rest to a workqueue.
 */
public interface Shrinker {

    /** A name for counters and explanations. */
    String name();

    /** How many objects could be freed now, roughly. */
    long count();

    /**
     * Frees up to {@code toScan} objects.
     *
     * @param gfp the flags of the allocation on whose behalf reclaim runs
     * @return how many were freed
     */
    long scan(long toScan, int gfp);
}
