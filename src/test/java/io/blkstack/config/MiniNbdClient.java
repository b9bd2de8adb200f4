package io.blkstack.config;

import java.io.EOFException;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;

/**
 * The smallest NBD client the configuration tests need, written from {@code doc/proto.md}: fixed
 * newstyle handshake with {@code NBD_OPT_EXPORT_NAME}, then one simple request at a time (READ,
 * WRITE, FLUSH, DISC). The protocol tests' scripted client lives in the nbd package and is
 * package-private; this one only needs a round trip.
 */
public final class MiniNbdClient implements AutoCloseable {

    private static final long NBDMAGIC = 0x4e42444d41474943L;
    private static final long IHAVEOPT = 0x49484156454F5054L;
    private static final int FLAG_FIXED_NEWSTYLE = 1;
    private static final int FLAG_NO_ZEROES = 2;
    private static final int OPT_EXPORT_NAME = 1;
    private static final int REQUEST_MAGIC = 0x25609513;
    private static final int SIMPLE_REPLY_MAGIC = 0x67446698;
    static final int CMD_READ = 0;
    static final int CMD_WRITE = 1;
    static final int CMD_DISC = 2;
    static final int CMD_FLUSH = 3;
    /** Transmission flag: the export is read-only. */
    static final int FLAG_READ_ONLY = 1 << 1;

    private final SocketChannel channel;
    private long cookie;
    final long sizeBytes;
    final int transmissionFlags;

    /** Connects and negotiates {@code export}; throws if the server refuses it. */
    public MiniNbdClient(InetSocketAddress address, String export) throws IOException {
        channel = SocketChannel.open(address);
        ByteBuffer hello = read(18);
        if (hello.getLong() != NBDMAGIC || hello.getLong() != IHAVEOPT) {
            throw new IOException("not an NBD newstyle server");
        }
        int serverFlags = hello.getShort() & 0xffff;
        if ((serverFlags & FLAG_NO_ZEROES) == 0) {
            throw new IOException("server does not offer NO_ZEROES: flags " + serverFlags);
        }
        write(ByteBuffer.allocate(4).putInt(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).flip());
        byte[] name = export.getBytes(StandardCharsets.UTF_8);
        write(ByteBuffer.allocate(16 + name.length).putLong(IHAVEOPT).putInt(OPT_EXPORT_NAME).putInt(name.length)
                .put(name).flip());
        ByteBuffer info = read(10);
        sizeBytes = info.getLong();
        transmissionFlags = info.getShort() & 0xffff;
    }

    /** Writes {@code data} at {@code offset}; returns the NBD error (0 for success). */
    public int write(long offset, byte[] data) throws IOException {
        request(CMD_WRITE, offset, data.length, data);
        return reply(0).error;
    }

    /** Reads {@code length} bytes at {@code offset}; throws on an NBD error. */
    public byte[] read(long offset, int length) throws IOException {
        request(CMD_READ, offset, length, null);
        Reply r = reply(length);
        if (r.error != 0) {
            throw new IOException("read at " + offset + " failed with NBD error " + r.error);
        }
        return r.data;
    }

    /** Flushes; returns the NBD error. */
    public int flush() throws IOException {
        request(CMD_FLUSH, 0, 0, null);
        return reply(0).error;
    }

    /**
     * Sends a request without payload ({@code NBD_CMD_TRIM}, {@code WRITE_ZEROES}, or a READ that
     * is meant to fail) and returns the NBD error of its simple reply. A READ that succeeds would
     * leave its data unread on the stream: use {@link #read} for those.
     */
    public int command(int command, long offset, int length) throws IOException {
        request(command, offset, length, null);
        return reply(0).error;
    }

    private record Reply(int error, byte[] data) {
    }

    private void request(int command, long offset, int length, byte[] payload) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(28 + (payload == null ? 0 : payload.length));
        b.putInt(REQUEST_MAGIC).putShort((short) 0).putShort((short) command).putLong(++cookie).putLong(offset)
                .putInt(length);
        if (payload != null) {
            b.put(payload);
        }
        write(b.flip());
    }

    /** A simple reply to the last request; a successful read carries {@code readLength} bytes. */
    private Reply reply(int readLength) throws IOException {
        ByteBuffer h = read(16);
        if (h.getInt() != SIMPLE_REPLY_MAGIC) {
            throw new IOException("bad reply magic");
        }
        int error = h.getInt();
        if (h.getLong() != cookie) {
            throw new IOException("reply for another request");
        }
        byte[] data = new byte[error == 0 ? readLength : 0];
        read(data.length).get(data);
        return new Reply(error, data);
    }

    private ByteBuffer read(int n) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(n);
        while (b.hasRemaining()) {
            if (channel.read(b) < 0) {
                throw new EOFException("server closed the connection");
            }
        }
        return b.flip();
    }

    private void write(ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            channel.write(b);
        }
    }

    /** Sends DISC and closes the socket. */
    @Override
    public void close() throws IOException {
        try {
            request(CMD_DISC, 0, 0, null);
        } finally {
            channel.close();
        }
    }
}
