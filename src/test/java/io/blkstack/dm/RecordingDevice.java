package io.blkstack.dm;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.QueueLimits;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import java.util.List;
import java.util.function.Supplier;

/**
 * A bottom device for the dm tests: a byte array that completes every bio synchronously and records
 * each one it handles as {@code name:OP:sector+count[:FLAGS][@probe]} in a log that may be shared
 * between devices (to see the order across devices). The optional probe is sampled at each bio,
 * for instance how many clones the mapped device holds at that moment.
 */
final class RecordingDevice extends BlockDevice {

    private final byte[] data;
    private final List<String> log;
    private final SpinLock lock;
    private volatile Supplier<Object> probe;

    /** A device whose entries go to {@code log}, which every device sharing it guards with {@code logLock}. */
    RecordingDevice(Kernel kernel, String name, long capacitySectors, List<String> log, SpinLock logLock) {
        super(kernel, name, capacitySectors, QueueLimits.defaults());
        this.data = new byte[Math.toIntExact(capacitySectors << Bio.SECTOR_SHIFT)];
        this.log = log;
        this.lock = logLock;
    }

    /** Samples {@code value} into every later log entry. */
    void probe(Supplier<Object> value) {
        this.probe = value;
    }

    /** The device's bytes. */
    byte[] data() {
        return data;
    }

    @Override
    protected void submitBio(Bio bio) {
        bio = splitToLimits(bio);
        Supplier<Object> p = probe;
        String entry = name() + ":" + bio.op() + ":" + bio.sector() + "+" + bio.sectorCount()
                + (bio.flags() != 0 ? ":" + BioFlags.describe(bio.flags()) : "") + (p != null ? "@" + p.get() : "");
        lock.lock();
        try {
            log.add(entry);
            int offset = Math.toIntExact(bio.sector() << Bio.SECTOR_SHIFT);
            switch (bio.op()) {
                case READ -> bio.copyFrom(data, offset);
                case WRITE -> bio.copyTo(data, offset);
                case DISCARD, WRITE_ZEROES -> java.util.Arrays.fill(data, offset, offset + bio.sizeBytes(), (byte) 0);
                case FLUSH -> { }
            }
        } finally {
            lock.unlock();
        }
        bio.endio();
    }

}
