package io.blkstack.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bufio.BufferCache;
import io.blkstack.dm.MappedDevice;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Reserves;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

/**
 * The YAML key {@code reserves:} (dm clone pool per mapped device, target bio sets, bufio
 * buffers): defaults, parsing, errors with file and line, and that the sizes reach what a kernel
 * built with them builds.
 */
class ReservesKeysTest {

    private static final String STACK = """
            %s
            devices:
              meta: { memory: 1MiB }
              data: { memory: 1MiB }
            mapped:
              pool: |
                0 2048 thin-pool meta data 128 0
              lin: |
                0 2048 linear data 0
            exports:
              lin: { device: lin }
            """;

    private static StackConfig parse(String top) throws ConfigException {
        return StackConfig.parse("r.yaml", STACK.formatted(top), Path.of("/base"));
    }

    @Test
    void absentMeansTheKernelDefaults() throws ConfigException {
        assertEquals(Reserves.DEFAULTS, parse("").reserves());
        assertEquals(new Reserves(16, 16, 4), Reserves.DEFAULTS);
    }

    @Test
    void keysGivenReplaceOnlyThemselves() throws ConfigException {
        assertEquals(new Reserves(1, 16, 4), parse("reserves: { dm-clones: 1 }").reserves());
        assertEquals(new Reserves(2, 3, 1), parse("reserves:\n  dm-clones: 2\n  target-bios: 3\n  bufio-buffers: 1").reserves());
    }

    // Bad values and unknown keys are errors naming the file, the line, the key and the value.
    @Test
    void badValuesNameTheLineAndKey() {
        ConfigException e = assertThrows(ConfigException.class, () -> parse("reserves:\n  dm-clones: 0"));
        assertTrue(e.getMessage().startsWith("r.yaml:2: reserves.dm-clones: '0' is not in 1..4096"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> parse("reserves: { bufio-buffers: many }"));
        assertTrue(e.getMessage().startsWith("r.yaml:1: reserves.bufio-buffers: 'many' is not a whole number"),
                e.getMessage());
        e = assertThrows(ConfigException.class, () -> parse("reserves:\n  clones: 1"));
        assertTrue(e.getMessage().startsWith("r.yaml:2: reserves.clones: unknown key"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> parse("reserves: 1"));
        assertTrue(e.getMessage().startsWith("r.yaml:1: reserves: '1' is not a map"), e.getMessage());
    }

    // A kernel built with the file's reserves gives every mapped device a clone pool of that size
    // and every buffer cache (the thin pool's metadata cache is one) a reserve of that size.
    @Test
    void theSizesReachTheStack() throws Exception {
        StackConfig c = parse("reserves: { dm-clones: 1, bufio-buffers: 2 }");
        Kernel kernel = Kernel.builder().name("reserves").memory(16L << 20).reserves(c.reserves()).build();
        try (Kernel.Attachment self = kernel.attach("test")) {
            try (Stack stack = Stack.build(kernel, c, Stack.Mode.SERVE)) {
                for (String name : new String[] {"pool", "lin"}) {
                    MappedDevice md = (MappedDevice) stack.device(name);
                    assertEquals(1, md.cloneSet().bioPool().minNr(), name);
                }
                try (BufferCache cache = new BufferCache(stack.device("data"), 4096)) {
                    assertTrue(cache.describeState().contains(", 2/2 reserve,"), cache.describeState());
                }
            } finally {
                kernel.close();
            }
        }
    }
}
