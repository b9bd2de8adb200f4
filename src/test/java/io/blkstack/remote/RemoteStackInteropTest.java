package io.blkstack.remote;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.Programs;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.config.ServedStack;
import io.blkstack.config.StackConfig;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.StatusForm;
import io.blkstack.dm.mirror.MirrorTarget;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.nbd.Export;
import io.blkstack.nbd.NbdServer;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Stacks over remote devices served by nbdkit {@code memory} servers, exported by blkstack's own
 * NBD server and written by fio's nbd engine with {@code verify=crc32c}: linear and striped over
 * two remote devices; and a mirror over two remote devices with one nbdkit killed in the middle of
 * the run, which must end with no verify error, the dead leg marked failed, and, once the server is
 * back, a recover that makes both legs equal again. Skipped when nbdkit or fio is missing.
 */
class RemoteStackInteropTest {

    private static final long MiB = 1L << 20;
    private static final long PROGRAM_SECONDS_MAX = 180;
    private static final long SECOND_NANOS = 1_000_000_000L;

    @TempDir
    Path tmp;

    /** fio through a linear part over one remote device and a striped part over two. */
    @Test
    void fioVerifiesThroughLinearAndStripedOverTwoRemotes() throws Exception {
        assumeTrue(Nbdkit.installed() && Programs.installed("fio"), "nbdkit or fio is not installed");
        try (Nbdkit a = new Nbdkit(tmp.resolve("a.sock"), "memory", "64M").start();
                Nbdkit b = new Nbdkit(tmp.resolve("b.sock"), "memory", "64M").start()) {
            String yaml = """
                    memory: 64MiB
                    devices:
                      r0: { nbd: "%s", connections: 2, timeout: 10s }
                      r1: { nbd: "%s", timeout: 10s }
                    mapped:
                      stripe0: |
                        0 131072 striped 2 128 r0 32768 r1 0
                      default: |
                        0     32768  linear r0 0
                        32768 131072 linear stripe0 0
                    exports:
                      default: { device: default }
                    """.formatted(a.uri(), b.uri());
            serve(yaml, (port, stack) -> {
                String out = run(Programs.fioVerify("verify", "nbd://127.0.0.1:" + port + "/default", "4k", "80m"));
                assertTrue(out.contains("err= 0"), "fio reported errors:\n" + out);
                assertFalse(out.contains("verify: bad") || out.contains("crc32c: verify failed"), out);
                report("linear+striped over 2 nbdkit", out);
                RemoteDevice r0 = (RemoteDevice) stack.device("r0");
                assertEquals(2, r0.connections(), r0.describeState());
                assertEquals(0, r0.ioErrors(), r0.describeState());
            });
        }
    }

    /**
     * The same over two remote devices exported by blkstack's own NBD server (memory devices in a
     * second kernel, over TCP): blkstack as both the storage servers and the stack above them.
     */
    @Test
    void fioVerifiesThroughStripedOverTwoBlkstackServers() throws Exception {
        assumeTrue(Programs.installed("fio"), "fio is not installed");
        MemoryDevice[] storage = new MemoryDevice[2];
        serve(kernel -> {
            // The storage side: two memory devices exported by a blkstack NBD server in the same kernel.
            storage[0] = new MemoryDevice(kernel, "d0", 64 * MiB, 0);
            storage[1] = new MemoryDevice(kernel, "d1", 64 * MiB, 0);
            NbdServer servers = new NbdServer(kernel, List.of(new Export("d0", storage[0], false, ""),
                    new Export("d1", storage[1], false, "")), new InetSocketAddress("127.0.0.1", 0));
            servers.start();
            int storagePort = servers.localAddress().getPort();
            return """
                    memory: 128MiB
                    devices:
                      r0: { nbd: "nbd://127.0.0.1:%d/d0", connections: 2, timeout: 10s }
                      r1: { nbd: "nbd://127.0.0.1:%d/d1", connections: 2, timeout: 10s }
                    mapped:
                      default: |
                        0 262144 striped 2 128 r0 0 r1 0
                    exports:
                      default: { device: default }
                    """.formatted(storagePort, storagePort);
        }, (port, stack) -> {
            String out = run(Programs.fioVerify("verify", "nbd://127.0.0.1:" + port + "/default", "64k", "128m"));
            assertTrue(out.contains("err= 0"), "fio reported errors:\n" + out);
            assertFalse(out.contains("verify: bad") || out.contains("crc32c: verify failed"), out);
            report("striped over 2 blkstack servers", out);
            RemoteDevice r0 = (RemoteDevice) stack.device("r0");
            assertTrue(r0.knowsAllocation(), "blkstack's server offers base:allocation");
            assertEquals(2, r0.connections(), r0.describeState());
            assertEquals(0, r0.ioErrors(), r0.describeState());
            assertTrue(storage[0].allocatedChunks() > 0 && storage[1].allocatedChunks() > 0,
                    "both storage devices were written");
        });
    }

