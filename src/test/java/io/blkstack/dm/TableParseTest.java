package io.blkstack.dm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.BlockDevice;
import io.blkstack.block.NullDevice;
import io.blkstack.block.TestKernel;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.Test;

/**
 * Table parsing: comments and blank lines are skipped, the table must cover the device from 0
 * without gap or overlap, and every error names the line, the target, the argument and why.
 */
class TableParseTest {

    private static String error(String table) {
        try (TestKernel tk = new TestKernel("parse")) {
            Map<String, BlockDevice> devs = Map.of("a", new NullDevice(tk.kernel, "a", 1 << 20, 0),
                    "b", new NullDevice(tk.kernel, "b", 1 << 20, 0));
            TableException e = assertThrows(TableException.class,
                    () -> Table.parse(tk.kernel, "dm", table.replace("|", "\n"), devs::get).close());
            return e.getMessage();
        }
    }

    @ParameterizedTest
    @CsvSource(delimiterString = " => ", value = {
        "0 8 linear a 0|8 8 linear a abc => line 2: linear: argument 2 'abc' is not a sector offset",
        "0 8 linear nosuch 0 => line 1: linear: argument 1 'nosuch' names no known device",
        "0 8 linear a => line 1: linear: 1 argument(s), expected 2: <dev> <offset>",
        "0 8 linear a 2047 => line 1: linear: argument 2 '2047' with 8 sectors goes past the end of device a (2048 sectors)",
        "# header||0 8 linear a 0|9 8 linear a 0 => line 4: '9' start leaves a gap: the previous target ends at sector 8",
        "0 8 linear a 0|4 8 linear a 0 => line 2: '4' start overlaps: the previous target ends at sector 8",
        "8 8 linear a 0 => line 1: '8' start leaves a gap: the previous target ends at sector 0",
        "0 x linear a 0 => line 1: 'x' length is not a sector number",
        "0 8 => line 1: expected '<start> <length> <target> <args...>', got 2 word(s)",
        "0 0 zero => line 1: '0' length must be at least 1 sector",
        "0 8 zero extra => line 1: zero: 1 argument(s), expected 0: no arguments",
        "0 32 striped 2 4 a 0 b 0 => line 1: striped: argument 2 '4' chunk size must be at least 8 sectors (a page)",
        "0 32 striped 0 8 a 0 b 0 => line 1: striped: argument 1 '0' the number of stripes must be in 1..256",
        "0 40 striped 2 8 a 0 b 0 => line 1: striped: target length 40 is not a multiple of chunk size 8 times 2 stripe(s)",
        "0 32 striped 2 8 a 0 => line 1: striped: 4 argument(s), expected 6 for 2 stripe(s): <#stripes> <chunk sectors> [<dev> <offset>]+",
        "0 32 striped 2 8 a 0 b -1 => line 1: striped: argument 6 '-1' is not a sector offset",
        "  # only a comment => table for dm has no targets",
    })
    void errorNamesLineArgumentAndWhy(String table, String message) {
        assertEquals(message, error(table));
    }

    @Test
    void anUnknownTargetTypeListsTheRegisteredOnes() {
        String known = String.join(", ", TargetRegistry.withDefaults().types());
        assertTrue(known.contains("linear") && known.contains("striped"), known);
        assertEquals("line 1: 'frobnicate' is not a target type; known: " + known, error("0 8 frobnicate"));
    }

    @Test
    void commentsBlankLinesAndSpacingAreNormalized() throws TableException {
        try (TestKernel tk = new TestKernel("parse")) {
            Map<String, BlockDevice> devs = Map.of("a", new NullDevice(tk.kernel, "a", 1 << 20, 0));
            String text = "# a table\n\n0   8\tlinear a 0   # first\n  8 8 zero\n\n";
            try (Table t = Table.parse(tk.kernel, "dm", text, devs::get)) {
                assertEquals(List.of("0 8 linear a 0", "8 8 zero"), t.lines());
                assertEquals("0 8 linear a 0\n8 8 zero\n", t.toString());
                assertEquals(16, t.lengthSectors());
                assertEquals("zero", t.targetAt(8).type());
                assertEquals("linear", t.targetAt(7).type());
            }
        }
    }

    @Test
    void aFailingLineTearsDownTheTargetsAlreadyBuilt() {
        TargetRegistry registry = TargetRegistry.withDefaults();
        int[] closed = {0};
        registry.register("counted", args -> new Target(args) {
            @Override
            public MapResult map(io.blkstack.bio.Bio clone, TargetIo io) {
                return MapResult.KILL;
            }

            @Override
            public String statusTable() {
                return "";
            }

            @Override
            public void close() {
                closed[0]++;
            }
        });
        try (TestKernel tk = new TestKernel("parse")) {
            TableException e = assertThrows(TableException.class,
                    () -> Table.parse(tk.kernel, "dm", "0 8 counted\n8 8 counted\n16 8 linear none 0\n", n -> null,
                            registry));
            assertTrue(e.getMessage().startsWith("line 3: linear: argument 1 'none'"), e.getMessage());
            assertEquals(2, closed[0]);
        }
    }
}
