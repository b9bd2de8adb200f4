package io.blkstack.remote;

import static io.blkstack.nbd.NbdProtocol.*;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import javax.net.ssl.SSLException;

/**
 * The client side of the NBD fixed newstyle handshake ({@code doc/proto.md}): greeting, client
 * flags, {@code NBD_OPT_STRUCTURED_REPLY}, {@code NBD_OPT_SET_META_CONTEXT} for
 * {@code base:allocation} (only with structured replies, as the spec requires), then
 * {@code NBD_OPT_GO} asking for {@code NBD_INFO_BLOCK_SIZE}. Options the server refuses with an
 * error reply are done without; a refused GO ends the handshake with the server's message.
 *
 * <p>With TLS ({@code nbds://}) the first option is {@code NBD_OPT_STARTTLS}; once the server
 * acknowledges it, the TLS handshake runs over the wire and every later option (and all
 * transmission) goes over the encrypted wire this returns. A server that refuses STARTTLS ends the
 * handshake: an {@code nbds} URI never falls back to plain text.
 *
 * <p>It runs on whichever task opens the connection, with blocking wire I/O; the caller bounds
 * it with a timer that cuts the wire.
 */
final class ClientHandshake {

    /** Largest option reply accepted (a description or an error message is at most 4 KiB). */
    static final int OPTION_REPLY_BYTES_MAX = STRING_BYTES_MAX + 64;

    /** The wire options go over: the plain one, then the TLS one after STARTTLS. */
    private NbdTransport.Wire wire;
    private final NbdUri uri;
    private final String exportName;
    private final ClientTls tls;
    private final String name;
    private final ByteBuffer buffer = ByteBuffer.allocate(OPTION_REPLY_BYTES_MAX + 32);

    private ClientHandshake(NbdTransport.Wire wire, NbdUri uri, ClientTls tls, String name) {
        this.wire = wire;
        this.uri = uri;
        this.exportName = uri.exportName();
        this.tls = tls;
        this.name = name;
    }

    /**
     * What a handshake gives: the wire to use from now on (the one given, or TLS over it) and what
     * the server said about the export.
     */
    record Negotiated(NbdTransport.Wire wire, ExportInfo info) {
    }

    /**
     * Negotiates the URI's export on a fresh wire, with TLS first when {@code tls} is given.
     *
     * @param name the connection's name, for the TLS engine's lock
     * @throws IOException the server refused, or TLS failed (the message says why)
     */
    static Negotiated negotiate(NbdTransport.Wire wire, NbdUri uri, ClientTls tls, String name) throws IOException {
        byte[] export = uri.exportName().getBytes(StandardCharsets.UTF_8);
        if (export.length > STRING_BYTES_MAX) {
            throw new IllegalArgumentException("export name of " + export.length + " bytes is over " + STRING_BYTES_MAX);
        }
        ClientHandshake h = new ClientHandshake(wire, uri, tls, name);
        ExportInfo info = h.run(export);
        return new Negotiated(h.wire, info);
    }

