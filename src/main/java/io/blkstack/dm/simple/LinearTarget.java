package io.blkstack.dm.simple;

import io.blkstack.bio.Bio;
import io.blkstack.block.BlockDevice;
import io.blkstack.dm.MapResult;
import io.blkstack.dm.TableException;
import io.blkstack.dm.Target;
import io.blkstack.dm.TargetArgs;
import io.blkstack.dm.TargetIo;
import java.util.List;

/**
 * {@code linear <dev> <offset>}: maps the target's range onto a contiguous range of one device
 * starting at {@code offset} (dm-linear). Every bio is remapped in place; flushes go to the device.
 */
public final class LinearTarget extends Target {

    /** The table type name. */
    public static final String TYPE = "linear";

    private final BlockDevice device;
    private final String deviceName;
    private final long offsetSectors;

    /** Parses {@code <dev> <offset>}; the range must lie inside the device. */
    public LinearTarget(TargetArgs args) throws TableException {
        super(args);
        args.requireCount(2, "<dev> <offset>");
        this.device = args.device(1);
        this.deviceName = args.word(1);
        this.offsetSectors = args.sector(2);
        args.requireArea(2, device, offsetSectors, args.length());
    }

    /** The device sector for a sector of the mapped device inside this target. */
    public long mapSector(long sector) {
        return offsetSectors + (sector - begin());
    }

    /** Points the clone at the device, at the same offset into the target plus this target's offset. */
    /** A pure remap: reads by reference pass through. */
    @Override
    public boolean passesReadReference() {
        return true;
    }

    @Override
    public MapResult map(Bio clone, TargetIo io) {
        clone.setDevice(device);
        if (clone.sizeBytes() > 0) {
            clone.setSector(offsetSectors + targetOffset(clone));
        } else {
            clone.setSector(0);
        }
        return MapResult.REMAPPED;
    }

    /** Holes pass up: the device's, at the remapped sector. */
    @Override
    public boolean knowsAllocation() {
        return device.knowsAllocation();
    }

    @Override
    public long allocatedExtent(long offset, long maxSectors) {
        return device.allocatedExtent(offsetSectors + offset, maxSectors);
    }

    @Override
    public String statusTable() {
        return deviceName + " " + offsetSectors;
    }

    @Override
    public int flushBioCount() {
        return 1;
    }

    @Override
    public List<BlockDevice> devices() {
        return List.of(device);
    }

    /** The device this target maps to. */
    public BlockDevice device() {
        return device;
    }
}
