package io.blkstack.dm.snapshot;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.QueueLimits;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A test disk for the snapshot tests: a block device over a byte array that outlives the kernel
 * (so a new kernel can reopen the same contents), completing every bio synchronously. A shared
 * {@link Power} counts writes across disks; after its budget is spent every later write completes
 * successfully but is dropped, as if power had been cut after the N-th write.
 */
final class SnapshotDisk extends BlockDevice {

    /** The write budget shared by the disks of one machine. */
    static final class Power {
        private final AtomicInteger writesLeft = new AtomicInteger(Integer.MAX_VALUE);
        private final AtomicInteger writesSeen = new AtomicInteger();

        /** Lets only {@code n} more writes persist. */
        void cutAfter(int n) {
            writesLeft.set(n);
        }

        /** Writes seen (persisted or not) since creation. */
        int writesSeen() {
            return writesSeen.get();
        }

        boolean persist() {
            writesSeen.incrementAndGet();
            return writesLeft.getAndDecrement() > 0;
        }
    }

    private final byte[] data;
    private final Power power;
    private final SpinLock lock;
    private final boolean knowsHoles;
    private final AtomicInteger sectorsRead = new AtomicInteger();
    private final AtomicInteger sectorsZeroed = new AtomicInteger();
    private final AtomicInteger zeroBios = new AtomicInteger();
    private volatile boolean refusesZeroes;

    SnapshotDisk(Kernel kernel, String name, byte[] data, Power power) {
        this(kernel, name, data, power, false);
    }

    /** With {@code knowsHoles}, every all-zero sector is reported as a hole ({@link #allocatedExtent}). */
    SnapshotDisk(Kernel kernel, String name, byte[] data, Power power, boolean knowsHoles) {
        super(kernel, name, data.length >>> Bio.SECTOR_SHIFT, QueueLimits.defaults());
        this.data = data;
        this.power = power;
        this.lock = new SpinLock("disk " + name);
        this.knowsHoles = knowsHoles;
    }

    /** Sectors read since creation. */
    int sectorsRead() {
        return sectorsRead.get();
    }

    /** Sectors of WRITE_ZEROES and DISCARD since creation. */
    int sectorsZeroed() {
        return sectorsZeroed.get();
    }

    /** WRITE_ZEROES and DISCARD bios since creation (after splitting to the queue's limits). */
    int zeroBios() {
        return zeroBios.get();
    }

    /** From now on WRITE_ZEROES fails with NOTSUPP, as on a device that cannot zero. */
    void refuseZeroes() {
        refusesZeroes = true;
    }

    @Override
    public boolean knowsAllocation() {
        return knowsHoles;
    }

    /** Runs of all-zero sectors (holes, negative) and of sectors holding data (positive). */
    @Override
    public long allocatedExtent(long sector, long maxSectors) {
        long run = super.allocatedExtent(sector, maxSectors);
        if (!knowsHoles) {
            return run;
        }
        lock.lock();
        try {
            boolean hole = zeroSector(sector);
            long n = 1;
            while (n < run && zeroSector(sector + n) == hole) {
                n++;
            }
            return hole ? -n : n;
        } finally {
            lock.unlock();
        }
    }

    private boolean zeroSector(long sector) {
        int from = Math.toIntExact(sector << Bio.SECTOR_SHIFT);
        for (int i = from; i < from + Bio.SECTOR_SIZE; i++) {
            if (data[i] != 0) {
                return false;
            }
        }
        return true;
    }

    /** The persisted bytes. */
    byte[] data() {
        return data;
    }

    /** A copy of the persisted bytes. */
    byte[] snapshotBytes() {
        lock.lock();
        try {
            return Arrays.copyOf(data, data.length);
        } finally {
            lock.unlock();
        }
    }

    @Override
    protected void submitBio(Bio bio) {
        bio = splitToLimits(bio);
        int offset = Math.toIntExact(bio.sector() << Bio.SECTOR_SHIFT);
        lock.lock();
        try {
            switch (bio.op()) {
                case READ -> {
                    sectorsRead.addAndGet(bio.sectorCount());
                    bio.copyFrom(data, offset);
                }
                case WRITE -> {
                    if (power.persist()) {
                        bio.copyTo(data, offset);
                    }
                }
                case DISCARD, WRITE_ZEROES -> {
                    if (refusesZeroes && bio.op() == BioOp.WRITE_ZEROES) {
                        bio.setStatus(BioStatus.NOTSUPP);
                        break;
                    }
                    zeroBios.incrementAndGet();
                    sectorsZeroed.addAndGet(bio.sectorCount());
                    if (power.persist()) {
                        Arrays.fill(data, offset, offset + bio.sizeBytes(), (byte) 0);
                    }
                }
                case FLUSH -> {
                }
            }
        } finally {
            lock.unlock();
        }
        bio.endio();
    }
}
