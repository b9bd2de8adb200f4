package io.blkstack.kernel;

/** What a task is for; the checker and the watchdog read it, nothing schedules by it. */
public enum TaskKind {
    /** A thread that called {@link Kernel#attach} (a test, a connection handler). */
    USER,
    /** A workqueue worker created on demand. */
    WORKER,
    /** A {@code MEM_RECLAIM} workqueue's rescuer, created up front. */
    RESCUER,
    /** The background reclaim task (the kernel's kswapd). */
    RECLAIM,
    /** A bottom device's I/O thread: stands for hardware. */
    DEVICE,
    /** The hung-task watchdog. */
    WATCHDOG,
    /** Timer context: callbacks that must not block. */
    TIMER
}
