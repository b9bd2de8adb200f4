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
            try (SocketChannel accepted = listener.accept()) {
                assertNotNull(accepted, "the client did connect");
            }
        }
    }

    /** URIs: TCP with the default port, Unix sockets, TLS refused with a clear message. */
    @Test
    void urisParseAndTlsIsRefused() {
        NbdUri tcp = NbdUri.parse("nbd://example.org/disk");
        assertEquals("disk", tcp.exportName());
        assertTrue(tcp.address().toString().contains("10809"), tcp.address().toString());
        NbdUri unix = NbdUri.parse("nbd+unix:///e?socket=/tmp/x.sock");
        assertEquals("e", unix.exportName());
        assertEquals(UnixDomainSocketAddress.of("/tmp/x.sock"), unix.address());
        assertEquals("", NbdUri.parse("nbd://h:1").exportName());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> NbdUri.parse("nbds://h/e"));
        assertTrue(e.getMessage().contains("not supported yet"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> NbdUri.parse("nbd+unix:///e"));
        assertThrows(IllegalArgumentException.class, () -> NbdUri.parse("http://h/e"));
        assertFalse(Arrays.asList(tcp, unix).contains(null));
    }
}
