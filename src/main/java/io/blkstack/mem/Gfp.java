package io.blkstack.mem;

import io.blkstack.kernel.Task;

/**
 * Allocation flags: what an allocation may do to get memory (the kernel's {@code gfp_t}).
 *
 * <ul>
 *   <li>{@link #NOWAIT}: never blocks, may fail;</li>
 *   <li>{@link #NOIO}: may block and reclaim, but reclaim must not start I/O;</li>
 *   <li>{@link #KERNEL}: may do anything.</li>
 * </ul>
 * {@link #NORETRY} asks the page allocator to try direct reclaim once and then fail instead of
 * waiting; mempools add it, as the kernel's {@code mempool_alloc} does.
 */
public final class Gfp {

    /** May run direct reclaim and sleep. */
    public static final int DIRECT_RECLAIM = 1;
    /** Reclaim may start I/O. */
    public static final int IO = 2;
    /** Fail after one reclaim attempt instead of waiting for memory. */
    public static final int NORETRY = 4;

    public static final int NOWAIT = 0;
    public static final int NOIO = DIRECT_RECLAIM;
    public static final int KERNEL = DIRECT_RECLAIM | IO;

    private Gfp() {
    }

    /** Whether an allocation with these flags may sleep. */
    public static boolean mayBlock(int gfp) {
        return (gfp & DIRECT_RECLAIM) != 0;
    }

    /** Whether reclaim on behalf of this allocation may start I/O. */
    public static boolean mayIo(int gfp) {
        return (gfp & IO) != 0;
    }

    /** The flags the current task may really use: a {@code noio} scope strips {@link #IO}. */
    public static int effective(int gfp, Task task) {
        return task != null && task.inNoio() ? gfp & ~IO : gfp;
    }

    /** A readable form such as {@code NOIO|NORETRY}. */
    public static String describe(int gfp) {
        String base = (gfp & KERNEL) == KERNEL ? "KERNEL" : mayBlock(gfp) ? "NOIO" : "NOWAIT";
        return (gfp & NORETRY) != 0 ? base + "|NORETRY" : base;
    }
}
