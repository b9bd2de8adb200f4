package io.blkstack.dm.simple;

import io.blkstack.bio.Bio;
import io.blkstack.dm.MapResult;
import io.blkstack.dm.TableException;
import io.blkstack.dm.Target;
import io.blkstack.dm.TargetArgs;
import io.blkstack.dm.TargetIo;

/**
 * {@code error}: every I/O fails with EIO (dm-error, {@code io_err}); used to fence off a range or
 * stand in for a failed device. Accepts and ignores arguments, as dm-error does (so replacing a
 * target's type by {@code error} keeps a valid line); reproduces them in the table status.
 */
public final class ErrorTarget extends Target {

    /** The table type name. */
    public static final String TYPE = "error";

    private final String argsText;

    /** Accepts any arguments and keeps them for the table line. */
    public ErrorTarget(TargetArgs args) throws TableException {
        super(args);
        this.argsText = String.join(" ", args.words());
    }

    /** Fails the clone. */
    @Override
    public MapResult map(Bio clone, TargetIo io) {
        return MapResult.KILL;
    }

    @Override
    public String statusTable() {
        return argsText;
    }
}
