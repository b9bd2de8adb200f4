package io.blkstack.remote;

import static io.blkstack.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The fault rules of the remote device against a scripted server that drops connections at
 * exact points (simple replies, no structured replies, so that path is covered too):
 * <ol>
 * <li>a WRITE on a connection that closes before its reply fails with EIO (outcome unknown, never
 *     silently lost);</li>
 * <li>a READ on a connection that closes before its reply is sent again on the next connection and
 *     succeeds;</li>
 * <li>a connection lost after an acknowledged WRITE and before a FLUSH makes the next FLUSH fail
 *     with EIO (the server may have lost it), and the one after succeeds.</li>
 * </ol>
 * Each step waits on the other side's messages, never on time.
 */
class RemoteFaultTest {

    private static final long MiB = 1L << 20;
    private static final long SIZE = 16 * MiB;

    @TempDir
    Path tmp;

    @Test
    void lostConnectionsFailUnknownWritesRetryReadsAndReportLostWritesOnFlush() throws Exception {
        Path socket = tmp.resolve("scripted.sock");
        byte[] pattern = new byte[4096];
        Arrays.fill(pattern, (byte) 0x3c);
        try (ServerSocketChannel listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            listener.bind(UnixDomainSocketAddress.of(socket));
            CompletableFuture<Void> script = CompletableFuture.runAsync(() -> {
                try {
                    try (SocketChannel c1 = accept(listener)) {
                        expect(c1, CMD_WRITE); // and drop it without a reply
                    }
                    try (SocketChannel c2 = accept(listener)) {
                        expect(c2, CMD_READ); // dropped: the client must ask again
                    }
                    try (SocketChannel c3 = accept(listener)) {
                        reply(c3, expect(c3, CMD_READ), pattern);
                        reply(c3, expect(c3, CMD_WRITE), null); // acknowledged, then the connection goes
                    }
                    try (SocketChannel c4 = accept(listener)) {
                        reply(c4, expect(c4, CMD_FLUSH), null);
                        reply(c4, expect(c4, CMD_FLUSH), null);
                        ByteBuffer end = ByteBuffer.allocate(1);
                        c4.read(end); // until the client closes
                    }
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            try (TestKernel tk = new TestKernel("remote-fault", 16 * MiB, Policies.defaults(), Faults.NONE)) {
                RemoteDevice.Options options = RemoteDevice.Options.of(NbdUri.parse("nbd+unix:///?socket=" + socket))
                        .withTimeoutNanos(30_000_000_000L).withLog(line -> {
                        });
                RemoteDevice dev = RemoteDevice.open(tk.kernel, "r", options);
                BioSet set = new BioSet(tk.kernel, "test", 4, 4, null, false);
                try {
                    assertFalse(dev.exportInfo().structuredReplies());
                    assertEquals(BioStatus.IOERR, RemoteIo.write(set, dev, 0, new byte[4096], 0),
                            "a write whose connection died before its reply");
                    byte[] back = new byte[4096];
                    assertEquals(BioStatus.OK, RemoteIo.read(set, dev, 8192, back), dev.describeState());
                    assertArrayEquals(pattern, back, "the read was answered on the third connection");
                    assertEquals(BioStatus.OK, RemoteIo.write(set, dev, 0, pattern, 0));
                    assertEquals(BioStatus.IOERR, RemoteIo.range(set, dev, BioOp.FLUSH, 0, 0, 0),
                            "the acknowledged write was on a connection lost before any flush");
                    assertEquals(BioStatus.OK, RemoteIo.range(set, dev, BioOp.FLUSH, 0, 0, 0));
                    assertEquals(3, dev.reconnects(), dev.describeState());
                    assertFalse(dev.isFailed());
                } finally {
                    set.close();
                    dev.close();
                }
            }
            script.get(30, TimeUnit.SECONDS);
        }
    }

    /** Accepts a connection and plays a fixed newstyle handshake: no options but GO, which it answers. */
    private static SocketChannel accept(ServerSocketChannel listener) throws IOException {
        SocketChannel c = listener.accept();
        ByteBuffer b = ByteBuffer.allocate(4096);
        b.putLong(NBDMAGIC).putLong(IHAVEOPT).putShort((short) (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)).flip();
        write(c, b);
        read(c, b.clear().limit(4));
        while (true) {
            read(c, b.clear().limit(16));
            b.flip();
            b.getLong();
            int option = b.getInt();
            int length = b.getInt();
            read(c, b.clear().limit(length));
            b.clear();
            if (option == OPT_GO) {
                b.putLong(OPTION_REPLY_MAGIC).putInt(option).putInt(REP_INFO).putInt(12).putShort((short) INFO_EXPORT)
                        .putLong(SIZE).putShort((short) (FLAG_HAS_FLAGS | FLAG_SEND_FLUSH));
                b.putLong(OPTION_REPLY_MAGIC).putInt(option).putInt(REP_ACK).putInt(0).flip();
                write(c, b);
                return c;
            }
            b.putLong(OPTION_REPLY_MAGIC).putInt(option).putInt(REP_ERR_UNSUP).putInt(0).flip();
            write(c, b);
        }
    }

    /** Reads one request, which must be {@code command}; returns its cookie (a WRITE's payload is read too). */
    private static long expect(SocketChannel c, int command) throws IOException {
        ByteBuffer h = ByteBuffer.allocate(REQUEST_HEADER_BYTES);
        read(c, h);
        h.flip();
        assertEquals(REQUEST_MAGIC, h.getInt());
        h.getShort();
        int type = Short.toUnsignedInt(h.getShort());
        long cookie = h.getLong();
        h.getLong();
        int length = h.getInt();
        assertEquals(command, type, "expected " + commandName(command) + ", got " + commandName(type));
        if (type == CMD_WRITE) {
            read(c, ByteBuffer.allocate(length));
        }
        return cookie;
    }

    /** A simple reply, with {@code data} for a READ. */
    private static void reply(SocketChannel c, long cookie, byte[] data) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(SIMPLE_REPLY_BYTES + (data == null ? 0 : data.length));
        b.putInt(SIMPLE_REPLY_MAGIC).putInt(0).putLong(cookie);
        if (data != null) {
            b.put(data);
        }
        write(c, b.flip());
    }

    private static void read(SocketChannel c, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            if (c.read(b) < 0) {
                throw new IOException("client closed");
            }
        }
    }

    private static void write(SocketChannel c, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            c.write(b);
        }
    }
}
