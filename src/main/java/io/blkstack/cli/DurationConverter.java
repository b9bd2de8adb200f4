package io.blkstack.cli;

import io.blkstack.units.Durations;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/**
 * The picocli side of {@link Durations}: parses a duration in nanoseconds for timeouts, a whole number with a unit, {@code ns},
 * {@code us}, {@code ms} or {@code s} ({@code 30s}, {@code 250ms}, {@code 0s}), at most one day,
 * the same syntax as the configuration's durations. A bare number is refused: a timeout of "10"
 * could be seconds or milliseconds. This converter accepts 0 (its callers say what 0 means);
 * {@link Positive} refuses it, for a timeout that must end; {@link OrOff} also takes {@code off},
 * for a timeout that may be disabled. Every error names the value that was given.
 */
public final class DurationConverter implements ITypeConverter<Long> {

    /** The longest duration accepted: one day. */
    public static final long NANOS_MAX = Durations.NANOS_MAX;

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

    /** Parses {@code value} as a duration in nanoseconds, 0 included, up to a day ({@link Durations#parse}). */
    public static long parse(String value) {
        return Durations.parse(value);
    }

    /** Parses {@code value} as a positive duration in nanoseconds ({@link Durations#parsePositive}). */
    public static long parsePositive(String value) {
        return Durations.parsePositive(value);
    }

    /** Like {@link #parsePositive}, but {@code off} is 0 (disabled). */
    public static long parseOrOff(String value) {
        return Durations.parseOrOff(value);
    }

    /** A duration for messages ({@link Durations#format}). */
    static String format(long nanos) {
        return Durations.format(nanos);
    }
}
