package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;

import java.io.EOFException;
import java.io.IOException;
import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.function.Consumer;
import javax.net.ssl.SSLException;

/**
 * The fixed newstyle handshake of one connection (option haggling), run by the connection's
 * reader task before the transmission phase.
 *
 * <p>Supported options: {@code EXPORT_NAME}, {@code ABORT}, {@code LIST}, {@code INFO},
 * {@code GO}, {@code STRUCTURED_REPLY}, {@code LIST_META_CONTEXT}, {@code SET_META_CONTEXT}
 * ({@code base:allocation}), and {@code STARTTLS} when TLS is on ({@link ServerTls}). Anything else
 * gets {@code NBD_REP_ERR_UNSUP} and haggling continues; option data whose lengths do not add up
 * gets {@code NBD_REP_ERR_INVALID}; an unknown export gets {@code NBD_REP_ERR_UNKNOWN} (or, after
 * {@code EXPORT_NAME}, which cannot carry an error, a hard disconnect). Option data is bounded:
 * more than {@link #OPTION_DATA_MAX} bytes is skipped (never stored) and answered with
 * {@code NBD_REP_ERR_TOO_BIG} (or {@code ERR_UNSUP} for an unknown option); more than
 * {@link #OPTION_SKIP_MAX} is treated as a denial of service and the connection is dropped.
 *
 * <p><b>TLS.</b> {@code STARTTLS} is acknowledged in plain text, then the TLS handshake runs on
 * the same transport and haggling goes on over {@link TlsTransport} ({@link #transport}), with
 * what was negotiated before forgotten (structured replies, meta contexts), as the spec asks. In
 * {@link ServerTls.Mode#REQUIRE} every option before TLS but {@code STARTTLS} and {@code ABORT} gets
 * {@code NBD_REP_ERR_TLS_REQD} ({@code EXPORT_NAME}, which cannot carry an error, a hard
 * disconnect). A failed TLS handshake ends this connection alone, with its reason in the log; a
 * stalled one is cut by the connection's handshake timeout, which covers the whole haggling.
 *
 * <p>The handshake is the control path: it uses small heap buffers per option, never pages.
 */
final class NbdHandshake {

    /** The largest option payload read into memory. */
    static final int OPTION_DATA_MAX = 64 * 1024;
    /** The largest option payload skipped before the connection is dropped. */
    static final long OPTION_SKIP_MAX = 16L << 20;
    /** The most options a refused client gets answers to before the server hangs up. */
    static final int REFUSED_OPTIONS_MAX = 16;
    /** The id of {@code base:allocation} in {@code NBD_REP_META_CONTEXT} after SET. */
    static final int ALLOCATION_CONTEXT_ID = 1;

    /**
     * What the handshake agreed on: the export and the transmission options.
     *
     * @param blockSizesKnown whether the client asked for {@code NBD_INFO_BLOCK_SIZE} in an
     *     {@code INFO} or {@code GO}; a client that did not (one that used {@code EXPORT_NAME}, or
     *     {@code GO} without it) never agreed to the advertised maximum, and the spec says a server
     *     SHOULD then accept READs and WRITEs of effectively any length
     */
    record Negotiated(Export export, boolean structuredReplies, boolean baseAllocation, boolean blockSizesKnown) {
    }

    private NbdTransport channel;
    private final List<Export> exports;
    private final ServerTls tls;
    private final String name;
    private final Consumer<String> log;
    private boolean tlsActive;
    private final ByteBuffer header = ByteBuffer.allocate(16);
    private final ByteBuffer scratch = ByteBuffer.allocate(8192);
    private boolean noZeroes;
    private boolean structured;
    private Export metaExport;
    private boolean metaAllocation;
    private boolean blockSizeRequested;

    NbdHandshake(NbdTransport channel, List<Export> exports) {
        this(channel, exports, ServerTls.OFF, "nbd", line -> { });
    }

    /**
     * A handshake that offers TLS as {@code tls} says.
     *
     * @param name the connection's name for log lines
     * @param log where a failed TLS handshake, and a protocol violation that ends the session, are reported
     */
    NbdHandshake(NbdTransport channel, List<Export> exports, ServerTls tls, String name, Consumer<String> log) {
        this.channel = channel;
        this.exports = exports;
        this.tls = tls;
        this.name = name;
        this.log = log;
    }

    /** The transport to go on with: the TLS one once {@code STARTTLS} succeeded, else the one given. */
    NbdTransport transport() {
        return channel;
    }

    /** Whether the session runs over TLS. */
    boolean tlsActive() {
        return tlsActive;
    }

