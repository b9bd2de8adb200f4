package io.blkstack.config;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.Programs;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.HexFormat;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Configured stacks against real clients: fio's nbd engine writes with {@code verify=crc32c}
 * through a stack of linear and striped targets, and nbdcopy copies 256 MiB of random data in
 * and out of a striped-over-sparse-files stack like the default one, with matching checksums.
 * Each test runs only when its program is installed (a JUnit assumption); {@code .ci/run}
 * installs them.
 */
class ConfigInteropTest {

    private static final long MiB = 1L << 20;
    /** Bound on each external program's run. */
    private static final long PROGRAM_SECONDS_MAX = 120;

    @TempDir
    Path tmp;

    /** fio, random 4 KiB writes at depth 16 over a linear part and a striped part, verified. */
    @Test
    void fioVerifiesThroughLinearAndStriped() throws Exception {
        assumeTrue(Programs.installed("fio"), "fio is not installed");
        String yaml = """
                memory: 64MiB
                devices:
                  m1: { memory: 32MiB }
                  m2: { memory: 32MiB }
                  m3: { memory: 32MiB }
                mapped:
                  stripe0: |
                    0 131072 striped 2 128 m2 0 m3 0
                  default: |
                    0     65536  linear m1 0
                    65536 131072 linear stripe0 0
                exports:
                  default: { device: default }
                """;
        serve(yaml, (port, unused) -> {
            String out = run(Programs.fioVerify("verify", "nbd://127.0.0.1:" + port + "/default", "4k", "64m"));
            assertTrue(out.contains("WRITE:"), out);
            assertFalse(out.toLowerCase().contains("verify: bad") || out.contains("crc32c: verify failed"), out);
            assertTrue(out.contains("err= 0"), "fio reported errors:\n" + out);
        });
    }

    /**
     * fio over a linear-over-file export, 1 MiB sequential writes then reads with
     * {@code verify=crc32c}: the reads go by reference (issue 16: sendfile from the file, held in
     * flight until sent), and every block verifies; the kernel's counter shows references were used.
     */
    @Test
    void fioVerifiesReadsByReferenceThroughLinearOverAFile() throws Exception {
        assumeTrue(Programs.installed("fio"), "fio is not installed");
        String yaml = """
                memory: 64MiB
                devices:
                  a: { file: data/a.img, size: 64MiB }
                mapped:
                  default: |
                    0 131072 linear a 0
                exports:
                  default: { device: default }
                """;
        serve(yaml, (port, stack) -> {
            String out = run("fio", "--name=verify", "--ioengine=nbd", "--uri=nbd://127.0.0.1:" + port + "/default",
                    "--rw=write", "--bs=1m", "--size=64m", "--verify=crc32c", "--iodepth=8", "--do_verify=1",
                    "--verify_fatal=1");
            assertFalse(out.toLowerCase().contains("verify: bad") || out.contains("crc32c: verify failed"), out);
            assertTrue(out.contains("err= 0"), "fio reported errors:\n" + out);
            long held = stack.exports().get(0).device().kernel().counters().value("file.read-references");
            assertTrue(held >= 64, "the verifying reads were not sent by reference: " + held + " held");
        });
    }

    /** nbdcopy of 256 MiB of random data into a default-like stack and back out, checksums equal. */
    @Test
    void nbdcopyRoundTripThroughStripedFiles() throws Exception {
        assumeTrue(Programs.installed("nbdcopy"), "nbdcopy is not installed");
        String yaml = """
                memory: 64MiB
                devices:
                  a: { file: data/a.img, size: 128MiB }
                  b: { file: data/b.img, size: 128MiB }
                mapped:
                  stripe0: |
                    0 524288 striped 2 128 a 0 b 0
                exports:
                  default: { device: stripe0 }
                """;
        Path in = tmp.resolve("in.bin");
        Path out = tmp.resolve("out.bin");
        String inSum = writeRandom(in, 256 * MiB);
        serve(yaml, (port, stack) -> {
            String uri = "nbd://127.0.0.1:" + port + "/default";
            run("nbdcopy", in.toString(), uri);
            run("nbdcopy", uri, out.toString());
        });
        assertEquals(256 * MiB, Files.size(out));
        assertEquals(inSum, Programs.sha256(out), "data read back through the stack differs from what was written");
        assertTrue(Files.size(tmp.resolve("data/a.img")) == 128 * MiB, "backing file keeps its size");
    }

