package io.blkstack.cli;

import io.blkstack.units.Durations;
import java.util.function.ToLongFunction;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/**
 * The picocli side of {@link Durations}: a timeout flag's value in nanoseconds, a whole number
 * with {@code ns}, {@code us}, {@code ms} or {@code s} ({@code 30s}, {@code 250ms}, {@code 0s}),
 * at most one day, the same syntax as the configuration's durations. This converter accepts 0
 * (its callers say what 0 means); {@link Positive} refuses it, for a timeout that must end;
 * {@link OrOff} also takes {@code off}, for a timeout that may be disabled. Every error names the
 * value that was given.
 */
public final class DurationConverter implements ITypeConverter<Long> {

    @Override
    public Long convert(String value) {
        return convert(value, Durations::parse);
    }

    /** A duration greater than 0. */
    public static final class Positive implements ITypeConverter<Long> {
        @Override
        public Long convert(String value) {
            return DurationConverter.convert(value, Durations::parsePositive);
        }
    }

    /** A positive duration or {@code off} (0). */
    public static final class OrOff implements ITypeConverter<Long> {
        @Override
        public Long convert(String value) {
            return DurationConverter.convert(value, Durations::parseOrOff);
        }
    }

    /** Parses with {@code parser}, turning its error (which names the value) into picocli's. */
    private static Long convert(String value, ToLongFunction<String> parser) {
        try {
            return parser.applyAsLong(value);
        } catch (IllegalArgumentException e) {
            throw new TypeConversionException(e.getMessage());
        }
    }
}
