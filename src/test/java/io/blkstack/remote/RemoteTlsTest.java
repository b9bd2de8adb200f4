package io.blkstack.remote;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.TestPki;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.config.Stack;
import io.blkstack.config.StackConfig;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.nbd.Export;
import io.blkstack.nbd.NbdServer;
import io.blkstack.nbd.ServerTls;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CopyOnWriteArrayList;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Remote devices over TLS ({@code nbds://}, {@code nbds+unix://}): against blkstack's own TLS
 * server (in this kernel) and against {@code nbdkit --tls=require}, with certificates made at test
 * time ({@link TestPki}); a server whose certificate the given CA did not sign, or that names
 * another host, or that wants a client certificate the device does not have, is refused with a
 * message that says which. Skipped without openssl (and the nbdkit test without nbdkit).
 */
class RemoteTlsTest {

    private static final long MiB = 1L << 20;
    private static final long SECOND_NANOS = 1_000_000_000L;
    /** The server's handshake bound: generous, a loaded machine's first TLS handshake is slow (not what is tested). */
    private static final long HANDSHAKE_NANOS = 60 * SECOND_NANOS;

    @TempDir
    Path tmp;

    private TestPki pki;
    private TestKernel tk;
    private NbdServer server;
    private MemoryDevice storage;
    private final List<String> log = new CopyOnWriteArrayList<>();

    @BeforeEach
    void makeCertificates() throws Exception {
        assumeTrue(TestPki.available(), "openssl is not installed");
        pki = new TestPki(tmp.resolve("pki")).ca("ca", "blkstack test CA").ca("stranger", "a stranger CA")
                .server("server", "ca", "IP:127.0.0.1", "DNS:localhost")
                .server("elsewhere", "ca", "DNS:elsewhere.example")
                .server("impostor", "stranger", "IP:127.0.0.1", "DNS:localhost")
                .client("client", "ca");
        tk = new TestKernel("remote-tls", 128 * MiB, Policies.defaults(), Faults.NONE);
    }

    @AfterEach
    void stop() {
        try {
            if (server != null) {
                server.close();
            }
        } finally {
            tk.close();
        }
    }

    /** A blkstack server in this kernel exporting a 32 MiB memory device "d0" with TLS, over TCP; its port. */
    private int serve(ServerTls tls) throws IOException {
        storage = new MemoryDevice(tk.kernel, "d0", 32 * MiB, 0);
        server = new NbdServer(tk.kernel, List.of(new Export("d0", storage, false, "")),
                NbdServer.Options.defaults(new InetSocketAddress("127.0.0.1", 0)).withTls(tls)
                        .withHandshakeTimeoutNanos(HANDSHAKE_NANOS));
        server.start();
        return server.localAddress().getPort();
    }

    /** TLS required, client certificates from the test CA required. */
    private int serveRequiringClientCertificates(String leaf) throws IOException {
        return serve(ServerTls.load(ServerTls.Mode.REQUIRE, pki.cert(leaf), pki.key(leaf), pki.cert("ca")));
    }

    private StackConfig config(String yaml) throws Exception {
        Path file = tmp.resolve("stack.yaml");
        Files.writeString(file, yaml);
        return StackConfig.load(file);
    }

    /** The tls map of a device that trusts the test CA and shows the client certificate. */
    private String tlsWithClientCertificate() {
        return "{ ca: " + pki.cert("ca") + ", cert: " + pki.cert("client") + ", key: " + pki.key("client") + " }";
    }

    // Proves a stack over an nbds:// remote device works end to end: blkstack's own server with
    // TLS required and client certificates checked; two connections (the first made at open, the
    // second by its sender: both TLS paths); 8 MiB of random data written through a linear
    // target read back equal through it and equal on the server's device.
    @Test
    void stackOverAnNbdsRemoteServedByBlkstackReadsBackWhatItWrote() throws Exception {
        int port = serveRequiringClientCertificates("server");
        StackConfig config = config("""
                devices:
                  r0: { nbd: "nbds://127.0.0.1:%d/d0", connections: 2, timeout: 60s, tls: %s }
                mapped:
                  lin: |
                    0 65536 linear r0 0
                exports:
                  default: { device: lin }
                """.formatted(port, tlsWithClientCertificate()));
        try (Stack stack = Stack.build(tk.kernel, config, Stack.Mode.SERVE)) {
            RemoteDevice r0 = (RemoteDevice) stack.device("r0");
            assertTrue(r0.awaitConnected(30 * SECOND_NANOS), r0.describeState());
            assertEquals(2, r0.connections(), r0.describeState());
            byte[] data = new byte[(int) (8 * MiB)];
            new Random(17).nextBytes(data);
            BioSet set = new BioSet(tk.kernel, "tls-io", 4, 4, null, false);
            try {
                BlockDevice lin = stack.device("lin");
                for (int at = 0; at < data.length; at += (int) MiB) {
                    byte[] piece = java.util.Arrays.copyOfRange(data, at, at + (int) MiB);
                    assertEquals(BioStatus.OK, RemoteIo.write(set, lin, 4 * MiB + at, piece, 0));
                }
                byte[] back = new byte[(int) MiB];
                byte[] onServer = new byte[(int) MiB];
                for (int at = 0; at < data.length; at += (int) MiB) {
                    byte[] piece = java.util.Arrays.copyOfRange(data, at, at + (int) MiB);
                    assertEquals(BioStatus.OK, RemoteIo.read(set, lin, 4 * MiB + at, back));
                    assertEquals(BioStatus.OK, RemoteIo.read(set, storage, 4 * MiB + at, onServer));
                    assertArrayEquals(piece, back, "read back through the TLS remote device at " + at);
                    assertArrayEquals(piece, onServer, "what the server holds at " + at);
                }
            } finally {
                set.close();
            }
            assertEquals(0, r0.ioErrors(), r0.describeState());
            assertEquals(List.of(), stack.flushAll());
        }
    }

    // Proves the server is authenticated: a certificate from another CA, and one from the right CA
    // for another host name, are both refused at start with the device, the CA and the reason in
    // the message; verify-peer: false accepts either (encrypted, not authenticated) and the data
    // still goes through.
    @Test
    void aServerTheCaDidNotSignOrThatNamesAnotherHostIsRefused() throws Exception {
        int port = serve(ServerTls.load(ServerTls.Mode.REQUIRE, pki.cert("impostor"), pki.key("impostor"), null));
        String yaml = """
                devices:
                  r0: { nbd: "nbds://127.0.0.1:%d/d0", timeout: 60s, tls: { ca: %s } }
                exports:
                  default: { device: r0 }
                """.formatted(port, pki.cert("ca"));
        IOException e = assertThrows(IOException.class, () -> Stack.build(tk.kernel, config(yaml), Stack.Mode.SERVE));
        assertTrue(e.getMessage().contains("devices.r0") && e.getMessage().contains("TLS handshake failed")
                && e.getMessage().contains("not accepted with ca " + pki.cert("ca") + ": that CA did not sign it"),
                e.getMessage());

        String insecure = yaml.replace("tls: { ca: " + pki.cert("ca") + " }", "tls: { verify-peer: false }");
        assertNotEquals(yaml, insecure);
        try (Stack stack = Stack.build(tk.kernel, config(insecure), Stack.Mode.SERVE)) {
            writeAndReadBack(stack.device("r0"));
        }
        server.close();
        server = null;

        int other = serve(ServerTls.load(ServerTls.Mode.REQUIRE, pki.cert("elsewhere"), pki.key("elsewhere"), null));
        String elsewhere = yaml.replace(":" + port + "/", ":" + other + "/");
        IOException named = assertThrows(IOException.class,
                () -> Stack.build(tk.kernel, config(elsewhere), Stack.Mode.SERVE));
        assertTrue(named.getMessage().contains("devices.r0") && named.getMessage().contains("127.0.0.1")
                && named.getMessage().contains("not accepted"), named.getMessage());
    }

    // Proves the other refusals name their cause: a server that wants a client certificate the
    // device does not have, and a server without TLS (an nbds URI never falls back to plain).
    @Test
    void aMissingClientCertificateAndAServerWithoutTlsAreRefused() throws Exception {
        int port = serveRequiringClientCertificates("server");
        RemoteDevice.Options noCertificate = RemoteDevice.Options.of(NbdUri.parse("nbds://127.0.0.1:" + port + "/d0"))
                .withTimeoutNanos(60 * SECOND_NANOS).withLog(log::add)
                .withTls(ClientTls.load(pki.cert("ca"), null, null, true));
        IOException e = assertThrows(IOException.class, () -> RemoteDevice.open(tk.kernel, "r1", noCertificate));
        assertTrue(e.getMessage().contains("TLS failed") && e.getMessage().contains("without a certificate"),
                e.getMessage());
        server.close();
        server = null;

        int plain = serve(ServerTls.OFF);
        RemoteDevice.Options tls = RemoteDevice.Options.of(NbdUri.parse("nbds://127.0.0.1:" + plain + "/d0"))
                .withTimeoutNanos(60 * SECOND_NANOS).withLog(log::add)
                .withTls(ClientTls.load(pki.cert("ca"), null, null, true));
        IOException refused = assertThrows(IOException.class, () -> RemoteDevice.open(tk.kernel, "r2", tls));
        assertTrue(refused.getMessage().contains("server refused STARTTLS"), refused.getMessage());
        IllegalArgumentException missing = assertThrows(IllegalArgumentException.class,
                () -> RemoteDevice.open(tk.kernel, "r3", RemoteDevice.Options.of(NbdUri.parse("nbds://127.0.0.1:1/d0"))));
        assertTrue(missing.getMessage().contains("r3") && missing.getMessage().contains("verify-peer: false"),
                missing.getMessage());
    }

    // Proves the client against another implementation: nbdkit --tls=require --tls-verify-peer on a
    // Unix socket (nbds+unix://, chain checked, no host name), data written and read back; then the
    // server is replaced by one with a stranger's certificate: the reconnect's handshake failure is
    // logged with its reason and the device keeps trying; with the right server back it reconnects.
    @Test
    void nbdkitWithTlsRequiredOverAUnixSocketAndAReconnectToAnImpostor() throws Exception {
        assumeTrue(Nbdkit.installed(), "nbdkit is not installed");
        Path good = pki.gnutlsDir(tmp.resolve("nbdkit-good"), "ca", "server", "server");
        Path bad = pki.gnutlsDir(tmp.resolve("nbdkit-bad"), "stranger", "server", "impostor");
        Path socket = tmp.resolve("tls.sock");
        String[] plugin = {"memory", "16M"};
        try (Nbdkit real = new Nbdkit(socket, tlsArgs(good, plugin)).start();
                Nbdkit impostor = new Nbdkit(socket, tlsArgs(bad, plugin))) {
            RemoteDevice.Options options = RemoteDevice.Options.of(NbdUri.parse("nbds+unix:///?socket=" + socket))
                    .withTimeoutNanos(120 * SECOND_NANOS).withLog(log::add)
                    .withTls(ClientTls.load(pki.cert("ca"), pki.cert("client"), pki.key("client"), true));
            RemoteDevice dev = RemoteDevice.open(tk.kernel, "r0", options);
            try {
                assertEquals(16 * MiB, dev.capacityBytes());
                writeAndReadBack(dev);

                real.kill();
                impostor.start();
                long deadline = System.nanoTime() + 60 * SECOND_NANOS;
                while (log.stream().noneMatch(l -> l.contains("handshake failed") && l.contains("not accepted"))
                        && System.nanoTime() < deadline) {
                    Thread.sleep(10); // the sender reconnects with back-off; bounded wait for its log line
                }
                assertTrue(log.stream().anyMatch(l -> l.contains("remote device r0") && l.contains("handshake failed")
                        && l.contains("not accepted with ca")), String.join("\n", log));
                assertFalse(dev.isFailed(), dev.describeState());
                assertEquals(0, dev.connectionsUp(), dev.describeState());

                impostor.kill();
                real.start();
                assertTrue(dev.awaitConnected(60 * SECOND_NANOS), dev.describeState());
                writeAndReadBack(dev);
            } finally {
                dev.close();
            }
        }
    }

    private static String[] tlsArgs(Path certificates, String... plugin) {
        String[] args = new String[plugin.length + 3];
        args[0] = "--tls=require";
        args[1] = "--tls-certificates=" + certificates;
        args[2] = "--tls-verify-peer";
        System.arraycopy(plugin, 0, args, 3, plugin.length);
        return args;
    }

    /** 1 MiB of random data at 1 MiB, read back equal. */
    private void writeAndReadBack(BlockDevice dev) {
        byte[] data = new byte[(int) MiB];
        new Random(3).nextBytes(data);
        byte[] back = new byte[data.length];
        BioSet set = new BioSet(tk.kernel, "tls-check", 4, 4, null, false);
        try {
            assertEquals(BioStatus.OK, RemoteIo.write(set, dev, MiB, data, 0));
            assertEquals(BioStatus.OK, RemoteIo.read(set, dev, MiB, back));
        } finally {
            set.close();
        }
        assertArrayEquals(data, back);
    }
}