    /** Whether options other than STARTTLS and ABORT must be refused until TLS is up. */
    private boolean tlsRequired(int option) {
        return tls.mode() == ServerTls.Mode.REQUIRE && !tlsActive && option != OPT_STARTTLS && option != OPT_ABORT;
    }

    /**
     * Runs the handshake to the end.
     *
     * @return the negotiated export, or null if the session ended (ABORT, unknown export after
     *     EXPORT_NAME, bad magic, unknown client flags, client gone)
     */
    Negotiated run() throws IOException {
        if (!greet()) {
            return null;
        }
        while (true) {
            header.clear();
            if (!WireIo.readFullyOrEof(channel, header)) {
                return null;
            }
            header.flip();
            long magic = header.getLong();
            if (magic != IHAVEOPT) {
                return disconnected("an option with magic 0x" + Long.toHexString(magic) + ", not IHAVEOPT");
            }
            int option = header.getInt();
            long length = header.getInt() & 0xffffffffL;
            if (length > OPTION_DATA_MAX) {
                if (length > OPTION_SKIP_MAX || option == OPT_EXPORT_NAME) {
                    return disconnected("option " + option + " with " + length + " bytes of data (at most "
                            + (option == OPT_EXPORT_NAME ? OPTION_DATA_MAX : OPTION_SKIP_MAX) + ")");
                }
                WireIo.skip(channel, scratch, length);
                reply(option, tlsRequired(option) ? REP_ERR_TLS_REQD : isKnown(option) ? REP_ERR_TOO_BIG : REP_ERR_UNSUP,
                        null);
                continue;
            }
            ByteBuffer data = ByteBuffer.allocate((int) length);
            WireIo.readFully(channel, data);
            data.flip();
            if (tlsRequired(option)) {
                if (option == OPT_EXPORT_NAME) {
                    return null; // cannot carry an error: the spec's hard disconnect
                }
                reply(option, REP_ERR_TLS_REQD, null);
                continue;
            }
            Negotiated done;
            try {
                done = handle(option, data);
            } catch (BufferUnderflowException e) {
                reply(option, REP_ERR_INVALID, null);
                continue;
            }
            if (done == ABORTED) {
                return null;
            }
            if (done != null) {
                return done;
            }
        }
    }

    /** Logs a protocol violation that ends the session (the spec's hard disconnect); returns null. */
    private Negotiated disconnected(String what) {
        log.accept(name + ": disconnected in the handshake: " + what);
        return null;
    }

    /** Sends the greeting and reads the client's flags; false if the session ended there. */
    private boolean greet() throws IOException {
        ByteBuffer hello = ByteBuffer.allocate(18);
        hello.putLong(NBDMAGIC).putLong(IHAVEOPT).putShort((short) (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)).flip();
        WireIo.writeFully(channel, hello);
        ByteBuffer clientFlags = ByteBuffer.allocate(4);
        if (!WireIo.readFullyOrEof(channel, clientFlags)) {
            return false;
        }
        int flags = clientFlags.flip().getInt();
        if ((flags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) != 0) {
            // the spec: the server MUST drop the connection on unknown client flags
            disconnected("unknown client flags 0x" + Integer.toHexString(flags));
            return false;
        }
        noZeroes = (flags & FLAG_C_NO_ZEROES) != 0;
        return true;
    }

    /**
     * Refuses the session (a client past the connection limit): after the greeting, every option
     * gets {@code NBD_REP_ERR_POLICY} carrying {@code message}, which clients show to the user,
     * until the client gives up. The spec's way: during haggling a server that does not want the
     * client "MUST ... simply error inbound options until the client gets the hint"; a soft
     * disconnect ({@code ABORT}) is acknowledged. {@code EXPORT_NAME} cannot carry an error, so it
     * is answered by a hard disconnect, as is more than {@link #REFUSED_OPTIONS_MAX} options or
     * option data beyond {@link #OPTION_DATA_MAX} (a refused client gets no more of the server).
     */
    void refuse(String message) throws IOException {
        if (!greet()) {
            return;
        }
        byte[] text = message.getBytes(StandardCharsets.UTF_8);
        if (text.length > STRING_BYTES_MAX) {
            throw new IllegalArgumentException("refusal message of " + text.length + " bytes exceeds " + STRING_BYTES_MAX);
        }
        for (int i = 0; i < REFUSED_OPTIONS_MAX; i++) {
            header.clear();
            if (!WireIo.readFullyOrEof(channel, header)) {
                return;
            }
            header.flip();
            if (header.getLong() != IHAVEOPT) {
                return;
            }
            int option = header.getInt();
            long length = header.getInt() & 0xffffffffL;
            if (length > OPTION_DATA_MAX || option == OPT_EXPORT_NAME) {
                return;
            }
            WireIo.skip(channel, scratch, length);
            if (option == OPT_ABORT) {
                reply(option, REP_ACK, null);
                return;
            }
            reply(option, REP_ERR_POLICY, ByteBuffer.wrap(text));
        }
    }

