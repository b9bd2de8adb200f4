package io.blkstack.cli;

import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/**
 * Parses a duration in nanoseconds: a whole number with {@code ns}, {@code us}, {@code ms} or
 * {@code s} ({@code 30s}, {@code 1500ms}, {@code 0s}), up to one day, the same syntax as the
 * configuration's durations. A bare number is refused: {@code 30} could mean seconds or
 * milliseconds. Every error names the value that was given.
 */
public final class DurationConverter implements ITypeConverter<Long> {

    /** Longest duration accepted: one day. */
    static final long NANOS_MAX = 86_400_000_000_000L;
    /** Digits read at most; a bound on what is parsed. */
    private static final int DIGITS_MAX = 15;

    @Override
    public Long convert(String value) {
        try {
            return parse(value);
        } catch (IllegalArgumentException e) {
            throw new TypeConversionException(e.getMessage());
        }
    }

    /**
     * Parses {@code value} as nanoseconds.
     *
     * @throws IllegalArgumentException naming {@code value} if it is not a duration up to a day
     */
    public static long parse(String value) {
        String text = value == null ? "" : value;
        int end = 0;
        while (end < text.length() && end < DIGITS_MAX && Character.isDigit(text.charAt(end)) && text.charAt(end) < 128) {
            end++;
        }
        long unit = switch (text.substring(end)) {
            case "ns" -> 1L;
            case "us" -> 1_000L;
            case "ms" -> 1_000_000L;
            case "s" -> 1_000_000_000L;
            default -> -1L;
        };
        if (end == 0 || unit < 0) {
            throw new IllegalArgumentException("'" + text + "' is not a duration: use a whole number with ns, us, ms or s,"
                    + " such as 30s");
        }
        long number = Long.parseLong(text.substring(0, end));
        if (number > NANOS_MAX / unit) {
            throw new IllegalArgumentException("'" + text + "' is longer than one day (86400s)");
        }
        return number * unit;
    }

    /** A duration for messages: whole seconds as {@code 30s}, anything else in milliseconds. */
    static String format(long nanos) {
        if (nanos % 1_000_000_000L == 0) {
            return nanos / 1_000_000_000L + "s";
        }
        return nanos / 1_000_000L + "ms";
    }
}
