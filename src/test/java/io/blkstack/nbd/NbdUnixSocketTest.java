package io.blkstack.nbd;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.io.File;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The NBD server on a Unix domain socket, alone and next to a TCP listener: the socket file's mode,
 * the greeting over it, a stale socket replaced and a live one refused, the file removed on close;
 * and with the real clients (when installed) nbdinfo on an {@code nbd+unix://} URI and qemu-img
 * comparing the export over Unix with the same export over TCP and with the file written to it.
 */
class NbdUnixSocketTest {

    private static final long MiB = 1L << 20;

    private TestKernel tk;
    private final List<NbdServer> servers = new ArrayList<>();
    private List<Export> exports;

    @TempDir
    Path tmp;

    @BeforeEach
    void kernel() {
        tk = new TestKernel("nbd-unix", 128 * MiB, Policies.defaults(), Faults.NONE);
        exports = List.of(new Export("mem", new MemoryDevice(tk.kernel, "mem", 16 * MiB, 0), false, "a memory disk"));
    }

    @AfterEach
    void stop() {
        try {
            servers.forEach(NbdServer::close);
        } finally {
            tk.close();
        }
    }

    private NbdServer start(Listener... listeners) throws IOException {
        NbdServer server = new NbdServer(tk.kernel, exports,
                NbdServer.Options.defaults(new InetSocketAddress(0)).withListeners(List.of(listeners)));
        servers.add(server);
        server.start();
        return server;
    }

    private static Listener unix(Path path) {
        return Listener.unix(path, UnixSocketFile.MODE_DEFAULT);
    }

    /** Connects to the socket and reads the server's first 16 bytes: NBDMAGIC and IHAVEOPT. */
    private static ByteBuffer greeting(Path socket) throws IOException {
        try (SocketChannel c = SocketChannel.open(UnixDomainSocketAddress.of(socket))) {
            ByteBuffer hello = ByteBuffer.allocate(16);
            WireIo.readFully(new SocketTransport(c), hello);
            return hello.flip();
        }
    }

    // Proves a Unix listener is created 0600 (or with the mode it is given), greets like TCP,
    // runs next to a TCP listener on the same server, and its file is removed when the server closes.
    @Test
    void unixAndTcpListenersServeAtOnceAndTheSocketFileIsPrivate() throws Exception {
        Path socket = tmp.resolve("nbd.sock");
        NbdServer server = start(unix(socket), Listener.tcp(new InetSocketAddress("127.0.0.1", 0)));
        assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(socket)));
        List<SocketAddress> bound = server.boundAddresses();
        assertEquals(UnixDomainSocketAddress.of(socket), bound.get(0));
        assertEquals(server.localAddress(), bound.get(1));
        ByteBuffer hello = greeting(socket);
        assertEquals(NbdProtocol.NBDMAGIC, hello.getLong());
        assertEquals(NbdProtocol.IHAVEOPT, hello.getLong());
        try (SocketChannel tcp = SocketChannel.open(server.localAddress())) {
            ByteBuffer viaTcp = ByteBuffer.allocate(8);
            WireIo.readFully(new SocketTransport(tcp), viaTcp);
            assertEquals(NbdProtocol.NBDMAGIC, viaTcp.flip().getLong());
        }
        server.close();
        assertFalse(Files.exists(socket), "close removes the socket file");

        Path shared = tmp.resolve("group.sock");
        start(Listener.unix(shared, PosixFilePermissions.fromString("rw-rw----")));
        assertEquals("rw-rw----", PosixFilePermissions.toString(Files.getPosixFilePermissions(shared)));
    }

    // Proves the socket path is claimed as the control socket's is: a socket left by a server that
    // is gone is replaced (and logged), one a live server answers on is refused, a plain file too.
    @Test
    void staleSocketIsReplacedLiveOneAndPlainFileRefused() throws Exception {
        Path socket = tmp.resolve("stale.sock");
        try (ServerSocketChannel gone = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            gone.bind(UnixDomainSocketAddress.of(socket));
        }
        assertTrue(Files.exists(socket), "a closed Unix server leaves its socket file behind");
        start(unix(socket));
        assertEquals(NbdProtocol.NBDMAGIC, greeting(socket).getLong());

        NbdServer second = new NbdServer(tk.kernel, exports,
                NbdServer.Options.defaults(new InetSocketAddress(0)).withListeners(List.of(unix(socket))));
        servers.add(second);
        IOException live = assertThrows(IOException.class, second::start);
        assertTrue(live.getMessage().contains("is in use: a running server answers on it"), live.getMessage());
        assertEquals(NbdProtocol.NBDMAGIC, greeting(socket).getLong(), "the first server still owns the socket");

        Path plain = tmp.resolve("plain");
        Files.writeString(plain, "not a socket");
        NbdServer third = new NbdServer(tk.kernel, exports,
                NbdServer.Options.defaults(new InetSocketAddress(0)).withListeners(List.of(unix(plain))));
        servers.add(third);
        IOException notSocket = assertThrows(IOException.class, third::start);
        assertTrue(notSocket.getMessage().contains("not a socket"), notSocket.getMessage());
        assertEquals("not a socket", Files.readString(plain), "the file is left alone");
    }

    // Proves real clients reach the export over the Unix socket: nbdinfo describes it from an
    // nbd+unix:// URI, and after qemu-img wrote a random image over Unix, qemu-img compare finds the
    // export over Unix equal to the same export over TCP and to the image file.
    @Test
    void nbdinfoAndQemuImgOverUnixSocket() throws Exception {
        Path socket = tmp.resolve("nbd.sock");
        NbdServer server = start(unix(socket), Listener.tcp(new InetSocketAddress("127.0.0.1", 0)));
        String overUnix = "nbd+unix:///mem?socket=" + socket;
        String overTcp = "nbd://127.0.0.1:" + server.localAddress().getPort() + "/mem";
        String info = run("nbdinfo", overUnix);
        assertTrue(info.contains("export-size: " + 16 * MiB), info);
        assertTrue(info.contains("a memory disk"), info);

        byte[] data = new byte[(int) (16 * MiB)];
        new Random(17).nextBytes(data);
        Path image = tmp.resolve("image.raw");
        Files.write(image, data);
        run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", image.toString(), overUnix);
        run("qemu-img", "compare", "-f", "raw", "-F", "raw", overUnix, overTcp);
        run("qemu-img", "compare", "-f", "raw", "-F", "raw", image.toString(), overUnix);
    }

    private static boolean installed(String program) {
        for (String dir : System.getenv().getOrDefault("PATH", "").split(File.pathSeparator)) {
            if (Files.isExecutable(Path.of(dir, program))) {
                return true;
            }
        }
        return false;
    }

    /** Runs a program to completion; returns its output, failing on a non-zero exit. */
    private String run(String... command) throws Exception {
        assumeTrue(installed(command[0]), command[0] + " is not installed");
        Path out = Files.createTempFile(tmp, "out", ".txt");
        Process p = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(out.toFile()).start();
        int exit = p.waitFor();
        String text = Files.readString(out, StandardCharsets.UTF_8);
        assertEquals(0, exit, String.join(" ", command) + " failed:\n" + text);
        return text;
    }
}
