package io.blkstack.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.TestKernel;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.thin.ThinPoolTarget;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

/**
 * The YAML keys {@code no-space-timeout} (every thin pool's default, which a pool's own
 * {@code no_space_timeout=} feature overrides) and {@code drain-timeout} (serve's drain deadline):
 * defaults, parsing, errors with file and line, and that the default reaches the pools a stack builds.
 */
class TimeoutKeysTest {

    private static final String STACK = """
            %s
            devices:
              meta: { memory: 1MiB }
              data: { memory: 1MiB }
              meta2: { memory: 1MiB }
            mapped:
              pool: |
                0 2048 thin-pool meta data 128 0
              pool2: |
                0 2048 thin-pool meta2 data 128 0 1 no_space_timeout=3
            exports:
              pool: { device: pool }
            """;

    private static StackConfig parse(String top) throws ConfigException {
        return StackConfig.parse("t.yaml", STACK.formatted(top), Path.of("/base"));
    }

    @Test
    void defaultsAreSixtyAndThirtySeconds() throws ConfigException {
        StackConfig c = parse("");
        assertEquals(60_000_000_000L, c.noSpaceTimeoutNanos());
        assertEquals(30_000_000_000L, c.drainTimeoutNanos());
    }

    @Test
    void keysTakeDurationsAndZero() throws ConfigException {
        StackConfig c = parse("no-space-timeout: 0s\ndrain-timeout: 1500ms");
        assertEquals(0, c.noSpaceTimeoutNanos());
        assertEquals(1_500_000_000L, c.drainTimeoutNanos());
    }

    @Test
    void badValuesNameTheLineAndKey() {
        ConfigException e = assertThrows(ConfigException.class, () -> parse("drain-timeout: soon"));
        assertTrue(e.getMessage().startsWith("t.yaml:1: drain-timeout: 'soon' is not a duration"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> parse("no-space-timeout: 2d"));
        assertTrue(e.getMessage().startsWith("t.yaml:1: no-space-timeout: '2d'"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> parse("no-space-timeout: 90000s"));
        assertTrue(e.getMessage().contains("longer than 1 day"), e.getMessage());
    }

    // The file's default reaches a pool whose table line says nothing; a pool's own feature wins.
    @Test
    void theDefaultReachesPoolsWithoutTheirOwnFeature() throws Exception {
        StackConfig c = parse("no-space-timeout: 5s");
        try (TestKernel tk = new TestKernel("timeout-keys", 16L << 20, Policies.defaults(), Faults.NONE);
                Stack stack = Stack.build(tk.kernel, c, Stack.Mode.SERVE)) {
            assertEquals(5_000_000_000L, pool(stack, "pool").noSpaceTimeoutNanos());
            assertEquals(3_000_000_000L, pool(stack, "pool2").noSpaceTimeoutNanos());
        }
    }

    private static io.blkstack.dm.thin.Pool pool(Stack stack, String name) {
        MappedDevice md = (MappedDevice) stack.device(name);
        return ((ThinPoolTarget) md.table().target(0)).pool();
    }
}