    /**
     * A mirror over two remote devices; one nbdkit is killed while fio writes: fio ends with no
     * error and no verify failure, the leg shows D; the server restarts (empty), the device
     * reconnects, {@code message recover} rebuilds the leg, and the legs read back equal.
     */
    @Test
    void mirrorOverTwoRemotesSurvivesAKilledServerAndRecovers() throws Exception {
        assumeTrue(Nbdkit.installed() && Programs.installed("fio"), "nbdkit or fio is not installed");
        try (Nbdkit a = new Nbdkit(tmp.resolve("a.sock"), "memory", "32M").start();
                Nbdkit b = new Nbdkit(tmp.resolve("b.sock"), "memory", "32M").start()) {
            String yaml = """
                    memory: 64MiB
                    devices:
                      r0: { nbd: "%s", timeout: 2s }
                      r1: { nbd: "%s", timeout: 2s }
                    mapped:
                      m0: |
                        0 65536 mirror core 1 1024 2 r0 0 r1 0 1 handle_errors
                    exports:
                      default: { device: m0 }
                    """.formatted(a.uri(), b.uri());
            serve(yaml, (port, stack) -> {
                RemoteDevice r1 = (RemoteDevice) stack.device("r1");
                Path log = tmp.resolve("fio.txt");
                Process fio = new ProcessBuilder(Programs.fioVerify("verify", "nbd://127.0.0.1:" + port + "/default", "4k", "32m"))
                        .redirectErrorStream(true).redirectOutput(log.toFile()).start();
                // Kill leg r1's server once it has served part of the run: a progress condition
                // checked against a bound, not a timing assumption.
                long deadline = System.nanoTime() + PROGRAM_SECONDS_MAX * SECOND_NANOS;
                while (r1.completedBios() < 1000 && fio.isAlive() && System.nanoTime() < deadline) {
                    Thread.sleep(5);
                }
                assertTrue(fio.isAlive(), "fio still runs when the server is killed:\n" + Files.readString(log));
                b.kill();
                boolean ended = fio.waitFor(PROGRAM_SECONDS_MAX, TimeUnit.SECONDS);
                String out = Files.readString(log, StandardCharsets.UTF_8);
                assertTrue(ended, "fio ran over " + PROGRAM_SECONDS_MAX + " s:\n" + out);
                assertEquals(0, fio.exitValue(), out);
                assertTrue(out.contains("err= 0"), "fio reported errors:\n" + out);
                assertFalse(out.contains("verify: bad") || out.contains("crc32c: verify failed"), out);
                MappedDevice m0 = (MappedDevice) stack.device("m0");
                MirrorTarget mirror = (MirrorTarget) m0.table().target(0);
                assertTrue(mirror.isLegHealthy(0));
                assertFalse(mirror.isLegHealthy(1), String.join("\n", m0.status(StatusForm.INFO)));
                assertTrue(String.join(" ", m0.status(StatusForm.INFO)).contains(" AD "),
                        String.join("\n", m0.status(StatusForm.INFO)));

                b.start();
                assertTrue(r1.awaitConnected(30 * SECOND_NANOS), r1.describeState());
                m0.message(0, "recover");
                long rebuildDeadline = System.nanoTime() + PROGRAM_SECONDS_MAX * SECOND_NANOS;
                while ((mirror.isRebuilding() || !mirror.isLegHealthy(1)) && System.nanoTime() < rebuildDeadline) {
                    Thread.sleep(10);
                }
                assertTrue(mirror.isLegHealthy(1), String.join("\n", m0.status(StatusForm.INFO)) + "\n" + r1.describeState());
                assertLegsEqual(stack.device("r0"), r1, 32 * MiB);
            });
        }
    }

