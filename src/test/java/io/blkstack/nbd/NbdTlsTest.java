package io.blkstack.nbd;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.Programs;
import io.blkstack.TestPki;
import io.blkstack.block.FileDevice;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CopyOnWriteArrayList;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;
import org.bouncycastle.asn1.pkcs.PrivateKeyInfo;
import org.bouncycastle.openssl.PEMKeyPair;
import org.bouncycastle.openssl.PEMParser;
import org.bouncycastle.openssl.jcajce.JcaPEMKeyConverter;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * NBD over TLS ({@code STARTTLS}, X.509) with the real clients: a test CA, a server certificate
 * for 127.0.0.1 and two client certificates (one from the CA, one from a stranger CA) are made at
 * test time with {@code openssl} ({@link TestPki}); libnbd and qemu read them from a directory in
 * GnuTLS's layout ({@code ca-cert.pem}, {@code client-cert.pem}, {@code client-key.pem}). Each test is skipped
 * when openssl or the client it needs is not installed; {@code .ci/run} installs them.
 */
class NbdTlsTest {

    private static final long MiB = 1L << 20;
    /** The export's size: nbdcopy copies all of it in and out (the 256 MiB). */
    private static final long EXPORT_BYTES = 256 * MiB;
    private static final long PROGRAM_SECONDS_MAX = 300;
    private static final long HANDSHAKE_TIMEOUT_NANOS = 120_000_000_000L;

    private TestKernel tk;
    private NbdServer server;
    private final List<String> log = new CopyOnWriteArrayList<>();

    @TempDir
    Path tmp;

    private TestPki pki;
    /** libnbd's certificate directory with a client certificate the server's CA signed. */
    private Path goodClient;
    /** The same with a client certificate from another CA. */
    private Path strangerClient;
    /** The server's Unix socket. */
    private Path socket;

    @BeforeEach
    void makeCertificates() throws Exception {
        assumeTrue(TestPki.available(), "openssl is not installed");
        pki = new TestPki(tmp.resolve("pki")).ca("ca", "blkstack test CA").ca("stranger", "a stranger CA")
                .server("server", "ca", "IP:127.0.0.1", "DNS:localhost").client("client", "ca")
                .client("intruder", "stranger");
        goodClient = pki.gnutlsDir(tmp.resolve("good"), "ca", "client", "client");
        strangerClient = pki.gnutlsDir(tmp.resolve("stranger"), "ca", "client", "intruder");
    }

    @AfterEach
    void stop() {
        try {
            if (server != null) {
                server.close();
            }
        } finally {
            if (tk != null) {
                tk.close();
            }
        }
    }

    /**
     * Serves a 256 MiB memory export "mem" on 127.0.0.1 and on the Unix socket {@link #socket} with
     * TLS in {@code mode}; client certificates checked.
     */
    private String start(ServerTls.Mode mode) throws IOException {
        // A generous handshake bound: on a loaded machine the JVM's first TLS handshake can take
        // longer than the default 10 s, and the bound is not what these tests are about.
        return start(mode, HANDSHAKE_TIMEOUT_NANOS);
    }

    private String start(ServerTls.Mode mode, long handshakeTimeoutNanos) throws IOException {
        tk = new TestKernel("nbd-tls", 256 * MiB, Policies.defaults(), Faults.NONE);
        ServerTls tls = ServerTls.load(mode, pki.cert("server"), pki.key("server"), pki.cert("ca"));
        socket = tmp.resolve("nbd.sock");
        server = new NbdServer(tk.kernel, List.of(new Export("mem", new MemoryDevice(tk.kernel, "mem", EXPORT_BYTES, 0),
                false, "a memory disk")), NbdServer.Options.defaults(new InetSocketAddress("127.0.0.1", 0))
                        .withListeners(List.of(Listener.tcp(new InetSocketAddress("127.0.0.1", 0)),
                                Listener.unix(socket, UnixSocketFile.MODE_DEFAULT)))
                        .withTls(tls).withHandshakeTimeoutNanos(handshakeTimeoutNanos).withLog(log::add));
        server.start();
        return "127.0.0.1:" + server.localAddress().getPort();
    }

    private String tlsUri(String address, Path certificates) {
        return "nbds://" + address + "/mem?tls-certificates=" + certificates;
    }