    private ExportInfo run(byte[] export) throws IOException {
        int serverFlags = greeting();
        int clientFlags = FLAG_C_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES);
        buffer.clear().putInt(clientFlags).flip();
        WireBytes.writeFully(wire, buffer);
        if (tls == null) {
            return options(export);
        }
        startTls();
        try {
            return options(export);
        } catch (SSLException e) {
            // TLS 1.3: a server that refuses the client's certificate says so after the client's
            // handshake is done, on the first read
            throw new IOException("TLS failed: " + tls.explain(e), e);
        }
    }

    private ExportInfo options(byte[] export) throws IOException {
        boolean structured = structuredReplies();
        long contextId = structured ? metaContext(export) : -1;
        return go(export, structured, contextId);
    }

    /** Asks for TLS and runs its handshake; from then on {@link #wire} is the encrypted one. */
    private void startTls() throws IOException {
        sendOption(OPT_STARTTLS, 0);
        flushOption();
        Reply r = readReply(OPT_STARTTLS);
        if (r.type != REP_ACK) {
            String message = StandardCharsets.UTF_8.decode(buffer).toString();
            throw new IOException("server refused STARTTLS: " + errorName(r.type)
                    + (message.isEmpty() ? "" : ": " + message) + " (it does not offer TLS: an nbds URI needs it)");
        }
        try {
            wire = TlsWire.handshake(wire, tls.newEngine(uri.address()), name);
        } catch (SSLException e) {
            throw new IOException("TLS handshake failed: " + tls.explain(e), e);
        }
    }

    /** Reads the server's greeting; returns its handshake flags. */
    private int greeting() throws IOException {
        buffer.clear().limit(18);
        WireBytes.readFully(wire, buffer);
        buffer.flip();
        long magic = buffer.getLong();
        long opts = buffer.getLong();
        if (magic != NBDMAGIC || opts != IHAVEOPT) {
            throw new IOException(String.format("not a newstyle NBD server: greeting %016x %016x", magic, opts));
        }
        int flags = Short.toUnsignedInt(buffer.getShort());
        if ((flags & FLAG_FIXED_NEWSTYLE) == 0) {
            throw new IOException("server does not speak fixed newstyle (handshake flags " + flags + ")");
        }
        return flags;
    }

    /** Asks for structured replies; true if the server acknowledged. */
    private boolean structuredReplies() throws IOException {
        sendOption(OPT_STRUCTURED_REPLY, 0);
        flushOption();
        Reply r = readReply(OPT_STRUCTURED_REPLY);
        return r.type == REP_ACK;
    }

    /** Asks for {@code base:allocation}; returns its context id, or -1 if the server has none. */
    private long metaContext(byte[] name) throws IOException {
        byte[] query = META_BASE_ALLOCATION.getBytes(StandardCharsets.US_ASCII);
        sendOption(OPT_SET_META_CONTEXT, 4 + name.length + 4 + 4 + query.length);
        buffer.putInt(name.length).put(name).putInt(1).putInt(query.length).put(query);
        flushOption();
        long id = -1;
        for (int i = 0; i < 16; i++) {
            Reply r = readReply(OPT_SET_META_CONTEXT);
            if (r.type == REP_META_CONTEXT && r.length >= 4) {
                int contextId = buffer.getInt();
                String context = StandardCharsets.US_ASCII.decode(buffer).toString();
                if (META_BASE_ALLOCATION.equals(context)) {
                    id = Integer.toUnsignedLong(contextId);
                }
            } else {
                return r.type == REP_ACK ? id : -1;
            }
        }
        throw new IOException("server sent more than 16 replies to SET_META_CONTEXT");
    }

    /** Sends GO with a request for block sizes; reads the info replies up to the ACK. */
    private ExportInfo go(byte[] name, boolean structured, long contextId) throws IOException {
        sendOption(OPT_GO, 4 + name.length + 2 + 2);
        buffer.putInt(name.length).put(name).putShort((short) 1).putShort((short) INFO_BLOCK_SIZE);
        flushOption();
        long size = -1;
        int flags = 0;
        int min = 1;
        int preferred = 4096;
        int max = DEFAULT_MAX_PAYLOAD;
        for (int i = 0; i < 64; i++) {
            Reply r = readReply(OPT_GO);
            if (r.type == REP_ACK) {
                if (size < 0) {
                    throw new IOException("server acknowledged GO for export '" + exportName + "' without its size");
                }
                return new ExportInfo(size, flags, min, preferred, max, structured, contextId);
            }
            if (r.type != REP_INFO || r.length < 2) {
                continue; // an unknown reply type without the error bit: ignore, as the spec says
            }
            int info = Short.toUnsignedInt(buffer.getShort());
            if (info == INFO_EXPORT && r.length >= 12) {
                size = buffer.getLong();
                flags = Short.toUnsignedInt(buffer.getShort());
            } else if (info == INFO_BLOCK_SIZE && r.length >= 14) {
                min = buffer.getInt();
                preferred = buffer.getInt();
                max = buffer.getInt();
                if (min <= 0 || preferred < min || max == 0 || Integer.toUnsignedLong(max) < min) {
                    throw new IOException("server block sizes " + Integer.toUnsignedString(min) + "/"
                            + Integer.toUnsignedString(preferred) + "/" + Integer.toUnsignedString(max) + " are not valid");
                }
                if (max < 0) {
                    max = Integer.MAX_VALUE; // over 2 GiB: more than a bio ever asks for
                }
            }
        }
        throw new IOException("server sent more than 64 replies to GO");
    }

    /** Starts an option in the buffer: magic, option, length; the caller appends the data. */
    private void sendOption(int option, int length) {
        buffer.clear().putLong(IHAVEOPT).putInt(option).putInt(length);
    }

    private void flushOption() throws IOException {
        buffer.flip();
        WireBytes.writeFully(wire, buffer);
    }

    /** A reply's type and length; its data is left in the buffer. */
    private record Reply(int type, int length) {
    }

    /** Reads one option reply into the buffer; an error reply throws for GO and returns for the others. */
    private Reply readReply(int option) throws IOException {
        buffer.clear().limit(20);
        WireBytes.readFully(wire, buffer);
        buffer.flip();
        long magic = buffer.getLong();
        int replyOption = buffer.getInt();
        int type = buffer.getInt();
        int length = buffer.getInt();
        if (magic != OPTION_REPLY_MAGIC || replyOption != option) {
            throw new IOException(String.format("bad option reply: magic %x option %d (sent %d)", magic, replyOption,
                    option));
        }
        if (length < 0 || length > OPTION_REPLY_BYTES_MAX) {
            throw new IOException("option reply of " + Integer.toUnsignedString(length) + " bytes is over "
                    + OPTION_REPLY_BYTES_MAX);
        }
        buffer.clear().limit(length);
        WireBytes.readFully(wire, buffer);
        buffer.flip();
        if ((type & 0x80000000) != 0 && option == OPT_GO) {
            String message = StandardCharsets.UTF_8.decode(buffer).toString();
            throw new IOException("server refused export '" + exportName + "': " + errorName(type)
                    + (message.isEmpty() ? "" : ": " + message));
        }
        return new Reply(type, length);
    }

    private static String errorName(int type) {
        return switch (type) {
            case REP_ERR_UNSUP -> "NBD_REP_ERR_UNSUP";
            case REP_ERR_POLICY -> "NBD_REP_ERR_POLICY";
            case REP_ERR_INVALID -> "NBD_REP_ERR_INVALID";
            case REP_ERR_PLATFORM -> "NBD_REP_ERR_PLATFORM";
            case REP_ERR_TLS_REQD -> "NBD_REP_ERR_TLS_REQD (the server requires TLS: give an nbds:// or nbds+unix://"
                    + " URI and tls: { ca: PEM })";
            case REP_ERR_UNKNOWN -> "NBD_REP_ERR_UNKNOWN (no such export)";
            case REP_ERR_SHUTDOWN -> "NBD_REP_ERR_SHUTDOWN";
            case REP_ERR_BLOCK_SIZE_REQD -> "NBD_REP_ERR_BLOCK_SIZE_REQD";
            default -> String.format("error 0x%08x", type);
        };
    }
}
