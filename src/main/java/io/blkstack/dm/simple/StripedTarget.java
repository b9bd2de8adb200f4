package io.blkstack.dm.simple;

import io.blkstack.bio.Bio;
import io.blkstack.block.BlockDevice;
import io.blkstack.dm.MapResult;
import io.blkstack.dm.TableException;
import io.blkstack.dm.Target;
import io.blkstack.dm.TargetArgs;
import io.blkstack.dm.TargetIo;
import io.blkstack.mem.Page;
import java.util.ArrayList;
import java.util.List;

/**
 * {@code striped <#stripes> <chunk sectors> [<dev> <offset>]+}: RAID-0 (dm-stripe). Consecutive
 * chunks rotate over the devices: chunk {@code c} of the target lives on stripe {@code c % N} at
 * chunk {@code c / N} of that stripe's range.
 *
 * <p>Rules from the dm documentation: the chunk size is at least a page (8 sectors; powers of two
 * are not required since Linux 3.x); the target length is a multiple of chunk size times stripes.
 * A bio never crosses a chunk: {@link #maxIoSectors} reports the distance to the next chunk
 * boundary, and the core splits there. Each stripe gets one empty flush.
 */
public final class StripedTarget extends Target {

    /** The table type name. */
    public static final String TYPE = "striped";
    /** The smallest chunk: one page, in sectors. */
    public static final int CHUNK_SECTORS_MIN = Page.SIZE / Bio.SECTOR_SIZE;
    /** The most stripes one target takes. */
    public static final int STRIPES_MAX = 256;

    private final int stripes;
    private final long chunkSectors;
    private final long stripeWidthSectors;
    private final BlockDevice[] devices;
    private final String[] deviceNames;
    private final long[] offsets;

    /** Parses the stripe count, the chunk size and one {@code <dev> <offset>} pair per stripe. */
    public StripedTarget(TargetArgs args) throws TableException {
        super(args);
        args.requireCountAtLeast(4, "<#stripes> <chunk sectors> [<dev> <offset>]+");
        this.stripes = args.intInRange(1, 1, STRIPES_MAX, "the number of stripes");
        this.chunkSectors = args.unsigned(2, "is not a chunk size in sectors");
        if (chunkSectors < CHUNK_SECTORS_MIN) {
            throw args.error(2, "chunk size must be at least " + CHUNK_SECTORS_MIN + " sectors (a page)");
        }
        if (args.count() != 2 + 2 * stripes) {
            throw args.error(args.count() + " argument(s), expected " + (2 + 2 * stripes) + " for " + stripes
                    + " stripe(s): <#stripes> <chunk sectors> [<dev> <offset>]+");
        }
        if (args.length() % (chunkSectors * stripes) != 0) {
            throw args.error("target length " + args.length() + " is not a multiple of chunk size " + chunkSectors
                    + " times " + stripes + " stripe(s)");
        }
        this.stripeWidthSectors = args.length() / stripes;
        this.devices = new BlockDevice[stripes];
        this.deviceNames = new String[stripes];
        this.offsets = new long[stripes];
        for (int i = 0; i < stripes; i++) {
            int devArg = 3 + 2 * i;
            devices[i] = args.device(devArg);
            deviceNames[i] = args.word(devArg);
            offsets[i] = args.sector(devArg + 1);
            args.requireArea(devArg + 1, devices[i], offsets[i], stripeWidthSectors);
        }
    }

    /** The stripe holding target sector {@code offset} (the kernel's {@code stripe_map_sector}). */
    public int stripeOf(long offset) {
        return (int) ((offset / chunkSectors) % stripes);
    }

    /** The device sector of target sector {@code offset} on its stripe. */
    public long deviceSectorOf(long offset) {
        long chunk = offset / chunkSectors;
        return (chunk / stripes) * chunkSectors + offset % chunkSectors + offsets[stripeOf(offset)];
    }

    /** Remaps the clone to its stripe; an empty flush goes to the stripe its number names. */
    /** A pure remap: reads by reference pass through. */
    @Override
    public boolean passesReadReference() {
        return true;
    }

    @Override
    public MapResult map(Bio clone, TargetIo io) {
        if (clone.sizeBytes() == 0) {
            int stripe = io.bioNumber();
            if (stripe < 0 || stripe >= stripes) {
                throw new IllegalStateException("striped: flush clone number " + stripe + " of " + stripes);
            }
            clone.setDevice(devices[stripe]).setSector(0);
            return MapResult.REMAPPED;
        }
        long offset = targetOffset(clone);
        long inChunk = offset % chunkSectors;
        if (inChunk + clone.sectorCount() > chunkSectors) {
            throw new IllegalStateException("striped: " + clone + " crosses a chunk of " + chunkSectors + " sectors");
        }
        clone.setDevice(devices[stripeOf(offset)]).setSector(deviceSectorOf(offset));
        return MapResult.REMAPPED;
    }

    /** Holes pass up from the stripes (a stripe that does not know its holes reports data). */
    @Override
    public boolean knowsAllocation() {
        for (BlockDevice d : devices) {
            if (d.knowsAllocation()) {
                return true;
            }
        }
        return false;
    }

    /** The run on the stripe holding {@code offset}, cut at the chunk's end. */
    @Override
    public long allocatedExtent(long offset, long maxSectors) {
        long inChunk = Math.min(maxSectors, chunkSectors - offset % chunkSectors);
        return devices[stripeOf(offset)].allocatedExtent(deviceSectorOf(offset), inChunk);
    }

    /** The distance to the next chunk boundary. */
    @Override
    public long maxIoSectors(long offset) {
        return chunkSectors - offset % chunkSectors;
    }

    @Override
    public int flushBioCount() {
        return stripes;
    }

    /** The stripe count, the devices and one health letter per stripe ({@code A}: alive), as dm-stripe. */
    @Override
    public String statusInfo() {
        StringBuilder sb = new StringBuilder().append(stripes);
        for (String name : deviceNames) {
            sb.append(' ').append(name);
        }
        return sb.append(' ').append("A".repeat(stripes)).toString();
    }

    @Override
    public String statusTable() {
        StringBuilder sb = new StringBuilder().append(stripes).append(' ').append(chunkSectors);
        for (int i = 0; i < stripes; i++) {
            sb.append(' ').append(deviceNames[i]).append(' ').append(offsets[i]);
        }
        return sb.toString();
    }

    @Override
    public List<BlockDevice> devices() {
        return new ArrayList<>(List.of(devices));
    }
}
