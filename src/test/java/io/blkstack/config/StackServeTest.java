package io.blkstack.config;

import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.nbd.NbdServer;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A full configuration builds a running stack that serves: files created sparse, a striped device
 * over a file and a memory device, a linear slice of it, exports read-write and read-only, all
 * through the real NBD server on an ephemeral port. Data written through one export reads back
 * through it and, where the slice overlaps, through the other; a flush reaches every device.
 */
class StackServeTest {

    private static final long MiB = 1L << 20;
    /** The NBD error a write on a read-only export gets (EPERM). */
    private static final int NBD_EPERM = 1;

    @TempDir
    Path tmp;

    @Test
    void fullConfigBuildsAndServes() throws Exception {
        Path file = tmp.resolve("stack.yaml");
        Files.writeString(file, """
                memory: 32MiB
                devices:
                  a: { file: data/a.img, size: 8MiB }
                  m: { memory: 8MiB }
                mapped:
                  stripe0: |
                    0 32768 striped 2 16 a 0 m 0
                  upper: |
                    0 16384 linear stripe0 16384
                exports:
                  default: { device: stripe0, description: "striped" }
                  upper: { device: upper, readonly: true }
                """);
        StackConfig config = StackConfig.load(file);
        try (TestKernel tk = new TestKernel("stack-serve", config.memoryBytes(), Policies.defaults(), Faults.NONE);
                Stack stack = Stack.build(tk.kernel, config, Stack.Mode.SERVE)) {
            assertEquals(8 * MiB, Files.size(tmp.resolve("data/a.img")), "backing file created at its size");
            NbdServer server = new NbdServer(tk.kernel, stack.exports(), new InetSocketAddress("127.0.0.1", 0));
            try {
                server.start();
                InetSocketAddress at = server.localAddress();
                byte[] data = new byte[64 * 1024 + 4096];
                new Random(7).nextBytes(data);
                long offset = 8 * MiB + 4096; // in the upper half, crossing several 8 KiB chunks
                try (MiniNbdClient c = new MiniNbdClient(at, "default")) {
                    assertEquals(16 * MiB, c.sizeBytes);
                    assertEquals(0, c.write(offset, data));
                    assertEquals(0, c.flush());
                    assertArrayEquals(data, c.read(offset, data.length));
                }
                try (MiniNbdClient c = new MiniNbdClient(at, "upper")) {
                    assertEquals(8 * MiB, c.sizeBytes);
                    assertNotEquals(0, c.transmissionFlags & MiniNbdClient.FLAG_READ_ONLY);
                    assertArrayEquals(data, c.read(4096, data.length), "the slice sees the stripe's data");
                    assertEquals(NBD_EPERM, c.write(0, new byte[4096]));
                }
            } finally {
                server.close();
            }
            assertEquals(java.util.List.of(), stack.flushAll());
        }
        byte[] onDisk = Files.readAllBytes(tmp.resolve("data/a.img"));
        assertTrue(containsNonZero(onDisk), "half the chunks went to the file");
    }

    private static boolean containsNonZero(byte[] bytes) {
        for (byte b : bytes) {
            if (b != 0) {
                return true;
            }
        }
        return false;
    }
}
