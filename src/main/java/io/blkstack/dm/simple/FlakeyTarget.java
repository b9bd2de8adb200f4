package io.blkstack.dm.simple;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioIter;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.dm.MapResult;
import io.blkstack.dm.TableException;
import io.blkstack.dm.Target;
import io.blkstack.dm.TargetArgs;
import io.blkstack.dm.TargetIo;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Page;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * {@code flakey <dev> <offset> <up interval s> <down interval s> [<#features> [<feature args>]]}
 * (dm-flakey): a linear mapping that is reliable for {@code up} seconds, then unreliable for
 * {@code down} seconds, repeating from the moment the table was loaded (kernel clock). Used to
 * simulate failing devices.
 *
 * <p>The phase is {@code elapsed seconds % (up + down) >= up} → down, as in the kernel; so
 * {@code up 0} means always down and {@code down 0} always up (both 0 is refused). In the down
 * interval the features decide (no features: every I/O fails):
 * <ul>
 *   <li>{@code error_reads}: reads fail with EIO;</li>
 *   <li>{@code drop_writes}: writes (and flushes) complete OK without reaching the device;</li>
 *   <li>{@code error_writes}: writes (and flushes) fail with EIO;</li>
 *   <li>{@code corrupt_bio_byte <Nth byte> <r|w> <value> <flags>}: byte N (from 1) of each matching
 *       data bio becomes {@code value}; reads are corrupted after they complete, writes before they go
 *       down. {@code flags} is a mask of {@link BioFlags} bits a bio must all carry to match.</li>
 * </ul>
 * A corrupted write changes the caller's page in place and {@link #endIo} puts the byte back, so
 * corruption needs no second page (nothing allocated in {@code map}).
 *
 * <p>The table status reproduces the loaded arguments exactly (features in the order given).
 */
public final class FlakeyTarget extends Target {

    /** The table type name. */
    public static final String TYPE = "flakey";
    /** Largest up or down interval, in seconds (the kernel's limit, about 68 years). */
    public static final long INTERVAL_MAX_SECONDS = Integer.MAX_VALUE / 1000L * 1000L;
    /** Most feature words accepted (the kernel's 7). */
    public static final int FEATURE_ARGS_MAX = 7;

    /** Per-bio data: where the chosen byte lives, so end-io can corrupt a read or undo a write's change. */
    private static final class FlakeyIo {
        final BioIter iter = new BioIter();
        Page page;
        int pageOffset;
        byte savedByte;
    }

    private final Kernel kernel;
    private final BlockDevice device;
    private final String deviceName;
    private final long offsetSectors;
    private final long upSeconds;
    private final long downSeconds;
    private final long startNanos;
    private final String featureText;
    private final boolean errorReads;
    private final boolean errorWrites;
    private final boolean dropWrites;
    private final long corruptByte;
    private final boolean corruptWrites;
    private final int corruptValue;
    private final int corruptFlags;

    private final AtomicLong errored = new AtomicLong();
    private final AtomicLong dropped = new AtomicLong();
    private final AtomicLong corruptedCount = new AtomicLong();

    /** Parses the table line; conflicting or duplicated features are refused, naming the argument. */
    public FlakeyTarget(TargetArgs args) throws TableException {
        super(args);
        String usage = "<dev> <offset> <up interval> <down interval> [<#features> [<feature args>]]";
        args.requireCountAtLeast(4, usage);
        this.kernel = args.kernel();
        this.device = args.device(1);
        this.deviceName = args.word(1);
        this.offsetSectors = args.sector(2);
        args.requireArea(2, device, offsetSectors, args.length());
        this.upSeconds = interval(args, 3, "up interval");
        this.downSeconds = interval(args, 4, "down interval");
        if (upSeconds + downSeconds == 0) {
            throw args.error(4, "up and down intervals are both 0 (total interval is zero)");
        }
        boolean eReads = false;
        boolean eWrites = false;
        boolean drop = false;
        long cByte = 0;
        boolean cWrites = false;
        int cValue = 0;
        int cFlags = 0;
        StringBuilder text = new StringBuilder();
        if (args.count() >= 5) {
            int n = args.intInRange(5, 0, FEATURE_ARGS_MAX, "number of feature arguments");
            if (args.count() != 5 + n) {
                throw args.error(5, "announces " + n + " feature argument(s) but " + (args.count() - 5) + " follow");
            }
            text.append(n);
            int i = 6;
            while (i < 6 + n) {
                String f = args.word(i);
                switch (f) {
                    case "error_reads" -> {
                        if (eReads) {
                            throw args.error(i, "duplicates feature error_reads");
                        }
                        eReads = true;
                        text.append(' ').append(f);
                        i++;
                    }
                    case "error_writes" -> {
                        if (eWrites) {
                            throw args.error(i, "duplicates feature error_writes");
                        }
                        if (drop) {
                            throw args.error(i, "conflicts with feature drop_writes");
                        }
                        eWrites = true;
                        text.append(' ').append(f);
                        i++;
                    }
                    case "drop_writes" -> {
                        if (drop) {
                            throw args.error(i, "duplicates feature drop_writes");
                        }
                        if (eWrites) {
                            throw args.error(i, "conflicts with feature error_writes");
                        }
                        drop = true;
                        text.append(' ').append(f);
                        i++;
                    }
                    case "corrupt_bio_byte" -> {
                        if (cByte != 0) {
                            throw args.error(i, "duplicates feature corrupt_bio_byte");
                        }
                        if (i + 4 >= 6 + n) {
                            throw args.error(i, "needs 4 arguments: <Nth byte> <direction r|w> <value> <flags>");
                        }
                        cByte = args.unsigned(i + 1, "is not a byte position (from 1)");
                        if (cByte < 1 || cByte > 0xffff_ffffL) {
                            throw args.error(i + 1, "byte position must be in 1..4294967295");
                        }
                        String dir = args.word(i + 2);
                        if (!dir.equals("r") && !dir.equals("w")) {
                            throw args.error(i + 2, "direction must be r or w");
                        }
                        cWrites = dir.equals("w");
                        cValue = args.intInRange(i + 3, 0, 255, "corrupt value");
                        long flags = args.unsigned(i + 4, "is not a flag mask");
                        if ((flags & ~BioFlags.ALL) != 0) {
                            throw args.error(i + 4, "has bits no bio flag uses (known mask " + BioFlags.ALL + ")");
                        }
                        cFlags = (int) flags;
                        text.append(' ').append(f).append(' ').append(cByte).append(' ').append(dir).append(' ')
                                .append(cValue).append(' ').append(cFlags);
                        i += 5;
                    }
                    default -> throw args.error(i, "is not a feature (error_reads, error_writes, drop_writes,"
                            + " corrupt_bio_byte)");
                }
            }
            if (cByte != 0 && cWrites && drop) {
                throw args.error(5, "drop_writes is incompatible with corrupt_bio_byte in direction w");
            }
            if (cByte != 0 && cWrites && eWrites) {
                throw args.error(5, "error_writes is incompatible with corrupt_bio_byte in direction w");
            }
        }
        if (cByte == 0 && !eReads && !eWrites && !drop) {
            // No features: during the down interval all I/O returns errors.
            eReads = true;
            eWrites = true;
        }
        this.featureText = text.toString();
        this.errorReads = eReads;
        this.errorWrites = eWrites;
        this.dropWrites = drop;
        this.corruptByte = cByte;
        this.corruptWrites = cWrites;
        this.corruptValue = cValue;
        this.corruptFlags = cFlags;
        this.startNanos = kernel.scheduler().nanoTime();
    }

    private static long interval(TargetArgs args, int index, String what) throws TableException {
        long v = args.unsigned(index, "is not a number of seconds (" + what + ")");
        if (v > INTERVAL_MAX_SECONDS) {
            throw args.error(index, what + " must be at most " + INTERVAL_MAX_SECONDS + " seconds");
        }
        return v;
    }

    /** Whether the device is in its down interval now (kernel clock since the table was loaded). */
    public boolean isDown() {
        long elapsedSeconds = (kernel.scheduler().nanoTime() - startNanos) / 1_000_000_000L;
        return elapsedSeconds % (upSeconds + downSeconds) >= upSeconds;
    }

    /** Remaps like linear; in the down interval errors, drops or corrupts as the features say. */
    @Override
    public MapResult map(Bio clone, TargetIo io) {
        clone.refuseReadReference(); // may corrupt the READ's data in its pages at end-io
        FlakeyIo fio = io.perBioData();
        fio.page = null;
        clone.setDevice(device);
        clone.setSector(clone.sizeBytes() > 0 ? offsetSectors + targetOffset(clone) : 0);
        if (!isDown()) {
            return MapResult.REMAPPED;
        }
        if (!clone.op().isWrite()) {
            if (errorReads) {
                errored.incrementAndGet();
                return MapResult.KILL;
            }
            if (corruptByte != 0 && !corruptWrites && matches(clone)) {
                locate(clone, fio); // end-io corrupts the byte once the data is there
            }
            return MapResult.REMAPPED;
        }
        if (dropWrites) {
            dropped.incrementAndGet();
            clone.endio();
            return MapResult.SUBMITTED;
        }
        if (errorWrites) {
            errored.incrementAndGet();
            return MapResult.KILL;
        }
        if (corruptByte != 0 && corruptWrites && matches(clone) && locate(clone, fio)) {
            // Changed in place; end-io puts the byte back, so the caller's buffer is unharmed.
            ByteBuffer buf = fio.page.buffer();
            fio.savedByte = buf.get(fio.pageOffset);
            buf.put(fio.pageOffset, (byte) corruptValue);
            corruptedCount.incrementAndGet();
        }
        return MapResult.REMAPPED;
    }

    /** Corrupts successful matching reads; puts back the byte a corrupted write changed. */
    @Override
    public void endIo(Bio clone, TargetIo io, BioStatus status) {
        FlakeyIo fio = io.perBioData();
        Page page = fio.page;
        if (page == null) {
            return;
        }
        fio.page = null;
        if (corruptWrites) {
            page.buffer().put(fio.pageOffset, fio.savedByte);
        } else if (status == BioStatus.OK) {
            page.buffer().put(fio.pageOffset, (byte) corruptValue);
            corruptedCount.incrementAndGet();
        }
    }

    /** Whether the clone carries data long enough and every flag of the mask. */
    private boolean matches(Bio clone) {
        return clone.op().hasData() && clone.sizeBytes() >= corruptByte && (clone.flags() & corruptFlags) == corruptFlags;
    }

    /**
     * Finds the page and offset of byte {@code corruptByte} (from 1) of the clone's range, before the
     * device can advance the clone's iterator.
     */
    private boolean locate(Bio clone, FlakeyIo fio) {
        long target = corruptByte - 1;
        BioIter it = fio.iter.reset(clone);
        while (it.next()) {
            if (target < it.bioOffset() + it.length()) {
                fio.page = it.page();
                fio.pageOffset = it.offset() + (int) (target - it.bioOffset());
                return true;
            }
        }
        return false;
    }

    @Override
    protected Object newPerBioData() {
        return new FlakeyIo();
    }

    /** Errors, drops and corruptions so far: {@code <errored> <dropped> <corrupted>}. */
    @Override
    public String statusInfo() {
        return errored.get() + " " + dropped.get() + " " + corruptedCount.get();
    }

    @Override
    public String statusTable() {
        String head = deviceName + " " + offsetSectors + " " + upSeconds + " " + downSeconds;
        return featureText.isEmpty() ? head : head + " " + featureText;
    }

    @Override
    public int flushBioCount() {
        return 1;
    }

    @Override
    public List<BlockDevice> devices() {
        List<BlockDevice> out = new ArrayList<>(1);
        out.add(device);
        return out;
    }
}
