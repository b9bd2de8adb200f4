package io.blkstack.units;

/**
 * Byte counts as people write them: exact binary units, the way configurations and command-line
 * flags spell sizes. One parser for both: the YAML reader calls {@link #parse} and the
 * command line's picocli adapter ({@code cli.SizeConverter}) only wraps it.
 *
 * <p>A size is a plain number of bytes ({@code 4096}) or a whole number with a binary unit
 * ({@code 512B}, {@code 4KiB}, {@code 64MiB}, {@code 1GiB}, {@code 2TiB}). Decimal and ambiguous
 * units ({@code K}, {@code MB}, {@code 1.5GiB}) are refused rather than guessed: a block layer that
 * silently reads {@code 1G} as 10^9 or 2^30 bytes gets sizes and alignments wrong. Every error
 * names the value that was given.
 */
public final class Sizes {

    /** Longest input accepted; a bound on what is parsed, far above any real size. */
    private static final int INPUT_LENGTH_MAX = 64;

    /** The largest unit, as a power of 1024. */
    private static final int UNIT_POWER_MAX = 4;

    private Sizes() {
    }

    /** {@code 1073741824} as {@code 1GiB}, {@code 1536} as {@code 1536B}... exact, never rounded. */
    public static String format(long bytes) {
        int power = 0;
        long v = bytes;
        while (power < UNIT_POWER_MAX && v != 0 && v % 1024 == 0) {
            v /= 1024;
            power++;
        }
        return v + unitName(power);
    }

    /** The binary unit of 1024^{@code power} bytes. */
    private static String unitName(int power) {
        return switch (power) {
            case 0 -> "B";
            case 1 -> "KiB";
            case 2 -> "MiB";
            case 3 -> "GiB";
            case 4 -> "TiB";
            default -> throw new IllegalArgumentException("no unit for 1024^" + power);
        };
    }

    /**
     * Parses {@code value} as a size in bytes.
     *
     * @throws IllegalArgumentException naming {@code value} if it is not a size
     */
    public static long parse(String value) {
        if (value == null || value.isEmpty()) {
            throw new IllegalArgumentException("'' is not a size: expected bytes or a number with "
                    + "B, KiB, MiB, GiB or TiB, such as 64MiB");
        }
        if (value.length() > INPUT_LENGTH_MAX) {
            throw new IllegalArgumentException("'" + value.substring(0, INPUT_LENGTH_MAX)
                    + "...' is not a size: longer than " + INPUT_LENGTH_MAX + " characters");
        }
        int digitsEnd = 0;
        while (digitsEnd < value.length() && isAsciiDigit(value.charAt(digitsEnd))) {
            digitsEnd++;
        }
        if (digitsEnd == 0) {
            throw new IllegalArgumentException("'" + value + "' is not a size: it must start with "
                    + "a whole number of bytes or units, such as 4096 or 64MiB");
        }
        String unit = value.substring(digitsEnd);
        int shift = unitShift(value, unit);
        long number = parseNumber(value, value.substring(0, digitsEnd));
        if (number > (Long.MAX_VALUE >> shift)) {
            throw new IllegalArgumentException("'" + value + "' is too large: the limit is "
                    + Long.MAX_VALUE + " bytes");
        }
        long bytes = number << shift;
        if (bytes < 0) {
            throw new IllegalStateException("size '" + value + "' parsed to negative " + bytes);
        }
        return bytes;
    }

    /** The shift for {@code unit} (empty means bytes), or an error naming the whole value. */
    private static int unitShift(String value, String unit) {
        if (unit.isEmpty()) {
            return 0;
        }
        int shift = switch (unit) {
            case "B" -> 0;
            case "KiB" -> 10;
            case "MiB" -> 20;
            case "GiB" -> 30;
            case "TiB" -> 40;
            default -> -1;
        };
        if (shift >= 0) {
            return shift;
        }
        throw new IllegalArgumentException("'" + value + "' has unknown unit '" + unit
                + "': use B, KiB, MiB, GiB or TiB (binary units; K, M, G, KB, MB are not accepted)");
    }

    /** Parses the digits, or reports that the whole value is too large. */
    private static long parseNumber(String value, String digits) {
        try {
            return Long.parseLong(digits);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("'" + value + "' is too large: the limit is "
                    + Long.MAX_VALUE + " bytes", e);
        }
    }

    /** Only 0-9: {@link Character#isDigit} would also accept other scripts' digits. */
    private static boolean isAsciiDigit(char c) {
        return c >= '0' && c <= '9';
    }
}
