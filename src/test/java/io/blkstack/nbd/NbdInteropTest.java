package io.blkstack.nbd;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.Programs;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.NullDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Interop with the real NBD clients: nbdinfo, nbdcopy (libnbd), qemu-img and qemu-io. Each test
 * runs only when its program is installed (a JUnit assumption); {@code .ci/run} installs them all.
 * The server serves three exports from one kernel: a 64 MiB memory device ("mem"), a 64 MiB
 * memory device for copies ("copy"), and a read-only null device ("ro").
 */
class NbdInteropTest {

    private static final long MiB = 1L << 20;
    private static final long PROGRAM_SECONDS_MAX = 120;

    private TestKernel tk;
    private NbdServer server;
    private String base;

    @TempDir
    Path tmp;

    @BeforeEach
    void startServer() throws IOException {
        tk = new TestKernel("nbd-interop", 256 * MiB, Policies.defaults(), Faults.NONE);
        List<Export> exports = List.of(
                new Export("mem", new MemoryDevice(tk.kernel, "mem", 64 * MiB, 0), false, "a memory disk"),
                new Export("copy", new MemoryDevice(tk.kernel, "copy", 64 * MiB, 0), false, ""),
                new Export("ro", new NullDevice(tk.kernel, "null", 16 * MiB, 0), true, "read-only zeroes"));
        server = new NbdServer(tk.kernel, exports, new InetSocketAddress("127.0.0.1", 0));
        server.start();
        base = "nbd://127.0.0.1:" + server.localAddress().getPort();
    }

    @AfterEach
    void stopServer() {
        try {
            server.close();
        } finally {
            tk.close();
        }
    }

    private Path randomFile(String name, long bytes, long seed) throws IOException {
        byte[] data = new byte[(int) bytes];
        new Random(seed).nextBytes(data);
        Path file = tmp.resolve(name);
        Files.write(file, data);
        return file;
    }

    @Test
    void nbdinfoListsExportsAndDescribesOne() throws Exception {
        String list = run("nbdinfo", "--list", base);
        assertTrue(list.contains("mem") && list.contains("copy") && list.contains("ro"), list);
        assertTrue(list.contains("a memory disk"), list);
        String info = run("nbdinfo", base + "/mem");
        assertTrue(info.contains("export-size: " + 64 * MiB), info);
        assertTrue(info.contains("can_trim: true"), info);
        assertTrue(info.contains("can_fast_zero: true"), info);
        assertTrue(info.contains("can_multi_conn: true"), info);
        String ro = run("nbdinfo", base + "/ro");
        assertTrue(ro.contains("is_read_only: true"), ro);
        assertTrue(ro.contains("block_size_minimum: 1"), ro);
        assertTrue(ro.contains("block_size_preferred: 4096"), ro);
    }

    @Test
    void nbdinfoMapShowsHolesOfAMemoryDevice() throws Exception {
        run("qemu-io", "-f", "raw", base + "/mem", "-c", "write -P 0x5a 4M 1M");
        String map = run("nbdinfo", "--map", base + "/mem");
        List<String> lines = new ArrayList<>(map.lines().map(String::strip).filter(s -> !s.isEmpty()).toList());
        assertEquals(3, lines.size(), map);
        assertTrue(lines.get(0).matches("0\\s+4194304\\s+3\\s+hole,zero"), map);
        assertTrue(lines.get(1).matches("4194304\\s+1048576\\s+0\\s+data"), map);
        assertTrue(lines.get(2).matches("5242880\\s+61865984\\s+3\\s+hole,zero"), map);
    }

    @Test
    void nbdcopyInAndOutKeepsTheChecksum() throws Exception {
        Path in = randomFile("in.bin", 64 * MiB, 2);
        run("nbdcopy", in.toString(), base + "/copy");
        Path out = tmp.resolve("out.bin");
        run("nbdcopy", base + "/copy", out.toString());
        assertEquals(Programs.sha256(in), Programs.sha256(out));
    }

    @Test
    void qemuImgInfoConvertAndCompare() throws Exception {
        String info = run("qemu-img", "info", "-f", "raw", base + "/mem");
        assertTrue(info.contains("virtual size: 64 MiB"), info);
        Path in = randomFile("img.raw", 64 * MiB, 3);
        run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", in.toString(), base + "/mem");
        run("qemu-img", "compare", "-f", "raw", "-F", "raw", in.toString(), base + "/mem");
        Path back = tmp.resolve("back.raw");
        run("qemu-img", "convert", "-f", "raw", "-O", "raw", base + "/mem", back.toString());
        assertEquals(Programs.sha256(in), Programs.sha256(back));
    }

