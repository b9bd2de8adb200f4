package io.blkstack.dm.thin;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.dm.MapResult;
import io.blkstack.dm.TableException;
import io.blkstack.dm.Target;
import io.blkstack.dm.TargetArgs;
import io.blkstack.dm.TargetIo;
import io.blkstack.dm.thin.Pool;
import io.blkstack.dm.thin.PoolRegistry;
import io.blkstack.dm.thin.ThinBioState;
import io.blkstack.dm.thin.ThinDevice;
import io.blkstack.dm.thin.metadata.ThinMetadata;
import java.util.List;

/**
 * {@code thin <pool dev> <dev id> [snap_of=<origin id>]}: a thin device provisioned from a pool
 * (dm-thin's thin target). Reads of unprovisioned blocks return zeros, and block status reports
 * them as holes; the first write to a block provisions it, a write to a block shared with a
 * snapshot copies it first, discards of whole blocks unmap them (see {@link Pool}).
 *
 * <p><b>Creation on first use (blkstack, not dm).</b> dm fails a thin line whose id the pool does
 * not know; blkstack creates it, so a configuration file can declare volumes without a message
 * step: empty, or with {@code snap_of=N} as a snapshot of device N taken when the line is first
 * loaded. Once the id exists the {@code snap_of} word changes nothing.
 *
 * <p>Bios are cut at pool block boundaries ({@link #maxIoSectors}). {@code map} never blocks: it
 * consults the device's in-memory index, remaps provisioned unshared blocks (REMAPPED), zero-fills
 * holes it reads, and defers the rest to the pool's worker (SUBMITTED).
 */
public final class ThinTarget extends Target {

    /** The table type name. */
    public static final String TYPE = "thin";

    private final String poolName;
    private final long devId;
    private final String snapWord;
    private final int blockSectors;
    private final BlockDevice dataDevice;
    /** The kernel's table of open pools. */
    private final PoolRegistry registry;
    private Pool pool;
    private ThinDevice device;
    /** The pool's mapped device, which must outlive this target. */
    private final BlockDevice poolDevice;

