package io.blkstack.remote;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.io.IOException;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The remote device against real nbdkit servers on Unix sockets: data round trips through the
 * bio's own pages over several connections, FUA, FLUSH, TRIM and WRITE_ZEROES pass through; a
 * killed server turns requests into EIO after the timeout and marks the device failed, a restarted
 * one is reconnected and serves again; a server that never answers fails requests after the
 * timeout and the device still closes. Skipped when nbdkit is not installed.
 */
class RemoteDeviceTest {

    private static final long MiB = 1L << 20;
    private static final long SECOND_NANOS = 1_000_000_000L;

    @TempDir
    Path tmp;

    private final List<String> log = new ArrayList<>();

    private RemoteDevice.Options options(Nbdkit server, int connections, long timeoutNanos) {
        return RemoteDevice.Options.of(NbdUri.parse(server.uri())).withConnections(connections)
                .withTimeoutNanos(timeoutNanos).withLog(line -> {
                    synchronized (log) {
                        log.add(line);
                    }
                });
    }

    private static byte[] random(int bytes, long seed) {
        byte[] data = new byte[bytes];
        new Random(seed).nextBytes(data);
        return data;
    }

    /** Writes of every kind reach nbdkit's memory and read back through two connections. */
    @Test
    void dataFlushTrimAndZeroesPassThroughTwoConnections() throws Exception {
        assumeTrue(Nbdkit.installed(), "nbdkit is not installed");
        try (Nbdkit server = new Nbdkit(tmp.resolve("a.sock"), "memory", "64M").start();
                TestKernel tk = new TestKernel("remote", 32 * MiB, Policies.defaults(), Faults.NONE)) {
            RemoteDevice dev = RemoteDevice.open(tk.kernel, "r0", options(server, 2, 10 * SECOND_NANOS));
            BioSet set = new BioSet(tk.kernel, "test", 4, 4, null, false);
            try {
                assertEquals(64 * MiB, dev.capacityBytes());
                assertEquals(2, dev.connections(), "nbdkit's memory plugin allows multi-conn: " + log);
                assertTrue(dev.awaitConnected(10 * SECOND_NANOS), dev.describeState());
                byte[][] written = new byte[8][];
                for (int i = 0; i < written.length; i++) {
                    written[i] = random((int) MiB, i);
                    int flags = i % 2 == 0 ? BioFlags.FUA : 0;
                    assertEquals(BioStatus.OK, RemoteIo.write(set, dev, i * MiB + 512, written[i], flags));
                }
                assertEquals(BioStatus.OK, RemoteIo.range(set, dev, BioOp.FLUSH, 0, 0, 0));
                for (int i = 0; i < written.length; i++) {
                    byte[] back = new byte[(int) MiB];
                    assertEquals(BioStatus.OK, RemoteIo.read(set, dev, i * MiB + 512, back));
                    assertArrayEquals(written[i], back, "MiB " + i);
                }
                assertEquals(BioStatus.OK, RemoteIo.range(set, dev, BioOp.DISCARD, 512, 65536, 0));
                assertEquals(BioStatus.OK, RemoteIo.range(set, dev, BioOp.WRITE_ZEROES, MiB + 512, 65536, BioFlags.NOUNMAP));
                byte[] back = new byte[65536];
                assertEquals(BioStatus.OK, RemoteIo.read(set, dev, MiB + 512, back));
                assertArrayEquals(new byte[65536], back, "WRITE_ZEROES made zeros");
                assertEquals(BioStatus.OK, RemoteIo.read(set, dev, 512, back));
                assertArrayEquals(new byte[65536], back, "nbdkit's memory plugin reads a trimmed range as zeros");
                assertEquals(BioStatus.OK, RemoteIo.write(set, dev, 0, new byte[4096], BioFlags.PREFLUSH | BioFlags.FUA));
                assertEquals(0, dev.ioErrors(), dev.describeState());
            } finally {
                set.close();
                dev.close();
            }
        }
    }