    /** Marker for "the session ended during haggling". */
    private static final Negotiated ABORTED = new Negotiated(null, false, false, false);

    private static boolean isKnown(int option) {
        return switch (option) {
            case OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY,
                    OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT -> true;
            default -> false;
        };
    }

    /**
     * {@code STARTTLS}: acknowledged in plain text, then the TLS handshake; haggling then goes on
     * over TLS with the earlier negotiation forgotten. Returns ABORTED when the TLS handshake
     * failed (logged), null to go on.
     */
    private Negotiated startTls(ByteBuffer data) throws IOException {
        if (data.hasRemaining() || tlsActive) {
            reply(OPT_STARTTLS, REP_ERR_INVALID, null); // data with it, or TLS twice
            return null;
        }
        reply(OPT_STARTTLS, REP_ACK, null);
        try {
            channel = TlsTransport.handshake(channel, tls.newEngine(), name);
        } catch (SSLException e) {
            log.accept(name + ": TLS handshake failed: " + e.getMessage());
            return ABORTED;
        } catch (EOFException e) {
            log.accept(name + ": TLS handshake ended: " + e.getMessage() + " (the client left, or the handshake timed out)");
            return ABORTED;
        }
        tlsActive = true;
        structured = false;
        metaExport = null;
        metaAllocation = false;
        blockSizeRequested = false;
        return null;
    }

    /** Handles one option; returns the negotiated result to enter transmission, ABORTED, or null to go on. */
    private Negotiated handle(int option, ByteBuffer data) throws IOException {
        switch (option) {
            case OPT_EXPORT_NAME -> {
                Export export = find(string(data, data.remaining()));
                if (export == null) {
                    return ABORTED; // EXPORT_NAME cannot return an error: hard disconnect
                }
                ByteBuffer out = ByteBuffer.allocate(noZeroes ? 10 : 134);
                out.putLong(export.sizeBytes()).putShort((short) export.transmissionFlags());
                out.position(out.capacity()).flip();
                WireIo.writeFully(channel, out);
                return negotiated(export);
            }
            case OPT_ABORT -> {
                reply(option, REP_ACK, null);
                return ABORTED;
            }
            case OPT_LIST -> {
                if (data.hasRemaining()) {
                    reply(option, REP_ERR_INVALID, null);
                    return null;
                }
                for (Export e : exports) {
                    byte[] name = e.name().getBytes(StandardCharsets.UTF_8);
                    byte[] text = e.description().getBytes(StandardCharsets.UTF_8);
                    ByteBuffer out = ByteBuffer.allocate(4 + name.length + text.length);
                    out.putInt(name.length).put(name).put(text).flip();
                    reply(option, REP_SERVER, out);
                }
                reply(option, REP_ACK, null);
                return null;
            }
            case OPT_INFO, OPT_GO -> {
                return infoOrGo(option, data);
            }
            case OPT_STRUCTURED_REPLY -> {
                if (data.hasRemaining()) {
                    reply(option, REP_ERR_INVALID, null);
                    return null;
                }
                structured = true;
                reply(option, REP_ACK, null);
                return null;
            }
            case OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT -> {
                metaContext(option, data);
                return null;
            }
            case OPT_STARTTLS -> {
                if (tls.mode() == ServerTls.Mode.OFF) {
                    reply(option, REP_ERR_UNSUP, null);
                    return null;
                }
                return startTls(data);
            }
            default -> {
                reply(option, REP_ERR_UNSUP, null);
                return null;
            }
        }
    }