    // Proves a TLS client with a certificate from the server's CA gets the export (nbdinfo), that
    // 256 MiB (the whole export) copied in over TLS and back out come back with the same SHA-256 (nbdcopy), and that in
    // mode "on" a plain client is still served.
    @Test
    void nbdinfoAndNbdcopyOverTlsAndPlainClientsStillServedInModeOn() throws Exception {
        assumeTrue(installed("nbdinfo") && installed("nbdcopy"), "nbdinfo and nbdcopy are needed");
        String address = start(ServerTls.Mode.ON);
        String info = run(tmp, "nbdinfo", tlsUri(address, goodClient));
        assertTrue(info.contains("export-size: " + EXPORT_BYTES), info);
        assertTrue(info.contains("a memory disk"), info);

        Path in = randomFile("in.bin", EXPORT_BYTES, 5);
        long started = System.nanoTime();
        run(tmp, "nbdcopy", in.toString(), tlsUri(address, goodClient));
        Path out = tmp.resolve("out.bin");
        run(tmp, "nbdcopy", tlsUri(address, goodClient), out.toString());
        System.out.printf("nbdcopy over TLS: %d MiB in and out in %.1f s%n", EXPORT_BYTES / MiB,
                (System.nanoTime() - started) / 1e9); // for the record; not asserted
        assertEquals(Programs.sha256(in), Programs.sha256(out));

        String plain = run(tmp, "nbdinfo", "nbd://" + address + "/mem");
        assertTrue(plain.contains("export-size: " + EXPORT_BYTES), plain);
    }

    // Proves reads over TLS fall back to pages (issue 16): the payload must pass through the TLS
    // engine, so sendfile cannot carry it. A file export copied out over TLS comes back whole with no
    // READ held by reference; the same copy over plain TCP from the same server does use references
    // (so the first count of zero is the fallback, not a server that never uses them).
    @Test
    void readsOverTlsTakePagesAndPlainReadsOfTheSameFileTakeReferences() throws Exception {
        assumeTrue(installed("nbdcopy"), "nbdcopy is not installed");
        tk = new TestKernel("nbd-tls-reference", 64 * MiB, Policies.defaults(), Faults.NONE);
        Path image = randomFile("image.bin", 16 * MiB, 13);
        FileDevice file = FileDevice.open(tk.kernel, "file", image, 16 * MiB, FileDevice.Options.defaults());
        ServerTls tls = ServerTls.load(ServerTls.Mode.ON, pki.cert("server"), pki.key("server"), pki.cert("ca"));
        server = new NbdServer(tk.kernel, List.of(new Export("mem", file, false, "a file")),
                NbdServer.Options.defaults(new InetSocketAddress("127.0.0.1", 0)).withTls(tls)
                        .withHandshakeTimeoutNanos(HANDSHAKE_TIMEOUT_NANOS).withLog(log::add));
        server.start();
        String address = "127.0.0.1:" + server.localAddress().getPort();

        Path overTls = tmp.resolve("over-tls.bin");
        run(tmp, "nbdcopy", tlsUri(address, goodClient), overTls.toString());
        assertEquals(Programs.sha256(image), Programs.sha256(overTls));
        assertEquals(0, tk.kernel.counters().value("file.read-references"), "READs over TLS were held by reference");

        Path plain = tmp.resolve("plain.bin");
        run(tmp, "nbdcopy", "nbd://" + address + "/mem", plain.toString());
        assertEquals(Programs.sha256(image), Programs.sha256(plain));
        assertTrue(tk.kernel.counters().value("file.read-references") > 0, "plain READs of the file took no reference");
    }

