package io.blkstack.units;

/**
 * Durations as configurations and flags spell them: a whole number with a unit, {@code ns},
 * {@code us}, {@code ms} or {@code s} ({@code 30s}, {@code 250ms}, {@code 0s}). A bare number is
 * refused: "10" could be seconds or milliseconds. One parser for the YAML keys and the command
 * line, so both accept and refuse the same text with the same words.
 */
public final class Durations {

    /** The longest timeout accepted: one day. */
    public static final long NANOS_MAX = 86_400L * 1_000_000_000L;
    /** Longest input parsed; a bound on the work and on the number of digits. */
    private static final int INPUT_LENGTH_MAX = 32;

    private Durations() {
    }

    /**
     * What is wrong with {@code text} as a duration of at most {@code maxNanos} (said as
     * {@code maxText}), or null if nothing is; the reason reads after the quoted value.
     */
    public static String problem(String text, long maxNanos, String maxText) {
        if (text == null || text.isEmpty() || text.length() > INPUT_LENGTH_MAX) {
            return NOT_A_DURATION;
        }
        int digitsEnd = digitsEnd(text);
        long unit = unitNanos(text.substring(digitsEnd));
        if (digitsEnd == 0 || unit < 0) {
            return NOT_A_DURATION;
        }
        if (number(text, digitsEnd) > maxNanos / unit) {
            return "is longer than " + maxText;
        }
        return null;
    }

    /**
     * Parses {@code text} as a duration in nanoseconds of at most {@code maxNanos}, 0 included.
     *
     * @throws IllegalArgumentException naming {@code text} if it is not one
     */
    public static long parse(String text, long maxNanos, String maxText) {
        String problem = problem(text, maxNanos, maxText);
        if (problem != null) {
            throw new IllegalArgumentException("'" + (text == null ? "" : text) + "' " + problem);
        }
        int digitsEnd = digitsEnd(text);
        return number(text, digitsEnd) * unitNanos(text.substring(digitsEnd));
    }

    /** Parses a duration of at most a day, 0 included. */
    public static long parse(String text) {
        return parse(text, NANOS_MAX, "a day (86400s)");
    }

    /** Parses a positive duration of at most a day. */
    public static long parsePositive(String text) {
        long nanos = parse(text);
        if (nanos == 0) {
            throw new IllegalArgumentException("'" + text + "' is not a positive duration");
        }
        return nanos;
    }

    /** Like {@link #parsePositive}, but {@code off} is 0 (disabled). */
    public static long parseOrOff(String text) {
        if ("off".equals(text)) {
            return 0;
        }
        try {
            return parsePositive(text);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(e.getMessage() + ", or off");
        }
    }

    /** A duration for messages: whole seconds as {@code 30s}, anything else in milliseconds. */
    public static String format(long nanos) {
        if (nanos % 1_000_000_000L == 0) {
            return nanos / 1_000_000_000L + "s";
        }
        return nanos / 1_000_000L + "ms";
    }

    private static final String NOT_A_DURATION = "is not a duration: use a whole number with ns, us, ms or s, such as"
            + " 30s or 250ms";

    private static int digitsEnd(String text) {
        int end = 0;
        while (end < text.length() && text.charAt(end) >= '0' && text.charAt(end) <= '9') {
            end++;
        }
        return end;
    }

    private static long unitNanos(String unit) {
        return switch (unit) {
            case "ns" -> 1L;
            case "us" -> 1_000L;
            case "ms" -> 1_000_000L;
            case "s" -> 1_000_000_000L;
            default -> -1L;
        };
    }

    /** The leading number; past what a long holds it counts as longer than any bound. */
    private static long number(String text, int digitsEnd) {
        try {
            return Long.parseLong(text.substring(0, digitsEnd));
        } catch (NumberFormatException e) {
            return Long.MAX_VALUE;
        }
    }
}
