package io.blkstack.dm.mirror;

import io.blkstack.block.BlockDevice;
import io.blkstack.dm.TableException;
import io.blkstack.dm.TargetArgs;

/**
 * The mirror's table line, parsed strictly and formatted back exactly:
 * {@code core <#log args> <region size> [sync|nosync] <#mirrors> [<dev> <offset>]+
 * [<#features> handle_errors]}. Every error names the bad argument (its index and value, through
 * {@link TargetArgs}); {@link #format} reproduces the arguments as given, which is the target's
 * {@code status TABLE}.
 */
final class MirrorTable {

    private static final String USAGE =
            "core <#log args> <region size> [sync|nosync] <#mirrors> [<dev> <offset>]+ [<#features> handle_errors]";

    /** Region size in sectors, a power of two. */
    final long regionSectors;
    /** {@code sync}, {@code nosync}, or null when the log has one argument. */
    final String syncWord;
    /** The legs' devices, their names as written, and their start sectors. */
    final BlockDevice[] devices;
    final String[] names;
    final long[] offsets;
    /** Whether the line carried the {@code handle_errors} feature (errors are handled either way). */
    final boolean handleErrors;

    private MirrorTable(long regionSectors, String syncWord, BlockDevice[] devices, String[] names, long[] offsets,
            boolean handleErrors) {
        this.regionSectors = regionSectors;
        this.syncWord = syncWord;
        this.devices = devices;
        this.names = names;
        this.offsets = offsets;
        this.handleErrors = handleErrors;
    }

    /** Parses the arguments; each leg's area must lie inside its device. */
    static MirrorTable parse(TargetArgs args) throws TableException {
        args.requireCountAtLeast(5, USAGE);
        if (!"core".equals(args.word(1))) {
            throw args.error(1, "is not a supported log type (only core)");
        }
        int logArgs = args.intInRange(2, 1, 2, "the number of log arguments");
        long regionSectors = args.unsigned(3, "is not a region size in sectors");
        if (regionSectors == 0 || Long.bitCount(regionSectors) != 1) {
            throw args.error(3, "region size must be a power of two number of sectors");
        }
        int next = 4;
        String syncWord = null;
        if (logArgs == 2) {
            syncWord = args.word(4);
            if (!syncWord.equals("sync") && !syncWord.equals("nosync")) {
                throw args.error(4, "is not a core log argument (sync or nosync)");
            }
            next = 5;
        }
        if (args.count() < next + 1) {
            throw args.error(args.count() + " argument(s): missing <#mirrors>: " + USAGE);
        }
        int legCount = args.intInRange(next, 2, MirrorTarget.LEGS_MAX, "the number of mirrors");
        int firstDev = next + 1;
        int afterLegs = firstDev + 2 * legCount; // the 1-based index of <#features>, if present
        if (args.count() < afterLegs - 1) {
            throw args.error(args.count() + " argument(s), expected " + (afterLegs - 1) + " for " + legCount
                    + " mirror(s): " + USAGE);
        }
        BlockDevice[] devices = new BlockDevice[legCount];
        String[] names = new String[legCount];
        long[] offsets = new long[legCount];
        for (int i = 0; i < legCount; i++) {
            int devArg = firstDev + 2 * i;
            devices[i] = args.device(devArg);
            names[i] = args.word(devArg);
            offsets[i] = args.sector(devArg + 1);
            args.requireArea(devArg + 1, devices[i], offsets[i], args.length());
        }
        return new MirrorTable(regionSectors, syncWord, devices, names, offsets, parseFeatures(args, afterLegs));
    }

    /** Parses the optional {@code <#features> handle_errors} that starts at {@code afterLegs}. */
    private static boolean parseFeatures(TargetArgs args, int afterLegs) throws TableException {
        if (args.count() < afterLegs) {
            return false;
        }
        int features = args.intInRange(afterLegs, 0, 1, "the number of features");
        if (args.count() != afterLegs + features) {
            throw args.error(args.count() + " argument(s), expected " + (afterLegs + features) + " with "
                    + features + " feature(s)");
        }
        if (features == 1 && !"handle_errors".equals(args.word(afterLegs + 1))) {
            throw args.error(afterLegs + 1, "is not a supported feature (handle_errors)");
        }
        return features == 1;
    }

    /** The arguments exactly as parsed. */
    String format() {
        StringBuilder sb = new StringBuilder("core ").append(syncWord == null ? 1 : 2).append(' ').append(regionSectors);
        if (syncWord != null) {
            sb.append(' ').append(syncWord);
        }
        sb.append(' ').append(devices.length);
        for (int i = 0; i < devices.length; i++) {
            sb.append(' ').append(names[i]).append(' ').append(offsets[i]);
        }
        if (handleErrors) {
            sb.append(" 1 handle_errors");
        }
        return sb.toString();
    }
}
