package io.blkstack.units;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Sizes are plain bytes or whole numbers of binary units; anything else is refused by name. */
class SizesTest {

    @Test
    void plainNumbersAreBytes() {
        assertEquals(0L, Sizes.parse("0"));
        assertEquals(4096L, Sizes.parse("4096"));
        assertEquals(Long.MAX_VALUE, Sizes.parse(Long.toString(Long.MAX_VALUE)));
    }

    @Test
    void binaryUnitsMultiplyByPowersOf1024() {
        assertEquals(512L, Sizes.parse("512B"));
        assertEquals(4L * 1024, Sizes.parse("4KiB"));
        assertEquals(64L * 1024 * 1024, Sizes.parse("64MiB"));
        assertEquals(3L * 1024 * 1024 * 1024, Sizes.parse("3GiB"));
        assertEquals(2L * 1024 * 1024 * 1024 * 1024, Sizes.parse("2TiB"));
    }

    @Test
    void largestSizeInEachUnitIsAccepted() {
        assertEquals((Long.MAX_VALUE >> 40) << 40, Sizes.parse((Long.MAX_VALUE >> 40) + "TiB"));
    }

    @ParameterizedTest
    @ValueSource(strings = {"", "MiB", "-1", "+4", " 4KiB", "4 KiB", "4KiB ", "1.5GiB", "0x10",
        "4K", "4M", "4G", "4T", "4KB", "4MB", "4kib", "4mib", "4KIB", "4Kib", "4b", "4BB", "four"})
    void malformedSizesAreRefusedNamingTheValue(String value) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Sizes.parse(value));
        assertTrue(e.getMessage().contains("'" + value + "'"), e.getMessage());
    }

    @ParameterizedTest
    @ValueSource(strings = {"9223372036854775808", "99999999999999999999999", "8388608TiB",
        "9007199254740992KiB"})
    void sizesBeyondLongAreRefusedNamingTheValue(String value) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Sizes.parse(value));
        assertTrue(e.getMessage().contains("'" + value + "'"), e.getMessage());
        assertTrue(e.getMessage().contains("too large"), e.getMessage());
    }

    @Test
    void overlongInputIsRefusedWithoutEchoingAllOfIt() {
        String value = "1".repeat(10_000);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Sizes.parse(value));
        assertTrue(e.getMessage().length() < 200, e.getMessage());
    }

    @Test
    void nullIsRefused() {
        assertThrows(IllegalArgumentException.class, () -> Sizes.parse(null));
    }
}
