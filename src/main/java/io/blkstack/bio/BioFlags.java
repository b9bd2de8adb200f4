package io.blkstack.bio;

/**
 * Modifier flags of a bio (the kernel's {@code REQ_*} bits), combined with {@code |}.
 */
public final class BioFlags {

    /** Forced unit access: the write is durable when it completes. */
    public static final int FUA = 1;
    /** Flush the device's cache before this bio is handled. */
    public static final int PREFLUSH = 2;
    /** Fail with {@link BioStatus#AGAIN} instead of waiting for a resource. */
    public static final int NOWAIT = 4;
    /** For write-zeroes: do not deallocate the range (no unmap). */
    public static final int NOUNMAP = 8;

    /** Every flag this version knows; other bits are a caller error. */
    public static final int ALL = FUA | PREFLUSH | NOWAIT | NOUNMAP;

    private BioFlags() {
    }

    /** A readable form such as {@code FUA|PREFLUSH}, or {@code -} for none. */
    public static String describe(int flags) {
        if (flags == 0) {
            return "-";
        }
        StringBuilder sb = new StringBuilder();
        appendIf(sb, flags, FUA, "FUA");
        appendIf(sb, flags, PREFLUSH, "PREFLUSH");
        appendIf(sb, flags, NOWAIT, "NOWAIT");
        appendIf(sb, flags, NOUNMAP, "NOUNMAP");
        int unknown = flags & ~ALL;
        if (unknown != 0) {
            sb.append(sb.length() == 0 ? "" : "|").append("0x").append(Integer.toHexString(unknown));
        }
        return sb.toString();
    }

    private static void appendIf(StringBuilder sb, int flags, int flag, String name) {
        if ((flags & flag) != 0) {
            sb.append(sb.length() == 0 ? "" : "|").append(name);
        }
    }
}