    /**
     * A sparse file under a linear target maps over NBD as nbdkit's file plugin maps the same file
     * ({@code nbdinfo --map}: hole where nothing was written, data at the three extents qemu-io
     * wrote), and a TRIM of whole blocks punches a hole: the range maps as a hole and the file's
     * allocated blocks shrink while its size stays.
     */
    @Test
    void sparseFileHolesMapLikeNbdkitAndDiscardsGiveSpaceBack() throws Exception {
        assumeTrue(Programs.installed("nbdinfo") && Programs.installed("qemu-io") && Programs.installed("nbdkit") && Programs.installed("stat"),
                "nbdinfo, qemu-io, nbdkit or stat is not installed");
        String yaml = """
                memory: 64MiB
                devices:
                  a: { file: data/a.img, size: 16MiB }
                mapped:
                  lin: |
                    0 32768 linear a 0
                exports:
                  default: { device: lin }
                """;
        Path image = tmp.resolve("data/a.img");
        String[] maps = new String[2];
        long[] blocks = new long[2];
        serve(yaml, (port, stack) -> {
            String uri = "nbd://127.0.0.1:" + port + "/default";
            run("qemu-io", "-f", "raw", uri, "-c", "write -P 90 1M 1M", "-c", "write -P 91 4M 2M",
                    "-c", "write -P 92 12M 512k");
            maps[0] = run("nbdinfo", "--map", uri);
            blocks[0] = allocatedBlocks(image);
            run("qemu-io", "-f", "raw", uri, "-c", "discard 4M 1M");
            maps[1] = run("nbdinfo", "--map", uri);
            blocks[1] = allocatedBlocks(image);
        });
        assertEquals(List.of("0 1048576 3 hole,zero", "1048576 1048576 0 data", "2097152 2097152 3 hole,zero",
                "4194304 2097152 0 data", "6291456 6291456 3 hole,zero", "12582912 524288 0 data",
                "13107200 3670016 3 hole,zero"), lines(maps[0]), maps[0]);
        assertEquals(List.of("0 1048576 3 hole,zero", "1048576 1048576 0 data", "2097152 3145728 3 hole,zero",
                "5242880 1048576 0 data", "6291456 6291456 3 hole,zero", "12582912 524288 0 data",
                "13107200 3670016 3 hole,zero"), lines(maps[1]), maps[1]);
        assertTrue(blocks[1] < blocks[0], "the discard gave space back: " + blocks[0] + " -> " + blocks[1] + " blocks");
        assertEquals(16 * MiB, Files.size(image), "punching keeps the file's size");
        String nbdkit = run("nbdkit", "-U", "-", "file", image.toString(), "--run", "nbdinfo --map \"$uri\"");
        assertEquals(maps[1], nbdkit, "nbdkit's file plugin maps the same file the same way");
    }

    private static List<String> lines(String map) {
        return map.lines().map(l -> l.trim().replaceAll("\\s+", " ")).toList();
    }

    /** The file's allocated 512-byte blocks, from stat(1). */
    private long allocatedBlocks(Path file) throws Exception {
        return Long.parseLong(run("stat", "-c", "%b", file.toString()).trim());
    }

    /** Builds {@code yaml}'s stack, serves it on an ephemeral port, runs the client, tears down. */
    private void serve(String yaml, ServedStack.Client client) throws Exception {
        Path file = tmp.resolve("stack.yaml");
        Files.writeString(file, yaml);
        StackConfig config = StackConfig.load(file);
        try (TestKernel tk = new TestKernel("config-interop", config.memoryBytes(), Policies.defaults(), Faults.NONE)) {
            ServedStack.serve(tk, config, client);
        }
    }

    /** Writes {@code bytes} of seeded random data to {@code file}; returns its SHA-256. */
    private static String writeRandom(Path file, long bytes) throws Exception {
        MessageDigest sha = MessageDigest.getInstance("SHA-256");
        Random random = new Random(42);
        byte[] block = new byte[(int) MiB];
        try (OutputStream o = Files.newOutputStream(file)) {
            for (long done = 0; done < bytes; done += block.length) {
                random.nextBytes(block);
                sha.update(block);
                o.write(block);
            }
        }
        return HexFormat.of().formatHex(sha.digest());
    }

    /** Runs a program in the test's directory, within the bound; see {@link Programs#run}. */
    private String run(String... command) throws Exception {
        return Programs.run(tmp, PROGRAM_SECONDS_MAX, command);
    }
}
