package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;

/**
 * A device that stores nothing (the kernel's {@code null_blk}): writes vanish, reads return zeros,
 * every bio succeeds. With {@code latencyNanos == 0} it completes each bio in {@link #submitBio};
 * otherwise a kernel timer completes it after the latency, with at most {@code queueDepth} bios
 * waiting for their timers. Used to measure the block layer itself and to give scenarios a device
 * with a controlled latency. Fault sites: {@code io:<name>} (IOERR), {@code latency:<name>}.
 */
public final class NullDevice extends BlockDevice {

    /** Bios that may wait for their completion timers at once, unless the constructor says otherwise. */
    public static final int DEFAULT_QUEUE_DEPTH = 128;

    private final long latencyNanos;
    private final TimerCompletions timers;
    private final String ioFaultSite;
    private final String latencyFaultSite;

    /** A null device of {@code sizeBytes} that completes after {@code latencyNanos} (0: at once). */
    public NullDevice(Kernel kernel, String name, long sizeBytes, long latencyNanos) {
        this(kernel, name, sizeBytes, latencyNanos, DEFAULT_QUEUE_DEPTH);
    }

    /** A null device with at most {@code queueDepth} bios awaiting their completion timers. */
    public NullDevice(Kernel kernel, String name, long sizeBytes, long latencyNanos, int queueDepth) {
        super(kernel, name, MemoryDevice.checkedSectors(name, sizeBytes), QueueLimits.defaults());
        if (latencyNanos < 0) {
            throw new IllegalArgumentException("null device " + name + ": negative latency " + latencyNanos + " ns");
        }
        this.latencyNanos = latencyNanos;
        this.timers = new TimerCompletions(kernel, "null device " + name, queueDepth);
        this.ioFaultSite = "io:" + name;
        this.latencyFaultSite = "latency:" + name;
    }

    /** Zero-fills a read; completes the bio now or from a timer after the latency. */
    @Override
    protected void submitBio(Bio bio) {
        Bio front = splitToLimits(bio);
        Faults faults = kernel().faults();
        long delay = latencyNanos + Math.max(0, faults.extraLatencyNanos(latencyFaultSite));
        if (faults.shouldFail(ioFaultSite)) {
            front.setStatus(BioStatus.IOERR);
        } else if (front.op() == BioOp.READ && front.sizeBytes() > 0) {
            front.zeroFill();
        }
        if (delay == 0) {
            front.endio();
        } else if (!timers.complete(front, delay, !front.hasFlag(BioFlags.NOWAIT))) {
            front.setStatus(BioStatus.AGAIN);
            front.endio();
        }
    }

    /** The completion latency without faults, in nanoseconds. */
    public long latencyNanos() {
        return latencyNanos;
    }

    /** Bios waiting for their completion timers. */
    public int inFlight() {
        return timers.inFlight();
    }

    @Override
    public String describeState() {
        return "null device " + name() + ": " + capacitySectors() + " sectors, latency " + latencyNanos + " ns, "
                + timers.inFlight() + " awaiting completion";
    }

    /** Waits for the bios awaiting their timers, then closes the split set. */
    @Override
    public void close() {
        if (isClosed()) {
            return;
        }
        try {
            timers.drain();
        } finally {
            super.close();
        }
    }
}