    /** Parses the arguments, finds the pool and opens (or creates) the thin device. */
    public ThinTarget(TargetArgs args) throws TableException {
        super(args);
        if (args.count() != 2 && args.count() != 3) {
            throw args.error(args.count() + " argument(s), expected: <pool dev> <dev id> [snap_of=<origin id>]");
        }
        BlockDevice poolDev = args.device(1);
        this.poolDevice = poolDev;
        this.poolName = args.word(1);
        this.devId = args.unsigned(2, "is not a thin device id");
        if (devId > ThinMetadata.DEVICE_ID_MAX) {
            throw args.error(2, "thin device id must be at most " + ThinMetadata.DEVICE_ID_MAX);
        }
        long snapOf = -1;
        if (args.count() == 3) {
            this.snapWord = args.word(3);
            if (!snapWord.startsWith("snap_of=")) {
                throw args.error(3, "is not snap_of=<origin id>");
            }
            try {
                snapOf = Long.parseLong(snapWord.substring("snap_of=".length()));
            } catch (NumberFormatException e) {
                throw args.error(3, "is not snap_of=<origin id>");
            }
            if (snapOf < 0 || snapOf > ThinMetadata.DEVICE_ID_MAX || snapOf == devId) {
                throw args.error(3, "origin id must be another device id in 0.." + ThinMetadata.DEVICE_ID_MAX);
            }
        } else {
            this.snapWord = null;
        }
        this.registry = PoolRegistry.of(args.kernel());
        this.pool = registry.get(poolDev.name());
        if (pool == null) {
            throw args.error(1, "is not a thin-pool device");
        }
        this.blockSectors = pool.blockSectors();
        this.dataDevice = pool.dataDevice();
        long blocks = (args.length() + blockSectors - 1) / blockSectors;
        try {
            this.device = pool.openThin(devId, blocks, snapOf);
        } catch (IllegalArgumentException e) {
            close();
            throw args.error(snapOf >= 0 ? 3 : 2, e.getMessage());
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    @Override
    public MapResult map(Bio clone, TargetIo io) {
        ThinBioState st = io.perBioData();
        if (clone.sizeBytes() == 0) {
            st.reset(device, 0);
            pool.defer(clone);
            return MapResult.SUBMITTED;
        }
        long offset = targetOffset(clone);
        long vblock = offset / blockSectors;
        st.reset(device, vblock);
        BioOp op = clone.op();
        if (op == BioOp.DISCARD && pool.features().ignoreDiscard()) {
            clone.endio();
            return MapResult.SUBMITTED;
        }
        if (op.isWrite() && pool.mode() == Pool.Mode.READ_ONLY) {
            clone.setStatus(BioStatus.IOERR);
            return MapResult.KILL;
        }
        // Entered before the mapping is read: a block this clone is remapped to is not reused
        // until it completed. A clone that is not remapped here leaves at once (one that waits
        // in the pool, for space or a provisioning, must not hold up the reuse of freed blocks).
        st.ioGeneration = pool.enterIo();
        long entry = device.entry(vblock);
        long block = ThinDevice.dataBlockOf(entry);
        if (op == BioOp.READ) {
            if (block < 0) {
                leaveNow(st);
                clone.refuseReadReference(); // a hole is filled here, in the READ's pages
                clone.zeroFill();
                clone.endio();
                return MapResult.SUBMITTED;
            }
            remap(clone, block, offset);
            return MapResult.REMAPPED;
        }
        boolean plain = (entry & (ThinDevice.SHARED | ThinDevice.BUSY)) == 0;
        if ((op == BioOp.WRITE || op == BioOp.WRITE_ZEROES) && block >= 0 && plain && !clone.hasFlag(BioFlags.FUA)) {
            remap(clone, block, offset);
            return MapResult.REMAPPED;
        }
        leaveNow(st);
        pool.defer(clone);
        return MapResult.SUBMITTED;
    }

    private void leaveNow(ThinBioState st) {
        long generation = st.ioGeneration;
        st.ioGeneration = -1;
        pool.leaveIo(generation);
    }

    /** Leaves the pool's in-flight I/O (atomic context). */
    @Override
    public void endIo(Bio clone, TargetIo io, BioStatus status) {
        ThinBioState st = io.perBioData();
        if (st.ioGeneration >= 0) {
            leaveNow(st);
        }
    }

    /**
     * No: a block can change owner (a discard or delete frees it, another volume's write gets it),
     * and a READ held by reference cannot be held as long as its bytes are taken from the file. The
     * pool keeps a freed block from reuse until every READ of it completed, after its send; but TCP
     * still reads the pages for a retransmission until the peer acknowledged them, and a local peer
     * (loopback) keeps references to them in its receive queue until it reads, which the server
     * cannot see. A reply could then carry another volume's data. See docs/architecture.md.
     */
    @Override
    public boolean passesReadReference() {
        return false;
    }

    private void remap(Bio clone, long block, long offset) {
        clone.setDevice(dataDevice).setSector(block * blockSectors + (offset % blockSectors));
    }

    @Override
    protected Object newPerBioData() {
        return ThinBioState.create();
    }

    /** Cuts bios at pool block boundaries. */
    @Override
    public long maxIoSectors(long offset) {
        return Math.min(length() - offset, blockSectors - (offset % blockSectors));
    }

    @Override
    public boolean knowsAllocation() {
        return true;
    }

    /** Holes and provisioned runs from the device's index, at block granularity; never blocks. */
    @Override
    public long allocatedExtent(long offset, long maxSectors) {
        long vblock = offset / blockSectors;
        long within = offset % blockSectors;
        long maxBlocks = (within + maxSectors + blockSectors - 1) / blockSectors;
        long run = device.run(vblock, maxBlocks);
        long sectors = Math.min(maxSectors, Math.abs(run) * blockSectors - within);
        return run > 0 ? sectors : -sectors;
    }

    @Override
    public String statusInfo() {
        long mapped = 0;
        long highest = -1;
        for (long b = 0; b < device.virtualBlocks(); ) {
            long run = device.run(b, device.virtualBlocks() - b);
            if (run > 0) {
                mapped += run;
                highest = b + run - 1;
            }
            b += Math.abs(run);
        }
        long highestSector = highest < 0 ? -1 : Math.min(length(), (highest + 1) * blockSectors) - 1;
        return (mapped * blockSectors) + " " + (highestSector < 0 ? "-" : Long.toString(highestSector));
    }

    @Override
    public String statusTable() {
        return poolName + " " + devId + (snapWord == null ? "" : " " + snapWord);
    }

    @Override
    public int flushBioCount() {
        return 1;
    }

    @Override
    public List<BlockDevice> devices() {
        return List.of(dataDevice);
    }

    /** The pool device and the data device it maps to. */
    @Override
    public List<BlockDevice> dependencies() {
        return List.of(poolDevice, dataDevice);
    }

    /** The thin device's index (tests). */
    public ThinDevice device() {
        return device;
    }

    /** The pool (tests). */
    public Pool pool() {
        return pool;
    }

    @Override
    public void close() {
        if (device != null) {
            pool.closeThin(device);
            device = null;
        }
        if (pool != null) {
            Pool p = pool;
            pool = null;
            registry.release(p);
        }
    }
}