    /**
     * A killed server: requests fail with EIO (after the timeout at the latest), the device reports
     * itself failed; once the server is back, a reconnect makes I/O work again; close is clean.
     */
    @Test
    void killedServerFailsWithEioAndARestartReconnects() throws Exception {
        assumeTrue(Nbdkit.installed(), "nbdkit is not installed");
        try (Nbdkit server = new Nbdkit(tmp.resolve("b.sock"), "memory", "16M").start();
                TestKernel tk = new TestKernel("remote", 16 * MiB, Policies.defaults(), Faults.NONE)) {
            RemoteDevice dev = RemoteDevice.open(tk.kernel, "r1", options(server, 1, SECOND_NANOS / 2));
            BioSet set = new BioSet(tk.kernel, "test", 4, 4, null, false);
            try {
                byte[] data = random(65536, 7);
                assertEquals(BioStatus.OK, RemoteIo.write(set, dev, 0, data, 0));
                server.kill();
                byte[] back = new byte[65536];
                assertEquals(BioStatus.IOERR, RemoteIo.read(set, dev, 0, back), dev.describeState());
                // The second read was submitted after the loss was seen, so its deadline is past
                // the device's own timeout: when it fails, the device has failed.
                assertEquals(BioStatus.IOERR, RemoteIo.read(set, dev, 0, back), dev.describeState());
                assertTrue(dev.isFailed(), dev.describeState());
                assertTrue(dev.describeState().contains("FAILED"), dev.describeState());
                assertEquals(BioStatus.IOERR, RemoteIo.write(set, dev, 0, data, 0), "a failed device refuses at once");

                server.start();
                assertTrue(dev.awaitConnected(30 * SECOND_NANOS), dev.describeState());
                assertFalse(dev.isFailed());
                assertEquals(BioStatus.OK, RemoteIo.write(set, dev, 4096, data, 0), dev.describeState());
                assertEquals(BioStatus.OK, RemoteIo.read(set, dev, 4096, back));
                assertArrayEquals(data, back);
                assertTrue(dev.reconnects() >= 1);
            } finally {
                set.close();
                dev.close();
            }
            assertTrue(tk.kernel.crashes().isEmpty(), tk.kernel.crashes().toString());
        }
    }

    /**
     * Proves the hole map is only trusted while a connection is up to the server that described
     * it: a region the server reported as a hole answers "hole"; once the server is gone and the
     * device failed, every range answers "allocated" (so a READ goes to the device and fails with
     * EIO, not zeros); and after a reconnect (to what may be another server) the map starts over,
     * so the first answer is "allocated" again. Before, a failed device answered hole READs with
     * zeros, and a replaced server's data read as zeros where the old one had holes (found by an
     * adversarial test).
     */
    @Test
    void theHoleMapIsForgottenWhenTheDeviceFailsAndWhenItReconnects() throws Exception {
        assumeTrue(Nbdkit.installed(), "nbdkit is not installed");
        try (Nbdkit server = new Nbdkit(tmp.resolve("h.sock"), "memory", "16M").start();
                TestKernel tk = new TestKernel("remote", 16 * MiB, Policies.defaults(), Faults.NONE)) {
            RemoteDevice dev = RemoteDevice.open(tk.kernel, "r9", options(server, 1, SECOND_NANOS / 2));
            BioSet set = new BioSet(tk.kernel, "test", 4, 4, null, false);
            try {
                assertTrue(dev.knowsAllocation());
                long sectors = 16 * MiB / 512;
                long deadline = System.nanoTime() + 30 * SECOND_NANOS;
                while (dev.allocatedExtent(0, sectors) != -sectors && System.nanoTime() < deadline) {
                    Thread.sleep(2); // each call queues a BLOCK_STATUS query for what is still unknown
                }
                assertEquals(-sectors, dev.allocatedExtent(0, sectors), "the empty export is one hole: " + dev.describeState());
                server.kill();
                byte[] back = new byte[4096];
                assertEquals(BioStatus.IOERR, RemoteIo.read(set, dev, 0, back), dev.describeState());
                assertEquals(BioStatus.IOERR, RemoteIo.read(set, dev, 0, back), dev.describeState());
                assertTrue(dev.isFailed(), dev.describeState());
                assertEquals(sectors, dev.allocatedExtent(0, sectors), "a failed device answers no holes");
                server.start();
                assertTrue(dev.awaitConnected(30 * SECOND_NANOS), dev.describeState());
                assertEquals(sectors, dev.allocatedExtent(0, sectors), "the reconnected device kept the old map");
            } finally {
                set.close();
                dev.close();
            }
        }
    }

