package io.blkstack.dm;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.QueueLimits;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A byte-array bottom device for the target tests that completes every bio at once and can be
 * told to fail: after {@code failAfter} more data bios, every later bio (reads and writes) ends
 * with EIO until {@link #heal}. A failed write changes nothing.
 */
public final class FaultyDisk extends BlockDevice {

    private final byte[] data;
    private final SpinLock lock;
    private final AtomicLong handled = new AtomicLong();
    private volatile long failFrom = Long.MAX_VALUE;
    private final java.util.concurrent.atomic.AtomicBoolean failNextFlush = new java.util.concurrent.atomic.AtomicBoolean();

    public FaultyDisk(Kernel kernel, String name, long capacitySectors) {
        super(kernel, name, capacitySectors, QueueLimits.defaults());
        this.data = new byte[Math.toIntExact(capacitySectors << Bio.SECTOR_SHIFT)];
        this.lock = new SpinLock("faulty " + name);
    }

    /** Fails every data bio after the next {@code bios} ones. */
    public void failAfter(long bios) {
        failFrom = handled.get() + bios;
    }

    /**
     * Fails the next FLUSH once, as a device does that lost acknowledged writes (the write-back
     * error a remote device reports at its next flush after a lost connection).
     */
    public void failNextFlush() {
        failNextFlush.set(true);
    }

    /** Stops failing (the disk was replaced); the contents stay as they were. */
    public void heal() {
        failFrom = Long.MAX_VALUE;
    }

    /** A copy of {@code sectors} sectors from {@code sector}. */
    public byte[] contents(long sector, int sectors) {
        lock.lock();
        try {
            int from = Math.toIntExact(sector << Bio.SECTOR_SHIFT);
            return Arrays.copyOfRange(data, from, from + (sectors << Bio.SECTOR_SHIFT));
        } finally {
            lock.unlock();
        }
    }

    /** Bios handled so far. */
    public long handled() {
        return handled.get();
    }

    @Override
    protected void submitBio(Bio bio) {
        bio = splitToLimits(bio);
        boolean fail = bio.op() == BioOp.FLUSH ? failNextFlush.getAndSet(false)
                : bio.sizeBytes() > 0 && handled.getAndIncrement() >= failFrom;
        if (fail) {
            bio.setStatus(BioStatus.IOERR);
        } else {
            lock.lock();
            try {
                int offset = Math.toIntExact(bio.sector() << Bio.SECTOR_SHIFT);
                switch (bio.op()) {
                    case READ -> bio.copyFrom(data, offset);
                    case WRITE -> bio.copyTo(data, offset);
                    case DISCARD, WRITE_ZEROES -> Arrays.fill(data, offset, offset + bio.sizeBytes(), (byte) 0);
                    case FLUSH -> { }
                }
            } finally {
                lock.unlock();
            }
        }
        bio.endio();
    }
}
