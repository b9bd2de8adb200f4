package io.blkstack.dm.snapshot;

import io.blkstack.bio.Bio;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.dm.MapResult;
import io.blkstack.dm.TableException;
import io.blkstack.dm.Target;
import io.blkstack.dm.TargetArgs;
import io.blkstack.dm.TargetIo;
import io.blkstack.dm.snapshot.DeferredRemap;
import io.blkstack.dm.snapshot.OriginRegistry;
import io.blkstack.dm.snapshot.Snapshot;
import java.util.List;

/**
 * {@code snapshot-origin <origin dev>}: the origin as its users see it (dm-snapshot's origin
 * target). Reads pass straight through. A write first asks every active snapshot of the device
 * (found in {@link OriginRegistry}) whether the chunks it touches have exceptions; if one does
 * not, the clone waits on that chunk's pending exception, {@code map} returns SUBMITTED at once,
 * and the snapshot's workqueue hands the clone back ({@link #remapDeferred}) after the old chunk
 * was copied and committed. Writes are not cut at chunk boundaries: a write over many chunks makes
 * their exceptions as runs of adjacent chunks, one copy per run ({@link Snapshot#originWrite}).
 *
 * <p>The target maps sector {@code s} of its range to sector {@code s} of the origin (it normally
 * covers the whole device from sector 0, as dm's does).
 */
public final class SnapshotOriginTarget extends Target implements DeferredRemap {

    /** The table type name. */
    public static final String TYPE = "snapshot-origin";

    private final BlockDevice device;
    private final String deviceName;
    /** The kernel's table of snapshots by origin device. */
    private final OriginRegistry origins;

    /** Parses {@code <origin dev>}; the range must lie inside the device. */
    public SnapshotOriginTarget(TargetArgs args) throws TableException {
        super(args);
        args.requireCount(1, "<origin dev>");
        this.device = args.device(1);
        this.deviceName = args.word(1);
        this.origins = OriginRegistry.of(args.kernel());
        if (args.length() > device.capacitySectors()) {
            throw args.error(1, "has " + device.capacitySectors() + " sectors, fewer than the target's " + args.length());
        }
    }

    @Override
    public MapResult map(Bio clone, TargetIo io) {
        if (clone.sizeBytes() == 0) {
            clone.setDevice(device).setSector(0);
            return MapResult.REMAPPED;
        }
        long sector = targetOffset(clone);
        if (clone.op().isWrite() && !snapshotsAllow(clone, sector)) {
            return MapResult.SUBMITTED;
        }
        clone.setDevice(device).setSector(sector);
        return MapResult.REMAPPED;
    }

    /**
     * An origin READ is a remap to the origin device; the copy-out that an origin write triggers
     * reads the origin itself, into its own buffer, so a READ held by reference changes nothing.
     */
    @Override
    public boolean passesReadReference() {
        return true;
    }

    /** Holes pass up: reads go straight to the origin, so its holes are this target's. */
    @Override
    public boolean knowsAllocation() {
        return device.knowsAllocation();
    }

    @Override
    public long allocatedExtent(long offset, long maxSectors) {
        return device.allocatedExtent(offset, maxSectors);
    }

    /** Whether every snapshot lets the write go now; false if the clone was queued on one. */
    private boolean snapshotsAllow(Bio clone, long sector) {
        for (Snapshot s : origins.snapshotsOf(device)) {
            if (!s.originWrite(clone, sector)) {
                return false;
            }
        }
        return true;
    }

    /** A write that waited: ask the snapshots again, and submit it if they all agree. */
    @Override
    public void remapDeferred(Bio clone) {
        long sector = targetOffset(clone);
        if (snapshotsAllow(clone, sector)) {
            clone.setDevice(device).setSector(sector);
            Submit.submitBio(clone);
        }
    }

    @Override
    public String statusTable() {
        return deviceName;
    }

    @Override
    public int flushBioCount() {
        return 1;
    }

    @Override
    public List<BlockDevice> devices() {
        return List.of(device);
    }

    /** The origin device. */
    public BlockDevice device() {
        return device;
    }
}