    // Proves qemu's client over TLS: with the test CA and client certificate in the file names
    // qemu's tls-creds-x509 object reads for endpoint=client (ca-cert.pem, client-cert.pem,
    // client-key.pem), qemu-img info sees the export, convert writes a file to it, and compare finds
    // it identical to the file; with a client certificate from another CA, qemu-img is refused.
    @Test
    void qemuImgInfoConvertAndCompareOverTls() throws Exception {
        assumeTrue(installed("qemu-img"), "qemu-img is not installed");
        String address = start(ServerTls.Mode.REQUIRE);
        int port = server.localAddress().getPort();
        String tlsObject = "tls-creds-x509,id=tls0,endpoint=client,dir=" + goodClient;
        String image = qemuNbdImage(port);
        String info = run(tmp, "qemu-img", "info", "--object", tlsObject, image);
        assertTrue(info.contains("virtual size: 256 MiB"), info);

        Path in = randomFile("qemu-in.raw", 32 * MiB, 11);
        run(tmp, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", "--object", tlsObject, in.toString(), image);
        // The export is larger than the file: compare checks the rest reads as zeros too.
        String same = run(tmp, "qemu-img", "compare", "--object", tlsObject, "-f", "raw", "-F", "raw", in.toString(), image);
        assertTrue(same.contains("Images are identical"), same);

        String refused = runFailing(tmp, "qemu-img", "info", "--object",
                "tls-creds-x509,id=tls0,endpoint=client,dir=" + strangerClient, image);
        assertFalse(refused.contains("virtual size"), refused);
        assertTrue(plainRefusedOverTcp(address), "a plain client still cannot get the export");
    }

    // Proves TLS over the Unix listener: nbdinfo on an nbds+unix:// URI gets the export, with the
    // same certificates as over TCP.
    @Test
    void nbdinfoOverNbdsUnix() throws Exception {
        assumeTrue(installed("nbdinfo"), "nbdinfo is not installed");
        start(ServerTls.Mode.REQUIRE);
        String info = run(tmp, "nbdinfo", "nbds+unix:///mem?socket=" + socket + "&tls-certificates=" + goodClient);
        assertTrue(info.contains("export-size: " + EXPORT_BYTES), info);
        assertTrue(info.contains("a memory disk"), info);
        String plain = runFailing(tmp, "nbdinfo", "nbd+unix:///mem?socket=" + socket);
        assertTrue(plain.toLowerCase().contains("tls"), plain);
    }

    /** qemu's json: name of the export "mem" over TCP on {@code port}, with the credentials object "tls0". */
    private static String qemuNbdImage(int port) {
        return "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"inet\","
                + "\"host\":\"127.0.0.1\",\"port\":\"" + port + "\"},\"export\":\"mem\",\"tls-creds\":\"tls0\"}}";
    }

    /** Whether nbdinfo without TLS is refused over TCP (mode require). */
    private boolean plainRefusedOverTcp(String address) throws Exception {
        if (!installed("nbdinfo")) {
            return true;
        }
        return !runFailing(tmp, "nbdinfo", "nbd://" + address + "/mem").contains("export-size");
    }

    /** A file of {@code bytes} seeded random bytes, written a MiB at a time. */
    private Path randomFile(String name, long bytes, long seed) throws IOException {
        Path file = tmp.resolve(name);
        Random random = new Random(seed);
        byte[] chunk = new byte[(int) MiB];
        try (var out = Files.newOutputStream(file)) {
            for (long at = 0; at < bytes; at += chunk.length) {
                random.nextBytes(chunk);
                out.write(chunk);
            }
        }
        return file;
    }

    // Proves mode "require" as the spec words it: before TLS, an option other than STARTTLS and
    // ABORT gets NBD_REP_ERR_TLS_REQD (checked on the wire), ABORT is acknowledged, and nbdinfo
    // without TLS is refused while with TLS it is served.
    @Test
    void requireRefusesPlainClientsWithTlsRequired() throws Exception {
        String address = start(ServerTls.Mode.REQUIRE);
        try (SocketChannel c = SocketChannel.open(server.localAddress())) {
            SocketTransport t = new SocketTransport(c);
            ByteBuffer greeting = ByteBuffer.allocate(18);
            WireIo.readFully(t, greeting);
            WireIo.writeFully(t, ByteBuffer.allocate(4).putInt(NbdProtocol.FLAG_C_FIXED_NEWSTYLE).flip());
            for (int option : new int[] {NbdProtocol.OPT_LIST, NbdProtocol.OPT_STRUCTURED_REPLY, NbdProtocol.OPT_GO}) {
                ByteBuffer data = option == NbdProtocol.OPT_GO ? ByteBuffer.allocate(6) : ByteBuffer.allocate(0);
                assertEquals(NbdProtocol.REP_ERR_TLS_REQD, optionReply(t, option, data), "option " + option);
            }
            assertEquals(NbdProtocol.REP_ACK, optionReply(t, NbdProtocol.OPT_ABORT, ByteBuffer.allocate(0)));
        }
        if (installed("nbdinfo")) {
            String plain = runFailing(tmp, "nbdinfo", "nbd://" + address + "/mem");
            assertTrue(plain.toLowerCase().contains("tls"), plain);
            String info = run(tmp, "nbdinfo", tlsUri(address, goodClient));
            assertTrue(info.contains("export-size: " + EXPORT_BYTES), info);
        }
    }

    // Proves client certificates are checked when the server has a CA: a certificate from another
    // CA fails the handshake, that connection alone ends with the reason in the log, and a good
    // client is served right after.
    @Test
    void clientCertificateFromAnotherCaIsRefused() throws Exception {
        assumeTrue(installed("nbdinfo"), "nbdinfo is not installed");
        String address = start(ServerTls.Mode.REQUIRE);
        runFailing(tmp, "nbdinfo", tlsUri(address, strangerClient));
        String info = run(tmp, "nbdinfo", tlsUri(address, goodClient));
        assertTrue(info.contains("export-size: " + EXPORT_BYTES), info);
        // The refused client may exit before the server has logged why: every connection's log
        // lines are written once the drain sees it closed.
        assertTrue(server.drain(10_000_000_000L, false), "every connection ends");
        assertTrue(log.stream().anyMatch(l -> l.contains("TLS handshake failed")), log.toString());
    }

    // Proves TLS 1.2, which the NBD spec says implementations MUST support (the NBD project's own
    // nbd-tester-client offers nothing newer, and its tls test failed when only 1.3 was offered): a
    // client that allows only TLSv1.2, with a certificate from the server's CA, completes STARTTLS
    // in mode "require", its session is TLS 1.2, and it opens the export and reads back what it wrote.
    @Test
    void aClientOfferingOnlyTls12IsServed() throws Exception {
        start(ServerTls.Mode.REQUIRE);
        try (SocketChannel c = SocketChannel.open(server.localAddress())) {
            SocketTransport t = new SocketTransport(c);
            WireIo.readFully(t, ByteBuffer.allocate(18));
            WireIo.writeFully(t, ByteBuffer.allocate(4)
                    .putInt(NbdProtocol.FLAG_C_FIXED_NEWSTYLE | NbdProtocol.FLAG_C_NO_ZEROES).flip());
            assertEquals(NbdProtocol.REP_ACK, optionReply(t, NbdProtocol.OPT_STARTTLS, ByteBuffer.allocate(0)));
            try (SSLSocket tls = (SSLSocket) clientContext().getSocketFactory().createSocket(c.socket(), "127.0.0.1",
                    server.localAddress().getPort(), false)) {
                tls.setEnabledProtocols(new String[] {"TLSv1.2"});
                tls.startHandshake();
                assertEquals("TLSv1.2", tls.getSession().getProtocol());
                DataOutputStream out = new DataOutputStream(tls.getOutputStream());
                DataInputStream in = new DataInputStream(tls.getInputStream());
                byte[] name = "mem".getBytes(StandardCharsets.UTF_8);
                out.writeLong(NbdProtocol.IHAVEOPT);
                out.writeInt(NbdProtocol.OPT_EXPORT_NAME);
                out.writeInt(name.length);
                out.write(name);
                out.flush();
                assertEquals(EXPORT_BYTES, in.readLong(), "the export size");
                in.readShort(); // transmission flags
                byte[] data = new byte[4096];
                new Random(12).nextBytes(data);
                request(out, NbdProtocol.CMD_WRITE, 1, 8192, data.length);
                out.write(data);
                out.flush();
                assertSimpleReply(in, 1);
                request(out, NbdProtocol.CMD_READ, 2, 8192, data.length);
                out.flush();
                assertSimpleReply(in, 2);
                byte[] back = new byte[data.length];
                in.readFully(back);
                assertArrayEquals(data, back);
            }
        }
    }

    private static void request(DataOutputStream out, int command, long cookie, long offset, int length)
            throws IOException {
        out.writeInt(NbdProtocol.REQUEST_MAGIC);
        out.writeShort(0);
        out.writeShort(command);
        out.writeLong(cookie);
        out.writeLong(offset);
        out.writeInt(length);
    }

    private static void assertSimpleReply(DataInputStream in, long cookie) throws IOException {
        assertEquals(NbdProtocol.SIMPLE_REPLY_MAGIC, in.readInt());
        assertEquals(0, in.readInt(), "error of the reply to cookie " + cookie);
        assertEquals(cookie, in.readLong());
    }

    /** A client context: the good client's certificate and key, trusting the server's CA. */
    private SSLContext clientContext() throws Exception {
        CertificateFactory x509 = CertificateFactory.getInstance("X.509");
        Certificate ca;
        Certificate cert;
        try (InputStream caIn = Files.newInputStream(goodClient.resolve("ca-cert.pem"));
                InputStream certIn = Files.newInputStream(goodClient.resolve("client-cert.pem"))) {
            ca = x509.generateCertificate(caIn);
            cert = x509.generateCertificate(certIn);
        }
        PrivateKey key;
        try (PEMParser pem = new PEMParser(Files.newBufferedReader(goodClient.resolve("client-key.pem")))) {
            Object o = pem.readObject();
            key = o instanceof PEMKeyPair pair ? new JcaPEMKeyConverter().getKeyPair(pair).getPrivate()
                    : new JcaPEMKeyConverter().getPrivateKey((PrivateKeyInfo) o);
        }
        KeyStore keys = KeyStore.getInstance("PKCS12");
        keys.load(null, null);
        keys.setKeyEntry("client", key, new char[0], new Certificate[] {cert});
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keys, new char[0]);
        KeyStore trusted = KeyStore.getInstance("PKCS12");
        trusted.load(null, null);
        trusted.setCertificateEntry("ca", ca);
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trusted);
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        return context;
    }

    // Proves a stalled TLS handshake is cut by the handshake timeout: a client that sends STARTTLS,
    // gets the ACK and then sends no ClientHello sees its connection closed, the log says why, and
    // the server serves the next client.
    @Test
    void stalledTlsHandshakeIsCutByTheHandshakeTimeout() throws Exception {
        start(ServerTls.Mode.REQUIRE, 300_000_000L);
        try (SocketChannel c = SocketChannel.open(server.localAddress())) {
            SocketTransport t = new SocketTransport(c);
            WireIo.readFully(t, ByteBuffer.allocate(18));
            WireIo.writeFully(t, ByteBuffer.allocate(4).putInt(NbdProtocol.FLAG_C_FIXED_NEWSTYLE).flip());
            assertEquals(NbdProtocol.REP_ACK, optionReply(t, NbdProtocol.OPT_STARTTLS, ByteBuffer.allocate(0)));
            assertEquals(-1, t.read(ByteBuffer.allocate(1)), "the server closes the stalled connection");
        }
        try (SocketChannel next = SocketChannel.open(server.localAddress())) {
            ByteBuffer hello = ByteBuffer.allocate(8);
            WireIo.readFully(new SocketTransport(next), hello);
            assertEquals(NbdProtocol.NBDMAGIC, hello.flip().getLong());
        }
        assertTrue(server.drain(10_000_000_000L, false), "every connection ends"); // its log lines are written by then
        assertTrue(log.stream().anyMatch(l -> l.contains("nbd-1") && l.contains("handshake not completed within")),
                log.toString());
    }

    /** Sends one option and returns the type of its reply (the last, for a list of replies). */
    private static int optionReply(SocketTransport t, int option, ByteBuffer data) throws IOException {
        ByteBuffer header = ByteBuffer.allocate(16).putLong(NbdProtocol.IHAVEOPT).putInt(option)
                .putInt(data.remaining()).flip();
        WireIo.writeFully(t, header);
        WireIo.writeFully(t, data);
        ByteBuffer reply = ByteBuffer.allocate(20);
        WireIo.readFully(t, reply);
        reply.flip();
        assertEquals(NbdProtocol.OPTION_REPLY_MAGIC, reply.getLong());
        assertEquals(option, reply.getInt());
        int type = reply.getInt();
        int length = reply.getInt();
        WireIo.readFully(t, ByteBuffer.allocate(length));
        return type;
    }

    private static boolean installed(String program) {
        for (String dir : System.getenv().getOrDefault("PATH", "").split(File.pathSeparator)) {
            if (Files.isExecutable(Path.of(dir, program))) {
                return true;
            }
        }
        return false;
    }

    /** Runs a program in {@code dir}; returns its output, failing on a non-zero exit. */
    private String run(Path dir, String... command) throws Exception {
        Result r = exec(dir, command);
        assertEquals(0, r.exit, String.join(" ", command) + " failed:\n" + r.output);
        return r.output;
    }

    /** Runs a program expected to fail; returns its output. */
    private String runFailing(Path dir, String... command) throws Exception {
        Result r = exec(dir, command);
        assertNotEquals(0, r.exit, String.join(" ", command) + " succeeded:\n" + r.output);
        return r.output;
    }

    private record Result(int exit, String output) {
    }

    private Result exec(Path dir, String... command) throws Exception {
        assumeTrue(installed(command[0]), command[0] + " is not installed");
        Path out = Files.createTempFile(tmp, "out", ".txt");
        Process p = new ProcessBuilder(command).directory(dir.toFile()).redirectErrorStream(true)
                .redirectOutput(out.toFile()).start();
        boolean ended = p.waitFor(PROGRAM_SECONDS_MAX, java.util.concurrent.TimeUnit.SECONDS);
        if (!ended) {
            p.destroyForcibly();
        }
        String output = Files.readString(out, StandardCharsets.UTF_8);
        assertTrue(ended, String.join(" ", command) + " ran over " + PROGRAM_SECONDS_MAX + " s:\n" + output);
        return new Result(p.exitValue(), output);
    }
}
