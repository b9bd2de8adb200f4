package io.blkstack.kernel;

import java.util.concurrent.atomic.AtomicLong;

/**
 * The bytes of the Java heap that a kernel's memory devices may fill with data (the {@code brd}
 * ram disk's limit is the machine's memory; here it is the heap, which the JVM cannot grow past
 * {@code -Xmx}). Half the heap by default: the rest is the JVM's own, and the collector's room. A
 * memory device charges each 4 KiB chunk it creates and releases it when the chunk is dropped or
 * the device closes; a write that would pass the limit fails with ENOSPC instead of taking the
 * server down with an {@link OutOfMemoryError}. Never blocks.
 */
public final class HeapQuota {

    private final long limitBytes;
    private final AtomicLong usedBytes = new AtomicLong();

    /** A quota of {@code limitBytes}. */
    public HeapQuota(long limitBytes) {
        if (limitBytes < 0) {
            throw new IllegalArgumentException("heap quota " + limitBytes + " bytes");
        }
        this.limitBytes = limitBytes;
    }

    /** Half the JVM's maximum heap. */
    public static HeapQuota ofHeap() {
        return new HeapQuota(Runtime.getRuntime().maxMemory() / 2);
    }

    /** Takes {@code bytes}; false (nothing taken) if they would pass the limit. */
    public boolean charge(long bytes) {
        while (true) {
            long used = usedBytes.get();
            if (used + bytes > limitBytes) {
                return false;
            }
            if (usedBytes.compareAndSet(used, used + bytes)) {
                return true;
            }
        }
    }

    /** Gives back {@code bytes} taken before. */
    public void release(long bytes) {
        long left = usedBytes.addAndGet(-bytes);
        if (left < 0) {
            throw new IllegalStateException("heap quota released " + bytes + " bytes more than were charged");
        }
    }

    /** The limit in bytes. */
    public long limitBytes() {
        return limitBytes;
    }

    /** The bytes charged now. */
    public long usedBytes() {
        return usedBytes.get();
    }
}
