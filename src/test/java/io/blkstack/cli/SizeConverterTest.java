package io.blkstack.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import picocli.CommandLine.TypeConversionException;

/** The picocli adapter over {@link io.blkstack.units.Sizes}: values in bytes, errors as picocli's. */
class SizeConverterTest {

    @Test
    void converterReportsTypeConversionErrorsForPicocli() {
        SizeConverter converter = new SizeConverter();
        assertEquals(1024L, converter.convert("1KiB"));
        TypeConversionException e = assertThrows(TypeConversionException.class,
                () -> converter.convert("12MB"));
        assertTrue(e.getMessage().contains("'12MB'"), e.getMessage());
    }
}
