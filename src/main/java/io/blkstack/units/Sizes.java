package io.blkstack.units;

/** Byte counts as people write them: exact binary units, the way configurations spell sizes. */
public final class Sizes {

    private static final String[] UNITS = {"B", "KiB", "MiB", "GiB", "TiB"};

    private Sizes() {
    }

    /** {@code 1073741824} as {@code 1GiB}, {@code 1536} as {@code 1536B}... exact, never rounded. */
    public static String format(long bytes) {
        int unit = 0;
        long v = bytes;
        while (unit < UNITS.length - 1 && v != 0 && v % 1024 == 0) {
            v /= 1024;
            unit++;
        }
        return v + UNITS[unit];
    }
}
