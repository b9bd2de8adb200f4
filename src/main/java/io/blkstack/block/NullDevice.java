package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.kernel.Kernel;

/**
 * A device that stores nothing (the kernel's {@code null_blk}): writes vanish, reads return zeros,
 * every bio succeeds. With {@code latencyNanos == 0} it completes each bio in {@link #submitBio};
 * otherwise a kernel timer completes it after the latency, with at most {@code queueDepth} bios
 * waiting for their timers. Used to measure the block layer itself and to give scenarios a device
 * with a controlled latency. Fault sites: {@code io:<name>} (IOERR), {@code latency:<name>}.
 */
public final class NullDevice extends LatencyDevice {

    /** Bios that may wait for their completion timers at once, unless the constructor says otherwise. */
    public static final int DEFAULT_QUEUE_DEPTH = 128;

    /** A null device of {@code sizeBytes} that completes after {@code latencyNanos} (0: at once). */
    public NullDevice(Kernel kernel, String name, long sizeBytes, long latencyNanos) {
        this(kernel, name, sizeBytes, latencyNanos, DEFAULT_QUEUE_DEPTH);
    }

    /** A null device with at most {@code queueDepth} bios awaiting their completion timers. */
    public NullDevice(Kernel kernel, String name, long sizeBytes, long latencyNanos, int queueDepth) {
        super(kernel, "null device", name, sizeBytes, QueueLimits.defaults(), latencyNanos, queueDepth);
    }

    /** Zero-fills a read; everything else succeeds without effect. */
    @Override
    void serve(Bio bio) {
        if (bio.op() == BioOp.READ && bio.sizeBytes() > 0) {
            bio.zeroFill();
        }
    }

    @Override
    public String describeState() {
        return "null device " + name() + ": " + capacitySectors() + " sectors, latency " + latencyNanos() + " ns, "
                + inFlight() + " awaiting completion";
    }
}
