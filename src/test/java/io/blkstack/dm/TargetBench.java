package io.blkstack.dm;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.DataBuffers;
import io.blkstack.block.QueueLimits;
import io.blkstack.block.Submit;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.Table;
import io.blkstack.dm.TableException;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.mem.Gfp;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The world of the target tests, for any kernel (real or simulated) whose calling thread is a task:
 * named bottom {@link Bottom} devices that record what reaches them, a client bio set, and
 * synchronous byte-array I/O through any device. Closing gives the pages and the bio set back.
 */
public final class TargetBench implements AutoCloseable {

    /** A byte-array bottom device that completes at once and logs {@code name:OP:sector+count[:FLAGS]@nanos}. */
    public static final class Bottom extends BlockDevice {
        public final byte[] data;
        public final List<String> log;
        public final List<Long> times = new ArrayList<>();
        private final SpinLock lock;

        Bottom(Kernel kernel, String name, long sectors, List<String> log, SpinLock lock) {
            super(kernel, name, sectors, QueueLimits.defaults());
            this.data = new byte[Math.toIntExact(sectors << Bio.SECTOR_SHIFT)];
            this.log = log;
            this.lock = lock;
        }

        @Override
        protected void submitBio(Bio bio) {
            bio = splitToLimits(bio);
            lock.lock();
            try {
                log.add(name() + ":" + bio.op() + ":" + bio.sector() + "+" + bio.sectorCount()
                        + (bio.flags() != 0 ? ":" + BioFlags.describe(bio.flags()) : ""));
                times.add(kernel().scheduler().nanoTime());
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
            bio.endio();
        }
    }

    public final Kernel kernel;
    public final List<String> log = new ArrayList<>();
    public final SpinLock logLock = new SpinLock("bench log");
    public final Map<String, BlockDevice> devices = new HashMap<>();
    public final DataBuffers buffers;
    public final BioSet client;

    public TargetBench(Kernel kernel) {
        this.kernel = kernel;
        this.buffers = new DataBuffers(kernel);
        this.client = new BioSet(kernel, "bench-client", 4, 4, null, false);
    }

    /** Adds a recording bottom device. */
    public Bottom bottom(String name, long sectors) {
        Bottom b = new Bottom(kernel, name, sectors, log, logLock);
        devices.put(name, b);
        return b;
    }

    /** Adds any device under a name. */
    public <D extends BlockDevice> D add(String name, D dev) {
        devices.put(name, dev);
        return dev;
    }

    public Table table(String text) throws TableException {
        return Table.parse(kernel, "dm", text, devices::get);
    }

    public MappedDevice mapped(String text) throws TableException {
        MappedDevice md = new MappedDevice(kernel, "dm", table(text));
        devices.put("dm", md);
        return md;
    }

    /** The log entries so far, under the lock. */
    public List<String> logSnapshot() {
        logLock.lock();
        try {
            return new ArrayList<>(log);
        } finally {
            logLock.unlock();
        }
    }

    /** A write bio of {@code data} at {@code sector}, not yet submitted. */
    public Bio writeBio(BlockDevice dev, long sector, byte[] data, int flags) {
        Bio bio = buffers.bio(client, dev, BioOp.WRITE, sector, data.length, null);
        bio.setFlags(flags);
        bio.copyFrom(data, 0);
        return bio;
    }

    public BioStatus write(BlockDevice dev, long sector, byte[] data, int flags) {
        Bio bio = writeBio(dev, sector, data, flags);
        BioStatus status = Submit.submitAndWaitStatus(bio);
        bio.put();
        return status;
    }

    public BioStatus read(BlockDevice dev, long sector, byte[] into) {
        Bio bio = buffers.bio(client, dev, BioOp.READ, sector, into.length, null);
        byte[] junk = new byte[into.length];
        Arrays.fill(junk, (byte) 0x5a);
        bio.copyFrom(junk, 0);
        BioStatus status = Submit.submitAndWaitStatus(bio);
        bio.copyTo(into, 0);
        bio.put();
        return status;
    }

    /** Reads the whole device into a new array, 64 KiB at a time. */
    public byte[] readAll(BlockDevice dev) {
        byte[] out = new byte[Math.toIntExact(dev.capacityBytes())];
        int step = 64 << 10;
        for (int off = 0; off < out.length; off += step) {
            byte[] part = new byte[Math.min(step, out.length - off)];
            BioStatus s = read(dev, off / Bio.SECTOR_SIZE, part);
            if (s != BioStatus.OK) {
                throw new IllegalStateException("read of " + dev.name() + " at " + off + ": " + s);
            }
            System.arraycopy(part, 0, out, off, part.length);
        }
        return out;
    }

    public BioStatus flush(BlockDevice dev, int flags) {
        Bio bio = client.alloc(Gfp.NOIO, 0);
        bio.init(dev, BioOp.FLUSH, flags, 0);
        BioStatus status = Submit.submitAndWaitStatus(bio);
        bio.put();
        return status;
    }

    /** Gives the pages back and closes the client set (devices close with the kernel). */
    @Override
    public void close() {
        buffers.close();
        client.close();
    }
}
