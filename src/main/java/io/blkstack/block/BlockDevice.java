package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioSet;
import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;

/**
 * A block device: a named range of 512-byte sectors that handles bios (the kernel's
 * {@code gendisk} with a bio-based {@code submit_bio}).
 *
 * <p>Bios reach {@link #submitBio} only through the submit loop ({@link Submit#submitBio}), which
 * has already checked the range against the capacity and the logical block size. A device either
 * completes the bio (from any thread, with {@link Bio#endio}) or passes bios down by submitting
 * them again; it never blocks on a bio it queued itself.
 *
 * <p>Each device owns a small split bio set for {@link #splitToLimits}. Subclasses that override
 * {@link #close} call {@code super.close()} last.
 */
public abstract class BlockDevice implements Component {

    /** Bios in the reserve of each device's split set (as the kernel's {@code BIO_POOL_SIZE}). */
    public static final int SPLIT_POOL_SIZE = 2;

    private final Kernel kernel;
    private final String name;
    private final long capacitySectors;
    private final QueueLimits limits;
    private final BioSet splitSet;
    private final TrackedRequests trackedRequests;
    private final DeviceStats stats;
    private boolean closed;

    /**
     * Creates the device, its split bio set, and registers it with the kernel.
     *
     * @param capacitySectors the size in 512-byte sectors, a multiple of the logical block size
     */
    @SuppressWarnings("this-escape")
    protected BlockDevice(Kernel kernel, String name, long capacitySectors, QueueLimits limits) {
        if (name == null || name.isEmpty()) {
            throw new IllegalArgumentException("block device needs a name");
        }
        if (capacitySectors < 0) {
            throw new IllegalArgumentException("device " + name + ": negative capacity " + capacitySectors);
        }
        if (capacitySectors % limits.logicalBlockSectors() != 0) {
            throw new IllegalArgumentException("device " + name + ": capacity " + capacitySectors
                    + " sectors is not a multiple of the logical block size " + limits.logicalBlockSize());
        }
        this.kernel = kernel;
        this.name = name;
        this.capacitySectors = capacitySectors;
        this.limits = limits;
        this.splitSet = new BioSet(kernel, name + "-split", SPLIT_POOL_SIZE, 0, null, false);
        this.trackedRequests = new TrackedRequests(name);
        this.stats = new DeviceStats(name, kernel.latencyHistograms());
        kernel.register(this);
    }

    /** Handles one bio; called only by the submit loop, with the range already checked. */
    protected abstract void submitBio(Bio bio);

    /** Calls {@link #submitBio} for the submit loop in this package. */
    final void dispatch(Bio bio) {
        submitBio(bio);
    }

    /** The device's name, as tables and exports refer to it. */
    @Override
    public String name() {
        return name;
    }

    public Kernel kernel() {
        return kernel;
    }

    /** The size in 512-byte sectors. */
    public long capacitySectors() {
        return capacitySectors;
    }

    /** The size in bytes. */
    public long capacityBytes() {
        return capacitySectors << Bio.SECTOR_SHIFT;
    }

    public QueueLimits limits() {
        return limits;
    }

    /**
     * The writes in flight on this device by byte range, for originators that serve unaligned
     * writes by read-modify-write (the NBD server): see {@link TrackedRequests}.
     */
    public TrackedRequests trackedRequests() {
        return trackedRequests;
    }

    /** The bios this device completed, by operation and status, with their latencies ({@code ctl stats}). */
    public DeviceStats stats() {
        return stats;
    }

    /**
     * Whether every READ of this device can be completed by file references ({@link
     * io.blkstack.bio.ReadReference}) when its originator offers it: true only for a buffered file
     * and stacks that only remap onto such files. The default (memory, null, remote, direct files)
     * is false: the originator then does not offer, and the device fills pages.
     */
    public boolean readsByReference() {
        return false;
    }

    /** Whether {@link #allocatedExtent} tells allocated ranges from holes (for NBD block status). */
    public boolean knowsAllocation() {
        return false;
    }

    /**
     * The allocation run starting at {@code sector}, at most {@code maxSectors} long: positive for
     * that many allocated sectors, negative for that many sectors of hole. The default says the
     * whole range is allocated.
     */
    public long allocatedExtent(long sector, long maxSectors) {
        if (sector < 0 || maxSectors <= 0 || sector >= capacitySectors) {
            throw new IllegalArgumentException("device " + name + ": extent query at " + sector + " for "
                    + maxSectors + " sectors outside capacity " + capacitySectors);
        }
        return Math.min(maxSectors, capacitySectors - sector);
    }

    /**
     * If {@code bio} exceeds this device's limits (max sectors, max segments, segment size, chunk
     * boundary), splits off the largest front that fits, chains it to the original, resubmits the
     * original (now the remainder) through the submit loop, and returns the front to handle now
     * (the kernel's {@code bio_split_to_limits}). Otherwise returns {@code bio} itself.
     *
     * <p>The remainder queues on the task's pending list behind whatever the front produces, so
     * the front is fully processed before the next split is allocated from the same small set
     * (rule 1 of DESIGN.md section 1).
     */
    protected Bio splitToLimits(Bio bio) {
        int sectors = BlockSplit.frontSectors(bio, limits);
        if (sectors == 0) {
            return bio;
        }
        Bio front = Bio.split(bio, sectors, Gfp.NOIO, splitSet);
        if (front == null) {
            throw new IllegalStateException("device " + name + ": blocking split allocation returned null");
        }
        Bio.chain(front, bio);
        Submit.submitBio(bio);
        return front;
    }

    /** Whether {@link #close} ran. */
    public boolean isClosed() {
        return closed;
    }

    /** Closes the split set and unregisters; subclasses release their own resources first. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        kernel.unregister(this);
        splitSet.close();
    }

    @Override
    public String describeState() {
        return "device " + name + ": " + capacitySectors + " sectors";
    }

    @Override
    public String toString() {
        return "device " + name;
    }
}
