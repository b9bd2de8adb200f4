package io.blkstack.cli;

import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/**
 * Parses a positive duration for timeouts: a whole number with a unit, {@code ns}, {@code us},
 * {@code ms} or {@code s} ({@code 10s}, {@code 250ms}), at most a day. A bare number is refused: a
 * timeout of "10" could be seconds or milliseconds. {@link OrOff} also takes {@code off}, for a
 * timeout that may be disabled. Every error names the value that was given.
 */
public final class DurationConverter implements ITypeConverter<Long> {

    /** The longest duration accepted: one day. */
    public static final long NANOS_MAX = 86_400L * 1_000_000_000L;
    /** Longest input accepted. */
    private static final int INPUT_LENGTH_MAX = 32;

    @Override
    public Long convert(String value) {
        try {
            return parse(value);
        } catch (IllegalArgumentException e) {
            throw new TypeConversionException(e.getMessage());
        }
    }

    /** A duration or {@code off} (0). */
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
     * Parses {@code value} as a positive duration in nanoseconds.
     *
     * @throws IllegalArgumentException naming {@code value} if it is not one
     */
    public static long parse(String value) {
        if (value == null || value.isEmpty() || value.length() > INPUT_LENGTH_MAX) {
            throw new IllegalArgumentException("'" + (value == null ? "" : value) + "' is not a duration: use a whole"
                    + " number with ns, us, ms or s, such as 10s or 250ms");
        }
        int digitsEnd = 0;
        while (digitsEnd < value.length() && value.charAt(digitsEnd) >= '0' && value.charAt(digitsEnd) <= '9') {
            digitsEnd++;
        }
        long unit = switch (value.substring(digitsEnd)) {
            case "ns" -> 1L;
            case "us" -> 1_000L;
            case "ms" -> 1_000_000L;
            case "s" -> 1_000_000_000L;
            default -> -1L;
        };
        if (digitsEnd == 0 || unit < 0) {
            throw new IllegalArgumentException("'" + value + "' is not a duration: use a whole number with ns, us, ms"
                    + " or s, such as 10s or 250ms");
        }
        long number;
        try {
            number = Long.parseLong(value.substring(0, digitsEnd));
        } catch (NumberFormatException e) {
            number = Long.MAX_VALUE;
        }
        if (number > NANOS_MAX / unit) {
            throw new IllegalArgumentException("'" + value + "' is longer than a day (86400s)");
        }
        if (number == 0) {
            throw new IllegalArgumentException("'" + value + "' is not a positive duration");
        }
        return number * unit;
    }

    /** Like {@link #parse}, but {@code off} is 0 (disabled). */
    public static long parseOrOff(String value) {
        if ("off".equals(value)) {
            return 0;
        }
        try {
            return parse(value);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(e.getMessage() + ", or off");
        }
    }
}
