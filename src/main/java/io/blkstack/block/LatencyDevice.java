package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;

/**
 * What the memory, cached memory and null devices share: a bio is served at submission and
 * completed there ({@code latencyNanos == 0}) or by a kernel timer after the latency, with at most
 * {@code queueDepth} bios waiting for their timers. Fault sites: {@code io:<name>} fails a bio with
 * IOERR without serving it, {@code latency:<name>} adds to its completion delay. A subclass says
 * only how a bio is served.
 */
abstract class LatencyDevice extends BlockDevice {

    private final long latencyNanos;
    private final TimerCompletions timers;
    private final String ioFaultSite;
    private final String latencyFaultSite;
    private volatile boolean readsAtCompletion;

    /**
     * A device of {@code sizeBytes} (a positive multiple of 512); {@code kind} names the device
     * kind in messages ("memory device").
     */
    LatencyDevice(Kernel kernel, String kind, String name, long sizeBytes, QueueLimits limits, long latencyNanos,
            int queueDepth) {
        super(kernel, name, checkedSectors(name, sizeBytes), limits);
        if (latencyNanos < 0) {
            throw new IllegalArgumentException(kind + " " + name + ": negative latency " + latencyNanos + " ns");
        }
        this.latencyNanos = latencyNanos;
        this.timers = new TimerCompletions(kernel, kind + " " + name, queueDepth, this::serve);
        this.ioFaultSite = "io:" + name;
        this.latencyFaultSite = "latency:" + name;
    }

    /** Sectors in {@code sizeBytes}, which must be a positive multiple of 512. */
    static long checkedSectors(String name, long sizeBytes) {
        if (sizeBytes <= 0 || sizeBytes % Bio.SECTOR_SIZE != 0) {
            throw new IllegalArgumentException("device " + name + ": size " + sizeBytes
                    + " is not a positive multiple of " + Bio.SECTOR_SIZE);
        }
        return sizeBytes >>> Bio.SECTOR_SHIFT;
    }

    /**
     * Serves the bio (already split to the limits): on the submitting task, or for a READ of a
     * device that {@link #setReadsAtCompletion reads at completion}, in its timer's callback
     * (atomic context: must not block).
     */
    abstract void serve(Bio bio);

    /**
     * Makes READs with a latency take their data when they complete rather than when they are
     * submitted (set before the device is used). A real disk transfers a READ's data at some
     * point before it completes; this is the latest point, the one that exposes a layer that
     * reuses a range while a READ of it is in flight. It is also what a READ held by reference
     * does ({@link io.blkstack.bio.ReadReference}: the data leaves the file when it is sent, and the
     * READ completes after), so the checker can run that ordering on memory devices.
     */
    public final void setReadsAtCompletion(boolean atCompletion) {
        this.readsAtCompletion = atCompletion;
    }

    /** Serves the bio now; completes it now or from a timer after the latency. */
    @Override
    protected final void submitBio(Bio bio) {
        Bio front = splitToLimits(bio);
        Faults faults = kernel().faults();
        long delay = latencyNanos + Math.max(0, faults.extraLatencyNanos(latencyFaultSite));
        boolean direct = delay > 0 && issuesDirectly(front) && timers.inFlight() == 0;
        boolean serveLater = false;
        if (faults.shouldFail(ioFaultSite)) {
            front.setStatus(BioStatus.IOERR);
        } else if (readsAtCompletion && delay > 0 && !direct && front.op() == BioOp.READ) {
            serveLater = true;
        } else {
            serve(front);
        }
        if (delay == 0) {
            front.endio();
        } else if (direct) {
            // Direct issue: the submitter takes the device's time itself and completes the bio.
            Task.current().sleepFor(delay);
            front.endio();
        } else if (!timers.complete(front, delay, !front.hasFlag(BioFlags.NOWAIT), serveLater)) {
            // Served already, but a NOWAIT bio may not wait for a completion slot: report AGAIN.
            front.setStatus(BioStatus.AGAIN);
            front.endio();
        }
    }

    /**
     * Whether the submitter of {@code bio} may serve it itself when no bio waits for a timer (the
     * file device's direct issue, modelled for the checker): false here, a subclass that stands in
     * for a file device says. Only for a task that may block (never in a completion callback).
     */
    protected boolean issuesDirectly(Bio bio) {
        return false;
    }

    /** The completion latency without faults, in nanoseconds. */
    public final long latencyNanos() {
        return latencyNanos;
    }

    /** Bios served and waiting for their completion timers. */
    public final int inFlight() {
        return timers.inFlight();
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
