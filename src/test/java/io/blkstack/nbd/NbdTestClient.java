package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;

import java.io.EOFException;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A small scripted NBD client for the protocol tests: raw handshake options and replies, raw
 * requests and reply parsing (simple and structured), written from {@code doc/proto.md}. It keeps
 * the length of each pending simple READ by cookie, since a simple reply does not carry it.
 */
final class NbdTestClient implements AutoCloseable {

    /** One option reply. */
    record OptionReply(int option, int type, byte[] data) {
        ByteBuffer buffer() {
            return ByteBuffer.wrap(data);
        }
    }

    /** One structured chunk or simple reply (type -1 for simple). */
    record Reply(long cookie, int error, int type, int flags, byte[] payload) {
        boolean simple() {
            return type == -1;
        }

        boolean done() {
            return simple() || (flags & REPLY_FLAG_DONE) != 0;
        }
    }

    final SocketChannel channel;
    int handshakeFlags;
    private final Map<Long, Integer> pendingSimpleReads = new HashMap<>();
    boolean structured;

    NbdTestClient(InetSocketAddress address) throws IOException {
        channel = SocketChannel.open(address);
    }

    /** A client whose socket receive buffer is set to {@code receiveBytes} before it connects (a slow reader's). */
    NbdTestClient(InetSocketAddress address, int receiveBytes) throws IOException {
        channel = SocketChannel.open();
        channel.setOption(java.net.StandardSocketOptions.SO_RCVBUF, receiveBytes);
        channel.connect(address);
    }

    /** Reads the greeting and sends the client flags. */
    NbdTestClient greet(int clientFlags) throws IOException {
        ByteBuffer hello = read(18);
        if (hello.getLong() != NBDMAGIC || hello.getLong() != IHAVEOPT) {
            throw new IOException("bad greeting");
        }
        handshakeFlags = hello.getShort() & 0xffff;
        write(ByteBuffer.allocate(4).putInt(clientFlags).flip());
        return this;
    }

    NbdTestClient greet() throws IOException {
        return greet(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    }

    void sendOption(int option, byte[] data) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(16 + data.length);
        b.putLong(IHAVEOPT).putInt(option).putInt(data.length).put(data).flip();
        write(b);
    }

    OptionReply readOptionReply() throws IOException {
        ByteBuffer h = read(20);
        long magic = h.getLong();
        if (magic != OPTION_REPLY_MAGIC) {
            throw new IOException("bad option reply magic " + Long.toHexString(magic));
        }
        int option = h.getInt();
        int type = h.getInt();
        int length = h.getInt();
        byte[] data = new byte[length];
        read(data.length).get(data);
        return new OptionReply(option, type, data);
    }

    /** Sends an option and collects replies up to the final one (ACK or an error). */
    List<OptionReply> option(int option, byte[] data) throws IOException {
        sendOption(option, data);
        List<OptionReply> replies = new ArrayList<>();
        while (true) {
            OptionReply r = readOptionReply();
            replies.add(r);
            if (r.type() == REP_ACK || r.type() < 0) {
                return replies;
            }
        }
    }

    static byte[] infoData(String name, int... infos) {
        byte[] n = name.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(4 + n.length + 2 + 2 * infos.length);
        b.putInt(n.length).put(n).putShort((short) infos.length);
        for (int i : infos) {
            b.putShort((short) i);
        }
        return b.array();
    }

    static byte[] metaData(String name, String... queries) {
        byte[] n = name.getBytes(StandardCharsets.UTF_8);
        int size = 4 + n.length + 4;
        for (String q : queries) {
            size += 4 + q.getBytes(StandardCharsets.UTF_8).length;
        }
        ByteBuffer b = ByteBuffer.allocate(size);
        b.putInt(n.length).put(n).putInt(queries.length);
        for (String q : queries) {
            byte[] qb = q.getBytes(StandardCharsets.UTF_8);
            b.putInt(qb.length).put(qb);
        }
        return b.array();
    }

    /** Structured replies, then base:allocation on {@code name}, then GO; returns the GO replies. */
    List<OptionReply> goStructured(String name) throws IOException {
        check(option(OPT_STRUCTURED_REPLY, new byte[0]), REP_ACK);
        structured = true;
        check(option(OPT_SET_META_CONTEXT, metaData(name, META_BASE_ALLOCATION)), REP_ACK);
        return check(option(OPT_GO, infoData(name, INFO_BLOCK_SIZE)), REP_ACK);
    }

    /**
     * {@code EXPORT_NAME} (after the greeting with no zeroes): the old way in, which never learns
     * the block sizes; returns the export size.
     */
    long exportName(String name) throws IOException {
        sendOption(OPT_EXPORT_NAME, name.getBytes(java.nio.charset.StandardCharsets.UTF_8));
        ByteBuffer b = read(10);
        return b.getLong();
    }

    /** GO without structured replies. */
    List<OptionReply> go(String name) throws IOException {
        return check(option(OPT_GO, infoData(name, INFO_BLOCK_SIZE)), REP_ACK);
    }

    static List<OptionReply> check(List<OptionReply> replies, int finalType) throws IOException {
        int last = replies.get(replies.size() - 1).type();
        if (last != finalType) {
            throw new IOException("final option reply " + Integer.toHexString(last) + ", expected "
                    + Integer.toHexString(finalType));
        }
        return replies;
    }