    /** INFO and GO: name, information requests; INFO_EXPORT always, the others when asked, then ACK. */
    private Negotiated infoOrGo(int option, ByteBuffer data) throws IOException {
        if (data.remaining() < 6) {
            reply(option, REP_ERR_INVALID, null);
            return null;
        }
        long nameLength = data.getInt() & 0xffffffffL;
        if (nameLength > data.remaining() - 2) {
            reply(option, REP_ERR_INVALID, null);
            return null;
        }
        String name = string(data, (int) nameLength);
        int requests = data.getShort() & 0xffff;
        if (data.remaining() != 2 * requests) {
            reply(option, REP_ERR_INVALID, null);
            return null;
        }
        boolean wantName = false;
        boolean wantDescription = false;
        for (int i = 0; i < requests; i++) {
            int info = data.getShort() & 0xffff;
            wantName |= info == INFO_NAME;
            wantDescription |= info == INFO_DESCRIPTION;
            blockSizeRequested |= info == INFO_BLOCK_SIZE;
        }
        Export export = find(name);
        if (export == null) {
            reply(option, REP_ERR_UNKNOWN, null);
            return null;
        }
        ByteBuffer info = ByteBuffer.allocate(12);
        info.putShort((short) INFO_EXPORT).putLong(export.sizeBytes()).putShort((short) export.transmissionFlags());
        reply(option, REP_INFO, info.flip());
        if (wantName) {
            reply(option, REP_INFO, infoString(INFO_NAME, export.name()));
        }
        if (wantDescription && !export.description().isEmpty()) {
            reply(option, REP_INFO, infoString(INFO_DESCRIPTION, export.description()));
        }
        // Always sent (the spec allows it unasked); only a client that asked is held to the maximum.
        ByteBuffer sizes = ByteBuffer.allocate(14);
        sizes.putShort((short) INFO_BLOCK_SIZE).putInt(export.minimumBlockSize()).putInt(export.preferredBlockSize())
                .putInt(export.maximumPayload());
        reply(option, REP_INFO, sizes.flip());
        reply(option, REP_ACK, null);
        return option == OPT_GO ? negotiated(export) : null;
    }

    /** LIST_META_CONTEXT and SET_META_CONTEXT for the {@code base:} namespace. */
    private void metaContext(int option, ByteBuffer data) throws IOException {
        boolean set = option == OPT_SET_META_CONTEXT;
        if (set) {
            // SET replaces the previous selection, even when it fails.
            metaExport = null;
            metaAllocation = false;
        }
        if (!structured) {
            reply(option, REP_ERR_INVALID, null);
            return;
        }
        long nameLength = data.getInt() & 0xffffffffL;
        if (nameLength > data.remaining() - 4) {
            reply(option, REP_ERR_INVALID, null);
            return;
        }
        String name = string(data, (int) nameLength);
        long queries = data.getInt() & 0xffffffffL;
        boolean allocation = !set && queries == 0;
        for (long i = 0; i < queries; i++) {
            long queryLength = data.getInt() & 0xffffffffL;
            if (queryLength > data.remaining()) {
                reply(option, REP_ERR_INVALID, null);
                return;
            }
            String query = string(data, (int) queryLength);
            if (query.indexOf(':') <= 0) {
                reply(option, REP_ERR_INVALID, null); // a query MUST start with a namespace and a colon
                return;
            }
            allocation |= query.equals(META_BASE_ALLOCATION) || (!set && query.equals("base:"));
        }
        if (data.hasRemaining()) {
            reply(option, REP_ERR_INVALID, null);
            return;
        }
        Export export = find(name);
        if (export == null) {
            reply(option, REP_ERR_UNKNOWN, null);
            return;
        }
        if (allocation) {
            byte[] context = META_BASE_ALLOCATION.getBytes(StandardCharsets.UTF_8);
            ByteBuffer out = ByteBuffer.allocate(4 + context.length);
            out.putInt(set ? ALLOCATION_CONTEXT_ID : 0).put(context).flip();
            reply(option, REP_META_CONTEXT, out);
        }
        if (set) {
            metaExport = export;
            metaAllocation = allocation;
        }
        reply(option, REP_ACK, null);
    }

    /** The result for entering transmission on {@code export}. */
    private Negotiated negotiated(Export export) {
        return new Negotiated(export, structured, structured && metaAllocation && metaExport == export,
                blockSizeRequested);
    }

    /** The export a name selects: exact match, or for the empty name "default" or else the first. */
    private Export find(String name) {
        for (Export e : exports) {
            if (e.name().equals(name)) {
                return e;
            }
        }
        if (name.isEmpty() && !exports.isEmpty()) {
            for (Export e : exports) {
                if (e.name().equals("default")) {
                    return e;
                }
            }
            return exports.get(0);
        }
        return null;
    }

    private static String string(ByteBuffer data, int length) {
        byte[] bytes = new byte[length];
        data.get(bytes);
        return new String(bytes, StandardCharsets.UTF_8);
    }

    private static ByteBuffer infoString(int type, String value) {
        byte[] bytes = value.getBytes(StandardCharsets.UTF_8);
        ByteBuffer out = ByteBuffer.allocate(2 + bytes.length);
        out.putShort((short) type).put(bytes);
        return out.flip();
    }

    /** Sends one option reply: magic, option, type, length, data. */
    private void reply(int option, int type, ByteBuffer data) throws IOException {
        int length = data == null ? 0 : data.remaining();
        ByteBuffer out = ByteBuffer.allocate(20 + length);
        out.putLong(OPTION_REPLY_MAGIC).putInt(option).putInt(type).putInt(length);
        if (data != null) {
            out.put(data);
        }
        WireIo.writeFully(channel, out.flip());
    }
}
