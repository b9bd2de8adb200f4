package io.blkstack.cli;

import io.blkstack.units.Sizes;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/**
 * The picocli side of {@link Sizes#parse}: a size flag's value in bytes, a plain number of bytes
 * or a whole number with a binary unit ({@code 4096}, {@code 64MiB}), the same syntax as the
 * configuration's sizes. Every error names the value that was given.
 */
public final class SizeConverter implements ITypeConverter<Long> {

    @Override
    public Long convert(String value) {
        try {
            return Sizes.parse(value);
        } catch (IllegalArgumentException e) {
            throw new TypeConversionException(e.getMessage());
        }
    }
}