    /**
     * qemu-io writes of 1, 3 and 511 bytes at odd offsets (one crossing a sector boundary) over a
     * patterned base read back exactly, neighbours untouched. qemu sends them as they are, because
     * the server advertises a minimum block size of 1 (against a 512 minimum qemu pads them itself),
     * so the server's read-modify-write serves them: its counter shows it. Then two qemu-io
     * processes at once write neighbouring bytes of the same sectors, 200 writes each: each
     * read-modify-write is serialised in the server, so neither process's bytes are lost (two
     * clients padding for themselves could each write back the other's old bytes).
     */
    @Test
    void qemuIoSubSectorWritesAtOddOffsetsReadBackExactly() throws Exception {
        String mem = base + "/mem";
        long before = tk.kernel.counters().value("nbd.read-modify-writes");
        String out = run("qemu-io", "-f", "raw", mem,
                "-c", "write -P 0x11 0 64k",
                "-c", "write -P 0xa1 1 1",
                "-c", "write -P 0xa2 4097 3",
                "-c", "write -P 0xa3 8193 511",
                "-c", "write -P 0xa4 12799 3",
                "-c", "read -P 0x11 0 1",
                "-c", "read -P 0xa1 1 1",
                "-c", "read -P 0x11 2 4095",
                "-c", "read -P 0xa2 4097 3",
                "-c", "read -P 0x11 4100 4093",
                "-c", "read -P 0xa3 8193 511",
                "-c", "read -P 0x11 8704 4095",
                "-c", "read -P 0xa4 12799 3",
                "-c", "read -P 0x11 12802 52734");
        assertFalse(out.contains("Pattern verification failed"), out);
        assertFalse(out.toLowerCase().contains("error"), out);
        assertTrue(tk.kernel.counters().value("nbd.read-modify-writes") - before >= 4,
                "the sub-sector writes reached the server as they were");

        List<String> first = new ArrayList<>(List.of("qemu-io", "-f", "raw", mem));
        List<String> second = new ArrayList<>(List.of("qemu-io", "-f", "raw", mem));
        List<String> check = new ArrayList<>(List.of("qemu-io", "-f", "raw", mem));
        for (int i = 0; i < 200; i++) {
            long sector = 1 * MiB + 512L * i;
            first.addAll(List.of("-c", "write -P 0x5a " + (sector + 3) + " 101"));
            second.addAll(List.of("-c", "write -P 0xa5 " + (sector + 300) + " 7"));
            check.addAll(List.of("-c", "read -P 0x5a " + (sector + 3) + " 101", "-c",
                    "read -P 0xa5 " + (sector + 300) + " 7"));
        }
        assumeTrue(Programs.installed("qemu-io"));
        Process a = new ProcessBuilder(first).redirectErrorStream(true).redirectOutput(tmp.resolve("a.txt").toFile())
                .start();
        Process b = new ProcessBuilder(second).redirectErrorStream(true).redirectOutput(tmp.resolve("b.txt").toFile())
                .start();
        assertEquals(0, a.waitFor(), Files.readString(tmp.resolve("a.txt")));
        assertEquals(0, b.waitFor(), Files.readString(tmp.resolve("b.txt")));
        String verified = run(check.toArray(String[]::new));
        assertFalse(verified.contains("Pattern verification failed"), verified);
    }

    @Test
    void qemuIoWritesAndPatternVerifiedReads() throws Exception {
        String out = run("qemu-io", "-f", "raw", base + "/mem",
                "-c", "write -P 0xab 0 1M",
                "-c", "write -P 0xcd 3M 512k",
                "-c", "write -z 256k 64k",
                "-c", "flush",
                "-c", "read -P 0xab 0 256k",
                "-c", "read -P 0 256k 64k",
                "-c", "read -P 0xab 320k 704k",
                "-c", "read -P 0xcd 3M 512k",
                "-c", "discard 8M 1M",
                "-c", "read -P 0 8M 1M");
        assertFalse(out.contains("Pattern verification failed"), out);
        assertFalse(out.toLowerCase().contains("error"), out);
        // the read-only export refuses writes
        assumeTrue(Programs.installed("qemu-io"));
        Process p = new ProcessBuilder("qemu-io", "-f", "raw", base + "/ro", "-c", "write -P 1 0 4k")
                .redirectErrorStream(true).start();
        String text = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        p.waitFor();
        assertTrue(text.toLowerCase().contains("read-only") || text.toLowerCase().contains("permission")
                || text.toLowerCase().contains("not permitted"), text);
    }

    /** Runs a program in the test's directory, within the bound (skips the test if it is not installed). */
    private String run(String... command) throws Exception {
        assumeTrue(Programs.installed(command[0]), command[0] + " is not installed");
        return Programs.run(tmp, PROGRAM_SECONDS_MAX, command);
    }
}
