package io.blkstack.cli;

import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/**
 * Parses a duration in nanoseconds for timeouts: a whole number with a unit, {@code ns},
 * {@code us}, {@code ms} or {@code s} ({@code 30s}, {@code 250ms}, {@code 0s}), at most one day,
 * the same syntax as the configuration's durations. A bare number is refused: a timeout of "10"
 * could be seconds or milliseconds. This converter accepts 0 (its callers say what 0 means);
 * {@link Positive} refuses it, for a timeout that must end; {@link OrOff} also takes {@code off},
 * for a timeout that may be disabled. Every error names the value that was given.
 */
public final class DurationConverter implements ITypeConverter<Long> {

    /** The longest duration accepted: one day. */
    public static final long NANOS_MAX = 86_400L * 1_000_000_000L;
    /** Longest input accepted; a bound on what is parsed. */
    private static final int INPUT_LENGTH_MAX = 32;

    @Override
    public Long convert(String value) {
        try {
            return parse(value);
        } catch (IllegalArgumentException e) {
            throw new TypeConversionException(e.getMessage());
        }
    }

    /** A duration greater than 0. */
    public static final class Positive implements ITypeConverter<Long> {
        @Override
        public Long convert(String value) {
            try {
                return parsePositive(value);
            } catch (IllegalArgumentException e) {
                throw new TypeConversionException(e.getMessage());
            }
        }
    }

    /** A positive duration or {@code off} (0). */
    public static final class OrOff implements ITypeConverter<Long> {
        @Override
        public Long convert(String value) {
            try {
                return parseOrOff(value);
            } catch (IllegalArgumentException e) {
                throw new TypeConversionException(e.getMessage());
            }
        }
    }

    /**
     * Parses {@code value} as a duration in nanoseconds, 0 included.
     *
     * @throws IllegalArgumentException naming {@code value} if it is not a duration up to a day
     */
    public static long parse(String value) {
        String text = value == null ? "" : value;
        if (text.isEmpty() || text.length() > INPUT_LENGTH_MAX) {
            throw notADuration(text);
        }
        int digitsEnd = 0;
        while (digitsEnd < text.length() && text.charAt(digitsEnd) >= '0' && text.charAt(digitsEnd) <= '9') {
            digitsEnd++;
        }
        long unit = switch (text.substring(digitsEnd)) {
            case "ns" -> 1L;
            case "us" -> 1_000L;
            case "ms" -> 1_000_000L;
            case "s" -> 1_000_000_000L;
            default -> -1L;
        };
        if (digitsEnd == 0 || unit < 0) {
            throw notADuration(text);
        }
        long number;
        try {
            number = Long.parseLong(text.substring(0, digitsEnd));
        } catch (NumberFormatException e) {
            number = Long.MAX_VALUE;
        }
        if (number > NANOS_MAX / unit) {
            throw new IllegalArgumentException("'" + text + "' is longer than a day (86400s)");
        }
        return number * unit;
    }

    /**
     * Parses {@code value} as a positive duration in nanoseconds.
     *
     * @throws IllegalArgumentException naming {@code value} if it is not one
     */
    public static long parsePositive(String value) {
        long nanos = parse(value);
        if (nanos == 0) {
            throw new IllegalArgumentException("'" + value + "' is not a positive duration");
        }
        return nanos;
    }

    /** Like {@link #parsePositive}, but {@code off} is 0 (disabled). */
    public static long parseOrOff(String value) {
        if ("off".equals(value)) {
            return 0;
        }
        try {
            return parsePositive(value);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(e.getMessage() + ", or off");
        }
    }

    /** A duration for messages: whole seconds as {@code 30s}, anything else in milliseconds. */
    static String format(long nanos) {
        if (nanos % 1_000_000_000L == 0) {
            return nanos / 1_000_000_000L + "s";
        }
        return nanos / 1_000_000L + "ms";
    }

    private static IllegalArgumentException notADuration(String text) {
        return new IllegalArgumentException("'" + text + "' is not a duration: use a whole number with ns, us, ms"
                + " or s, such as 30s or 250ms");
    }
}