    /** Sends a request header (and the payload, if any). */
    void request(int flags, int command, long cookie, long offset, long length, byte[] payload) throws IOException {
        ByteBuffer h = ByteBuffer.allocate(REQUEST_HEADER_BYTES + (payload == null ? 0 : payload.length));
        h.putInt(REQUEST_MAGIC).putShort((short) flags).putShort((short) command).putLong(cookie).putLong(offset)
                .putInt((int) length);
        if (payload != null) {
            h.put(payload);
        }
        if (command == CMD_READ && !structured) {
            pendingSimpleReads.put(cookie, (int) length);
        }
        write(h.flip());
    }

    /** Reads one simple reply or one structured chunk. */
    Reply readReply() throws IOException {
        ByteBuffer m = read(4);
        int magic = m.getInt();
        if (magic == SIMPLE_REPLY_MAGIC) {
            ByteBuffer h = read(12);
            int error = h.getInt();
            long cookie = h.getLong();
            Integer readLength = pendingSimpleReads.remove(cookie);
            byte[] data = new byte[error == 0 && readLength != null ? readLength : 0];
            read(data.length).get(data);
            return new Reply(cookie, error, -1, 0, data);
        }
        if (magic == STRUCTURED_REPLY_MAGIC) {
            ByteBuffer h = read(16);
            int flags = h.getShort() & 0xffff;
            int type = h.getShort() & 0xffff;
            long cookie = h.getLong();
            int length = h.getInt();
            byte[] payload = new byte[length];
            read(length).get(payload);
            int error = (type & 0x8000) != 0 ? ByteBuffer.wrap(payload).getInt() : 0;
            return new Reply(cookie, error, type, flags, payload);
        }
        throw new IOException("bad reply magic " + Integer.toHexString(magic));
    }

    /** Reads every chunk of the next reply (assumes no interleaving with other requests). */
    List<Reply> readFullReply() throws IOException {
        List<Reply> chunks = new ArrayList<>();
        while (true) {
            Reply r = readReply();
            chunks.add(r);
            if (r.done()) {
                return chunks;
            }
        }
    }

    /** Writes and waits for the error value (0 for success). */
    int writeSync(long offset, byte[] data, int flags) throws IOException {
        request(flags, CMD_WRITE, 7, offset, data.length, data);
        return errorOf(readFullReply());
    }

    /** A command without payload; returns the error value. */
    int commandSync(int command, int flags, long offset, long length) throws IOException {
        request(flags, command, 8, offset, length, null);
        return errorOf(readFullReply());
    }

    /** Reads {@code length} bytes (simple or structured, reassembling holes as zero); throws on error. */
    byte[] readSync(long offset, int length) throws IOException {
        request(0, CMD_READ, 9, offset, length, null);
        List<Reply> chunks = readFullReply();
        int error = errorOf(chunks);
        if (error != 0) {
            throw new IOException("read error " + error);
        }
        return assemble(chunks, offset, length);
    }

    static int errorOf(List<Reply> chunks) {
        for (Reply r : chunks) {
            if (r.error() != 0) {
                return r.error();
            }
        }
        return 0;
    }

    /** Reassembles a read reply; holes read as zero; checks coverage and no overlap. */
    static byte[] assemble(List<Reply> chunks, long offset, int length) throws IOException {
        if (chunks.size() == 1 && chunks.get(0).simple()) {
            return chunks.get(0).payload();
        }
        byte[] out = new byte[length];
        boolean[] covered = new boolean[length];
        for (Reply r : chunks) {
            ByteBuffer p = ByteBuffer.wrap(r.payload());
            int start;
            int size;
            if (r.type() == REPLY_TYPE_OFFSET_DATA) {
                start = (int) (p.getLong() - offset);
                size = r.payload().length - 8;
                p.get(out, start, size);
            } else if (r.type() == REPLY_TYPE_OFFSET_HOLE) {
                start = (int) (p.getLong() - offset);
                size = p.getInt();
            } else if (r.type() == REPLY_TYPE_NONE) {
                continue;
            } else {
                throw new IOException("unexpected chunk type " + r.type());
            }
            for (int i = start; i < start + size; i++) {
                if (covered[i]) {
                    throw new IOException("overlapping chunks at " + (offset + i));
                }
                covered[i] = true;
            }
        }
        for (int i = 0; i < length; i++) {
            if (!covered[i]) {
                throw new IOException("byte " + (offset + i) + " not covered by the read reply");
            }
        }
        return out;
    }

    /** Reads until the server closes; true if it did. */
    boolean readsEof() throws IOException {
        ByteBuffer b = ByteBuffer.allocate(4096);
        try {
            while (true) {
                b.clear();
                if (channel.read(b) < 0) {
                    return true;
                }
            }
        } catch (IOException e) {
            return true; // reset by peer counts as closed
        }
    }

    ByteBuffer read(int n) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(n);
        while (b.hasRemaining()) {
            if (channel.read(b) < 0) {
                throw new EOFException("server closed with " + b.remaining() + " of " + n + " bytes unread");
            }
        }
        return b.flip();
    }

    void write(ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            channel.write(b);
        }
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }
}
