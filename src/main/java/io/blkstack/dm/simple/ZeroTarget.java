package io.blkstack.dm.simple;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.dm.MapResult;
import io.blkstack.dm.TableException;
import io.blkstack.dm.Target;
import io.blkstack.dm.TargetArgs;
import io.blkstack.dm.TargetIo;

/**
 * {@code zero}: reads return zeros, writes (and discards) are accepted and dropped (dm-zero); like
 * {@code /dev/zero} as a block device. No arguments; needs no flushes.
 */
public final class ZeroTarget extends Target {

    /** The table type name. */
    public static final String TYPE = "zero";

    /** Accepts no arguments. */
    public ZeroTarget(TargetArgs args) throws TableException {
        super(args);
        args.requireCount(0, "no arguments");
    }

    /** Zero-fills reads and completes everything at once. */
    @Override
    public MapResult map(Bio clone, TargetIo io) {
        if (clone.op() == BioOp.READ) {
            clone.zeroFill();
        }
        clone.endio();
        return MapResult.SUBMITTED;
    }

    @Override
    public String statusTable() {
        return "";
    }
}