    /** A server that delays every read past the timeout: the read fails with EIO and close still ends. */
    @Test
    void serverThatNeverAnswersFailsRequestsAndCloses() throws Exception {
        assumeTrue(Nbdkit.installed(), "nbdkit is not installed");
        try (Nbdkit server = new Nbdkit(tmp.resolve("c.sock"), "--filter=delay", "memory", "16M", "rdelay=3600")
                .start();
                TestKernel tk = new TestKernel("remote", 16 * MiB, Policies.defaults(), Faults.NONE)) {
            RemoteDevice dev = RemoteDevice.open(tk.kernel, "r2", options(server, 1, SECOND_NANOS / 2));
            BioSet set = new BioSet(tk.kernel, "test", 4, 4, null, false);
            try {
                byte[] back = new byte[4096];
                assertEquals(BioStatus.IOERR, RemoteIo.read(set, dev, 0, back), dev.describeState());
                assertTrue(dev.describeState().contains("timeouts"), dev.describeState());
            } finally {
                set.close();
                dev.close();
            }
        }
    }

    /**
     * Closing the device ends a request waiting for a server that never answers (timeout one hour,
     * so only the close can end it): the request fails with EIO and close returns.
     */
    @Test
    void closeEndsARequestWaitingForAServerThatNeverAnswers() throws Exception {
        assumeTrue(Nbdkit.installed(), "nbdkit is not installed");
        try (Nbdkit server = new Nbdkit(tmp.resolve("g.sock"), "--filter=delay", "memory", "16M", "rdelay=3600")
                .start();
                TestKernel tk = new TestKernel("remote", 16 * MiB, Policies.defaults(), Faults.NONE)) {
            RemoteDevice dev = RemoteDevice.open(tk.kernel, "r7", options(server, 1, 3600 * SECOND_NANOS));
            BioSet set = new BioSet(tk.kernel, "test", 4, 4, null, false);
            java.util.concurrent.atomic.AtomicReference<BioStatus> status = new java.util.concurrent.atomic.AtomicReference<>();
            io.blkstack.kernel.Task reader = tk.kernel.spawn("reader", io.blkstack.kernel.TaskKind.USER,
                    () -> status.set(RemoteIo.read(set, dev, 0, new byte[4096])));
            long deadline = System.nanoTime() + 30 * SECOND_NANOS;
            while (dev.inFlight() == 0 && System.nanoTime() < deadline) {
                Thread.sleep(1); // until the read holds its slot: a progress condition with a bound
            }
            assertEquals(1, dev.inFlight(), dev.describeState());
            dev.close();
            tk.kernel.scheduler().join(reader);
            assertEquals(BioStatus.IOERR, status.get());
            set.close();
        }
    }