    /**
     * {@code base:allocation} passes up: once the device has learned the export's map (a bounded
     * wait on its own progress), {@code nbdinfo --map} through blkstack and a linear target shows
     * the same extents as against nbdkit directly.
     */
    @Test
    void blockStatusOfTheRemoteExportPassesUpThroughLinear() throws Exception {
        assumeTrue(Nbdkit.installed() && Programs.installed("nbdinfo"), "nbdkit or nbdinfo is not installed");
        try (Nbdkit a = new Nbdkit(tmp.resolve("a.sock"), "memory", "16M").start()) {
            String yaml = """
                    memory: 64MiB
                    devices:
                      r0: { nbd: "%s" }
                    mapped:
                      lin: |
                        0 32768 linear r0 0
                    exports:
                      default: { device: lin }
                    """.formatted(a.uri());
            serve(yaml, (port, stack) -> {
                RemoteDevice r0 = (RemoteDevice) stack.device("r0");
                assertTrue(r0.knowsAllocation());
                BioSet set = new BioSet(r0.kernel(), "write", 4, 4, null, false);
                try {
                    byte[] data = new byte[(int) MiB];
                    java.util.Arrays.fill(data, (byte) 7);
                    assertEquals(BioStatus.OK, RemoteIo.write(set, r0, 8 * MiB, data, 0));
                } finally {
                    set.close();
                }
                long sectors = 16 * MiB / 512;
                long deadline = System.nanoTime() + 30 * SECOND_NANOS;
                while (!(r0.allocatedExtent(0, sectors) == -(8 * MiB / 512)
                        && r0.allocatedExtent(8 * MiB / 512, sectors) == MiB / 512
                        && r0.allocatedExtent(9 * MiB / 512, sectors) == -(7 * MiB / 512))
                        && System.nanoTime() < deadline) {
                    Thread.sleep(2); // each call queues a query for what is still unknown
                }
                assertEquals(-(8 * MiB / 512), r0.allocatedExtent(0, sectors), r0.describeState());
                assertEquals(MiB / 512, r0.allocatedExtent(8 * MiB / 512, sectors));
                String ours = run("nbdinfo", "--map", "nbd://127.0.0.1:" + port + "/default");
                String theirs = run("nbdinfo", "--map", a.uri());
                assertEquals(theirs, ours, "blkstack maps the remote export as nbdkit does");
                assertTrue(ours.contains("data") && ours.contains("hole"), ours);
            });
        }
    }

    /** Prints fio's bandwidth summary lines (for the record; nothing is asserted on them). */
    private static void report(String what, String fioOutput) {
        fioOutput.lines().filter(l -> l.trim().startsWith("READ:") || l.trim().startsWith("WRITE:"))
                .forEach(l -> System.out.println(what + ": " + l.trim()));
    }

    /** Reads both devices MiB by MiB and compares. */
    private static void assertLegsEqual(BlockDevice a, BlockDevice b, long bytes) {
        BioSet set = new BioSet(a.kernel(), "compare", 4, 4, null, false);
        try {
            byte[] x = new byte[(int) MiB];
            byte[] y = new byte[(int) MiB];
            for (long at = 0; at < bytes; at += MiB) {
                assertEquals(BioStatus.OK, RemoteIo.read(set, a, at, x));
                assertEquals(BioStatus.OK, RemoteIo.read(set, b, at, y));
                assertArrayEquals(x, y, "legs differ in the MiB at " + at);
            }
        } finally {
            set.close();
        }
    }

    /** Makes the configuration once the kernel exists (to start servers in it first). */
    @FunctionalInterface
    interface Setup {
        String yaml(io.blkstack.kernel.Kernel kernel) throws Exception;
    }

    /** Builds the stack, serves it on an ephemeral port, runs the client, tears everything down. */
    private void serve(String yaml, ServedStack.Client client) throws Exception {
        serve(kernel -> yaml, client);
    }

    private void serve(Setup setup, ServedStack.Client client) throws Exception {
        try (TestKernel tk = new TestKernel("remote-interop", 128 * MiB, Policies.defaults(), Faults.NONE)) {
            Path file = tmp.resolve("stack.yaml");
            Files.writeString(file, setup.yaml(tk.kernel));
            ServedStack.serve(tk, StackConfig.load(file), client);
        }
    }

    /** Runs a program in the test's directory, within the bound; see {@link Programs#run}. */
    private String run(String... command) throws Exception {
        return Programs.run(tmp, PROGRAM_SECONDS_MAX, command);
    }
}
