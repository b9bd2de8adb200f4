package io.blkstack.dm.thin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.Programs;
import io.blkstack.block.TestKernel;
import io.blkstack.cli.Main;
import io.blkstack.config.Stack;
import io.blkstack.config.StackConfig;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.nbd.NbdServer;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * A thin pool served over NBD to real clients, configured like {@code examples/thin.yaml} on
 * sparse temporary files: fio's nbd engine writes the first 64 MiB of a 1 GiB thin volume with
 * {@code verify=crc32c}; {@code nbdinfo --map} then shows that range as data and the rest as a
 * hole, and a snapshot taken at the first start as one hole; after the server stops,
 * {@code blkstack thin check} passes on the metadata file. Runs only when fio and nbdinfo are
 * installed (a JUnit assumption); {@code .ci/run} installs them.
 */
class ThinInteropTest {

    private static final long MiB = 1L << 20;
    private static final long PROGRAM_SECONDS_MAX = 120;
    /** One extent line of {@code nbdinfo --map}: offset, length, type, description. */
    private static final Pattern EXTENT = Pattern.compile("^\\s*(\\d+)\\s+(\\d+)\\s+(\\d+)\\s+(.*)$");

    private static final String YAML = """
            memory: 64MiB
            devices:
              meta: { file: thin-data/meta.img, size: 16MiB }
              data: { file: thin-data/data.img, size: 256MiB }
            mapped:
              pool: |
                0 524288 thin-pool meta data 128 16
              vol0: |
                0 2097152 thin pool 0
              vol0snap: |
                0 2097152 thin pool 1 snap_of=0
            exports:
              vol0: { device: vol0 }
              vol0snap: { device: vol0snap }
            """;

    @TempDir
    Path tmp;

    /** One extent reported by nbdinfo. */
    private record Extent(long offset, long length, int type, String description) {
        /** Whether nbdinfo flagged the extent as a hole (type bit 0). */
        boolean hole() {
            return (type & 1) != 0;
        }

        /** The byte after the extent. */
        long end() {
            return offset + length;
        }
    }

    @Test
    @Timeout(120)
    void fioVerifiesThroughAThinVolumeAndNbdinfoMapsHoles() throws Exception {
        assumeTrue(Programs.installed("fio"), "fio is not installed");
        assumeTrue(Programs.installed("nbdinfo"), "nbdinfo is not installed");
        Path file = tmp.resolve("thin.yaml");
        Files.writeString(file, YAML);
        StackConfig config = StackConfig.load(file);
        try (TestKernel tk = new TestKernel("thin-interop", config.memoryBytes(), Policies.defaults(), Faults.NONE);
                Stack stack = Stack.build(tk.kernel, config, Stack.Mode.SERVE)) {
            NbdServer server = new NbdServer(tk.kernel, stack.exports(), new InetSocketAddress("127.0.0.1", 0));
            try {
                server.start();
                String base = "nbd://127.0.0.1:" + server.localAddress().getPort() + "/";
                String out = run(Programs.fioVerify("thin-verify", base + "vol0", "4k", "64m"));
                assertTrue(out.contains("WRITE:"), out);
                assertFalse(out.toLowerCase().contains("verify: bad") || out.contains("crc32c: verify failed"), out);
                assertTrue(out.contains("err= 0"), "fio reported errors:\n" + out);

                List<Extent> vol0 = map(base + "vol0");
                assertCovers(vol0, 1L << 30);
                for (Extent e : vol0) {
                    if (e.offset() < 64 * MiB) {
                        assertFalse(e.hole(), "fio wrote every block of the first 64 MiB, yet " + e + " is a hole: " + vol0);
                    }
                }
                assertTrue(vol0.stream().anyMatch(e -> e.hole() && e.offset() <= 64 * MiB && e.end() > 64 * MiB),
                        "no hole right after the written 64 MiB: " + vol0);
                assertTrue(vol0.stream().anyMatch(e -> e.hole() && e.end() == 1L << 30),
                        "the unwritten tail is not a hole: " + vol0);

                System.out.println("thin interop: vol0 extents after fio " + vol0);
                List<Extent> snap = map(base + "vol0snap");
                assertCovers(snap, 1L << 30);
                assertTrue(snap.stream().allMatch(Extent::hole),
                        "the snapshot was taken before any write, so it is all hole: " + snap);
            } finally {
                server.close();
            }
            assertEquals(List.of(), stack.flushAll());
        }
        CommandLine cl = Main.commandLine();
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        cl.setOut(new PrintWriter(out));
        cl.setErr(new PrintWriter(err));
        int code = cl.execute("thin", "check", file.toString(), "--pool", "pool");
        assertEquals(0, code, "thin check after the fio run:\n" + out + err);
        assertTrue(out.toString().contains("thin metadata clean"), out.toString());
    }

    /** The extents {@code nbdinfo --map} reports for {@code uri}. */
    private List<Extent> map(String uri) throws Exception {
        String text = run("nbdinfo", "--map", uri);
        List<Extent> extents = new ArrayList<>();
        for (String line : text.split("\n")) {
            Matcher m = EXTENT.matcher(line);
            if (m.matches()) {
                extents.add(new Extent(Long.parseLong(m.group(1)), Long.parseLong(m.group(2)),
                        Integer.parseInt(m.group(3)), m.group(4).trim()));
            }
        }
        assertFalse(extents.isEmpty(), "nbdinfo --map printed no extents:\n" + text);
        return extents;
    }

    /** The extents tile [0, size) in order. */
    private static void assertCovers(List<Extent> extents, long size) {
        long at = 0;
        for (Extent e : extents) {
            assertEquals(at, e.offset(), "extents do not tile the export: " + extents);
            at = e.end();
        }
        assertEquals(size, at, "extents do not reach the end of the export: " + extents);
    }

    /** Runs a program in the test's directory, within the bound; see {@link Programs#run}. */
    private String run(String... command) throws Exception {
        return Programs.run(tmp, PROGRAM_SECONDS_MAX, command);
    }
}