    /** A server that accepts and never speaks: opening gives up after the timeout with a message. */
    @Test
    void silentServerFailsTheHandshakeAfterTheTimeout() throws Exception {
        Path socket = tmp.resolve("silent.sock");
        try (ServerSocketChannel listener = ServerSocketChannel.open(java.net.StandardProtocolFamily.UNIX);
                TestKernel tk = new TestKernel("remote", 16 * MiB, Policies.defaults(), Faults.NONE)) {
            listener.bind(UnixDomainSocketAddress.of(socket));
            NbdUri uri = NbdUri.parse("nbd+unix:///x?socket=" + socket);
            RemoteDevice.Options o = RemoteDevice.Options.of(uri).withTimeoutNanos(SECOND_NANOS / 4).withLog(l -> {
            });
            IOException e = assertThrows(IOException.class, () -> RemoteDevice.open(tk.kernel, "r3", o));
            assertTrue(e.getMessage().contains(uri.text()), e.getMessage());
            assertTrue(e.getMessage().contains("within the timeout of 250 ms"), e.getMessage());
            try (SocketChannel accepted = listener.accept()) {
                assertNotNull(accepted, "the client did connect");
            }
        }
    }

    /**
     * The server's block sizes become the device's limits: with nbdkit's blocksize-policy filter
     * refusing anything under 4 KiB alignment or over 64 KiB, a 1 MiB write and read still succeed
     * (split to 64 KiB commands, aligned), and the device's logical block size is 4 KiB.
     */
    @Test
    void requestsAreSplitToTheServersBlockSizes() throws Exception {
        assumeTrue(Nbdkit.installed(), "nbdkit is not installed");
        try (Nbdkit server = new Nbdkit(tmp.resolve("d.sock"), "--filter=blocksize-policy", "memory", "16M",
                "blocksize-minimum=4096", "blocksize-preferred=16384", "blocksize-maximum=65536",
                "blocksize-error-policy=error").start();
                TestKernel tk = new TestKernel("remote", 16 * MiB, Policies.defaults(), Faults.NONE)) {
            RemoteDevice dev = RemoteDevice.open(tk.kernel, "r4", options(server, 1, 10 * SECOND_NANOS));
            BioSet set = new BioSet(tk.kernel, "test", 4, 4, null, false);
            try {
                assertEquals(4096, dev.limits().logicalBlockSize());
                assertEquals(16384, dev.limits().physicalBlockSize());
                assertEquals(65536 / 512, dev.limits().maxSectors());
                byte[] data = random((int) MiB, 11);
                assertEquals(BioStatus.OK, RemoteIo.write(set, dev, 3 * 4096, data, 0), dev.describeState());
                byte[] back = new byte[(int) MiB];
                assertEquals(BioStatus.OK, RemoteIo.read(set, dev, 3 * 4096, back));
                assertArrayEquals(data, back);
            } finally {
                set.close();
                dev.close();
            }
        }
    }

    /**
     * What the server lacks: without multi-conn the device uses one connection and says so; without
     * WRITE_ZEROES a WRITE_ZEROES bio becomes a write of zeros.
     */
    @Test
    void withoutMultiConnOrWriteZeroesTheDeviceFallsBack() throws Exception {
        assumeTrue(Nbdkit.installed(), "nbdkit is not installed");
        try (Nbdkit server = new Nbdkit(tmp.resolve("e.sock"), "--filter=multi-conn", "--filter=nozero", "memory",
                "16M", "multi-conn-mode=disable").start();
                TestKernel tk = new TestKernel("remote", 16 * MiB, Policies.defaults(), Faults.NONE)) {
            RemoteDevice dev = RemoteDevice.open(tk.kernel, "r5", options(server, 4, 10 * SECOND_NANOS));
            BioSet set = new BioSet(tk.kernel, "test", 4, 4, null, false);
            try {
                assertEquals(1, dev.connections());
                assertTrue(log.stream().anyMatch(l -> l.contains("does not allow multi-conn")), log.toString());
                assertFalse(dev.exportInfo().has(io.blkstack.nbd.NbdProtocol.FLAG_SEND_WRITE_ZEROES));
                byte[] data = random(262144, 3);
                assertEquals(BioStatus.OK, RemoteIo.write(set, dev, 0, data, 0));
                assertEquals(BioStatus.OK, RemoteIo.range(set, dev, BioOp.WRITE_ZEROES, 4096, 131072, 0));
                byte[] back = new byte[262144];
                assertEquals(BioStatus.OK, RemoteIo.read(set, dev, 0, back));
                Arrays.fill(data, 4096, 4096 + 131072, (byte) 0);
                assertArrayEquals(data, back, "zeros were written where WRITE_ZEROES asked, nothing else");
            } finally {
                set.close();
                dev.close();
            }
        }
    }

    /**
     * FLUSH and FUA reach the server honestly (nbdkit's log filter records each command with its
     * connection): a FLUSH bio over two connections is one flush on each of them, and a FUA write
     * carries the FUA flag.
     */
    @Test
    void aFlushGoesOnEveryConnectionAndFuaPassesThrough() throws Exception {
        assumeTrue(Nbdkit.installed(), "nbdkit is not installed");
        Path logFile = tmp.resolve("nbdkit.log");
        try (Nbdkit server = new Nbdkit(tmp.resolve("f.sock"), "--filter=log", "memory", "16M",
                "logfile=" + logFile).start();
                TestKernel tk = new TestKernel("remote", 16 * MiB, Policies.defaults(), Faults.NONE)) {
            RemoteDevice dev = RemoteDevice.open(tk.kernel, "r6", options(server, 2, 10 * SECOND_NANOS));
            BioSet set = new BioSet(tk.kernel, "test", 4, 4, null, false);
            try {
                assertTrue(dev.awaitConnected(10 * SECOND_NANOS), dev.describeState());
                assertEquals(BioStatus.OK, RemoteIo.write(set, dev, 0, random(4096, 1), BioFlags.FUA));
                assertEquals(BioStatus.OK, RemoteIo.range(set, dev, BioOp.FLUSH, 0, 0, 0));
            } finally {
                set.close();
                dev.close();
            }
            List<String> lines = java.nio.file.Files.readAllLines(logFile);
            List<String> flushes = lines.stream().filter(l -> l.contains(" Flush id=") && l.endsWith("...")).toList();
            assertEquals(2, flushes.size(), String.join("\n", lines));
            assertNotEquals(flushes.get(0).replaceAll(".*connection=(\\d+).*", "$1"),
                    flushes.get(1).replaceAll(".*connection=(\\d+).*", "$1"), String.join("\n", flushes));
            assertTrue(lines.stream().anyMatch(l -> l.contains("Write") && l.contains("fua=1")), String.join("\n", lines));
        }
    }

    /** URIs: TCP with the default port, Unix sockets, the TLS schemes, bad ones refused. */
    @Test
    void urisParseWithAndWithoutTls() {
        NbdUri tcp = NbdUri.parse("nbd://example.org/disk");
        assertEquals("disk", tcp.exportName());
        assertTrue(tcp.address().toString().contains("10809"), tcp.address().toString());
        NbdUri unix = NbdUri.parse("nbd+unix:///e?socket=/tmp/x.sock");
        assertEquals("e", unix.exportName());
        assertEquals(UnixDomainSocketAddress.of("/tmp/x.sock"), unix.address());
        assertEquals("", NbdUri.parse("nbd://h:1").exportName());
        assertFalse(tcp.tls() || unix.tls());
        NbdUri tls = NbdUri.parse("nbds://h/e");
        assertTrue(tls.tls());
        assertEquals("e", tls.exportName());
        assertTrue(tls.address().toString().contains("10809"), tls.address().toString());
        NbdUri unixTls = NbdUri.parse("nbds+unix:///e?socket=/tmp/x.sock");
        assertTrue(unixTls.tls());
        assertEquals(UnixDomainSocketAddress.of("/tmp/x.sock"), unixTls.address());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> NbdUri.parse("nbds+unix:///e"));
        assertTrue(e.getMessage().contains("nbds+unix:///export?socket=PATH"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> NbdUri.parse("nbd+unix:///e"));
        assertThrows(IllegalArgumentException.class, () -> NbdUri.parse("http://h/e"));
        assertFalse(Arrays.asList(tcp, unix).contains(null));
    }
}
