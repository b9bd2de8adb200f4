package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * Turns a fuzzer's bytes into what a misbehaving NBD client sends: a byte stream covering the
 * handshake and the transmission phase, and how the client leaves. The input is a little program
 * of operations (raw bytes, client flags, options with well-formed, malformed or lying data,
 * request headers with chosen flags, commands, offsets, lengths and payload mismatches, shortcuts
 * that negotiate an export), so mutations land on protocol fields rather than mostly on magic
 * numbers. Every input decodes to some stream (a short input simply ends the program), and the
 * stream is bounded ({@link #STREAM_BYTES_MAX}).
 *
 * <p>The client never names the export the well-behaved client verifies its data on
 * ({@code goodExport}): any name decoding to it is replaced, so that export's data is the
 * well-behaved client's alone, and a mismatch there is the server's fault.
 *
 * <p>{@link Builder} writes programs for the seed corpus with the same encoding.
 */
final class NbdFuzzScript {

    /** How the fuzzed client leaves once its stream is sent. */
    enum Ending {
        /** Shuts down its output (the server reads end of stream) and reads until the server closes. */
        HALF_CLOSE,
        /** Closes the socket normally. */
        CLOSE,
        /** Closes with SO_LINGER 0: the server's next read or write gets a connection reset. */
        RESET
    }

    /** Upper bound of the stream one input produces. */
    static final int STREAM_BYTES_MAX = 4 << 20;
    /** Upper bound of the WRITE payload bytes one request header is followed by. */
    static final int PAYLOAD_SENT_MAX = 256 << 10;

    static final int OP_RAW = 0;
    static final int OP_FLAGS = 1;
    static final int OP_OPTION = 2;
    static final int OP_REQUEST = 3;
    static final int OP_GO = 4;
    static final int OP_EXPORT_NAME = 5;
    static final int OP_GREET = 6;
    static final int OP_DISC = 7;
    static final int OPS = 8;

    /** Option codes an {@code OP_OPTION} byte selects (index 11: a raw int follows). */
    private static final int[] OPTIONS = {OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO,
        OPT_STRUCTURED_REPLY, OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT, 0, 11};
    /** Commands a request's command byte selects (index 9: a raw short follows). */
    private static final int[] COMMANDS = {CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE,
        CMD_WRITE_ZEROES, CMD_BLOCK_STATUS, 8};
    private static final String[] QUERIES = {META_BASE_ALLOCATION, "base:", "", "qemu:dirty-bitmap:x"};

    final byte[] stream;
    final Ending ending;

    private NbdFuzzScript(byte[] stream, Ending ending) {
        this.stream = stream;
        this.ending = ending;
    }

    /**
     * Decodes an input.
     *
     * @param exportBytes size of the export the shortcuts negotiate, for offsets near its end
     * @param maxPayload the server's advertised maximum payload, for lengths at and past it
     */
    static NbdFuzzScript decode(byte[] data, String goodExport, long exportBytes, int maxPayload) {
        Decoder d = new Decoder(data, goodExport, exportBytes, maxPayload);
        Ending ending = Ending.values()[d.u8() % Ending.values().length];
        while (d.more() && d.out.size() < STREAM_BYTES_MAX) {
            d.op();
        }
        byte[] stream = d.out.toByteArray();
        return new NbdFuzzScript(stream.length > STREAM_BYTES_MAX ? Arrays.copyOf(stream, STREAM_BYTES_MAX) : stream,
                ending);
    }

    /** Reads the program and writes the stream. Past the end of the input every byte reads as 0. */
    private static final class Decoder {
        private final ByteBuffer in;
        private final String goodExport;
        private final long exportBytes;
        private final int maxPayload;
        final ByteArrayOutputStream out = new ByteArrayOutputStream();

        Decoder(byte[] data, String goodExport, long exportBytes, int maxPayload) {
            this.in = ByteBuffer.wrap(data);
            this.goodExport = goodExport;
            this.exportBytes = exportBytes;
            this.maxPayload = maxPayload;
        }

        boolean more() {
            return in.hasRemaining();
        }

        int u8() {
            return in.hasRemaining() ? in.get() & 0xff : 0;
        }

        int u16() {
            return u8() << 8 | u8();
        }

        int s32() {
            return u16() << 16 | u16();
        }

        long s64() {
            return (long) s32() << 32 | (s32() & 0xffffffffL);
        }

        byte[] bytes(int n) {
            byte[] b = new byte[Math.min(n, in.remaining())];
            in.get(b);
            return b;
        }

        void op() {
            switch (u8() % OPS) {
                case OP_RAW -> out.writeBytes(bytes(u8()));
                case OP_FLAGS -> {
                    int b = u8();
                    putInt(switch (b & 3) {
                        case 0 -> FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;
                        case 1 -> FLAG_C_FIXED_NEWSTYLE;
                        case 2 -> 0;
                        default -> s32();
                    });
                }
                case OP_OPTION -> option();
                case OP_REQUEST -> request();
                case OP_GO -> go();
                case OP_EXPORT_NAME -> sendOption(IHAVEOPT, OPT_EXPORT_NAME, name());
                case OP_GREET -> putInt(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
                case OP_DISC -> putRequestHeader(REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0);
                default -> throw new IllegalStateException("op out of range");
            }
        }

        /** An option with well-formed, malformed, raw or lying data, maybe with a wrong magic. */
        private void option() {
            int c = u8();
            int option = c % (OPTIONS.length + 1) == OPTIONS.length ? s32() : OPTIONS[c % (OPTIONS.length + 1)];
            long magic = (c & 0x80) != 0 && (c & 0x40) != 0 ? s64() : IHAVEOPT;
            int kind = u8();
            switch (kind % 6) {
                case 0 -> sendOption(magic, option, new byte[0]);
                case 1 -> sendOption(magic, option, name());
                case 2 -> sendOption(magic, option, infoData(kind >> 3));
                case 3 -> sendOption(magic, option, metaData(kind >> 3));
                case 4 -> sendOption(magic, option, bytes(u8()));
                default -> { // the declared length differs from the data that follows
                    int declared = s32();
                    byte[] data = bytes(u8());
                    ByteBuffer b = ByteBuffer.allocate(16);
                    b.putLong(magic).putInt(option).putInt(declared);
                    out.writeBytes(b.array());
                    out.writeBytes(data);
                }
            }
        }

        /** An export name (length-prefixed by the caller as the option needs). */
        private byte[] name() {
            int choice = u8();
            byte[] name = switch (choice % 6) {
                case 0 -> "fuzz".getBytes(StandardCharsets.UTF_8);
                case 1 -> "ro".getBytes(StandardCharsets.UTF_8);
                case 2 -> new byte[0];
                case 3 -> bytes(u8());
                case 4 -> longName(choice);
                default -> "fuzz\0x".getBytes(StandardCharsets.UTF_8);
            };
            if (new String(name, StandardCharsets.UTF_8).equals(goodExport)) {
                return "fuzz".getBytes(StandardCharsets.UTF_8);
            }
            return name;
        }

        /** Names at and past the spec's 4096-byte string limit. */
        private static byte[] longName(int choice) {
            byte[] b = new byte[choice >= 128 ? STRING_BYTES_MAX : STRING_BYTES_MAX + 1];
            Arrays.fill(b, (byte) 'n');
            return b;
        }

        /** INFO / GO data: name length, name, request count, requests; sometimes a lying name length. */
        private byte[] infoData(int variant) {
            byte[] name = name();
            int count = u8() % 8;
            ByteBuffer b = ByteBuffer.allocate(4 + name.length + 2 + 2 * count);
            b.putInt((variant & 1) != 0 ? s32() : name.length).put(name).putShort((short) ((variant & 2) != 0 ? u16() : count));
            for (int i = 0; i < count; i++) {
                int k = u8();
                b.putShort((short) (k % 6 == 5 ? u16() : k % 6));
            }
            return b.array();
        }

        /** SET / LIST_META_CONTEXT data: name, query count, queries; sometimes a lying count. */
        private byte[] metaData(int variant) {
            byte[] name = name();
            int count = u8() % 5;
            ByteArrayOutputStream q = new ByteArrayOutputStream();
            for (int i = 0; i < count; i++) {
                int k = u8();
                byte[] query = k % 5 == 4 ? bytes(u8()) : QUERIES[k % 5].getBytes(StandardCharsets.UTF_8);
                q.writeBytes(ByteBuffer.allocate(4).putInt((k & 0x80) != 0 ? s32() : query.length).array());
                q.writeBytes(query);
            }
            ByteBuffer b = ByteBuffer.allocate(4 + name.length + 4 + q.size());
            b.putInt(name.length).put(name).putInt((variant & 1) != 0 ? s32() : count).put(q.toByteArray());
            return b.array();
        }

        /** GO (or INFO) on a chosen name, after optional STRUCTURED_REPLY and SET_META_CONTEXT. */
        private void go() {
            int s = u8();
            byte[] name = name();
            if ((s & 1) != 0) {
                sendOption(IHAVEOPT, OPT_STRUCTURED_REPLY, new byte[0]);
            }
            if ((s & 2) != 0) {
                byte[] q = META_BASE_ALLOCATION.getBytes(StandardCharsets.UTF_8);
                ByteBuffer b = ByteBuffer.allocate(4 + name.length + 4 + 4 + q.length);
                b.putInt(name.length).put(name).putInt(1).putInt(q.length).put(q);
                sendOption(IHAVEOPT, OPT_SET_META_CONTEXT, b.array());
            }
            boolean blockSizes = (s & 4) == 0;
            ByteBuffer b = ByteBuffer.allocate(4 + name.length + 2 + (blockSizes ? 2 : 0));
            b.putInt(name.length).put(name).putShort((short) (blockSizes ? 1 : 0));
            if (blockSizes) {
                b.putShort((short) INFO_BLOCK_SIZE);
            }
            sendOption(IHAVEOPT, (s & 8) != 0 ? OPT_INFO : OPT_GO, b.array());
        }

        /** A request header with chosen fields, and for WRITE a full, partial or missing payload. */
        private void request() {
            int f = u8();
            int flags = (f & 0x80) != 0 ? u16() : f & 0x1f;
            int magic = (f & 0x40) != 0 && (f & 0x20) != 0 ? s32() : REQUEST_MAGIC;
            int c = u8() % (COMMANDS.length + 1);
            int command = c == COMMANDS.length ? u16() : COMMANDS[c];
            long cookie = u8();
            long offset = offset();
            long length = length();
            putRequestHeader(magic, flags, command, cookie, offset, length);
            if (command == CMD_WRITE) {
                int p = u8();
                long sent = switch (p % 3) {
                    case 0 -> Math.min(length, PAYLOAD_SENT_MAX);
                    case 1 -> Math.min(length, (long) u8() * 16);
                    default -> 0;
                };
                for (long i = 0; i < sent; i++) {
                    out.write((int) (i * 31 + cookie));
                }
            }
        }

        private long offset() {
            int k = u8();
            return switch (k % 8) {
                case 0 -> (long) u8() * 4096;
                case 1 -> (long) u8() * 512;
                case 2 -> s32() & 0xffffffffL;
                case 3 -> exportBytes - 4096;
                case 4 -> exportBytes;
                case 5 -> s64();
                case 6 -> u8();
                default -> exportBytes - u8();
            };
        }

        private long length() {
            int k = u8();
            return switch (k % 8) {
                case 0 -> 4096L * (1 + u8() % 16);
                case 1 -> 512L * u8();
                case 2 -> 0;
                case 3 -> u8();
                case 4 -> maxPayload;
                case 5 -> maxPayload + 1L;
                case 6 -> 0xffffffffL;
                default -> s32() & 0xffffffffL;
            };
        }

        private void sendOption(long magic, int option, byte[] data) {
            ByteBuffer b = ByteBuffer.allocate(16 + data.length);
            b.putLong(magic).putInt(option).putInt(data.length).put(data);
            out.writeBytes(b.array());
        }

        private void putRequestHeader(int magic, int flags, int command, long cookie, long offset, long length) {
            ByteBuffer h = ByteBuffer.allocate(REQUEST_HEADER_BYTES);
            h.putInt(magic).putShort((short) flags).putShort((short) command).putLong(cookie).putLong(offset)
                    .putInt((int) length);
            out.writeBytes(h.array());
        }

        private void putInt(int v) {
            out.writeBytes(ByteBuffer.allocate(4).putInt(v).array());
        }
    }

    /** Writes programs in the decoder's encoding, for the seed corpus. */
    static final class Builder {
        private final ByteArrayOutputStream out = new ByteArrayOutputStream();

        Builder(Ending ending) {
            out.write(ending.ordinal());
        }

        private Builder b(int... values) {
            for (int v : values) {
                out.write(v);
            }
            return this;
        }

        /** Fixed newstyle with no zeroes. */
        Builder greet() {
            return b(OP_GREET);
        }

        /** Client flags: 0 both, 1 fixed newstyle only, 2 none. */
        Builder flags(int choice) {
            return b(OP_FLAGS, choice);
        }

        /** Client flags given in full. */
        Builder rawFlags(int flags) {
            return b(OP_FLAGS, 3).int32(flags);
        }

        /**
         * GO on a name (0 "fuzz", 1 "ro", 2 "", 5 "fuzz\0x"), with structured replies and
         * base:allocation if asked, without INFO_BLOCK_SIZE if asked, or INFO instead of GO.
         */
        Builder go(int name, boolean structured, boolean meta, boolean noBlockSizes, boolean info) {
            return b(OP_GO, (structured ? 1 : 0) | (meta ? 2 : 0) | (noBlockSizes ? 4 : 0) | (info ? 8 : 0), name);
        }

        Builder exportName(int name) {
            return b(OP_EXPORT_NAME, name);
        }

        /** An option (index into the decoder's table) with data kind 0 (none), 1 (name), 2 (info) or 3 (meta), more bytes after. */
        Builder option(int optionIndex, int kind, int... more) {
            return b(OP_OPTION, optionIndex, kind).b(more);
        }

        /** An option whose declared length is {@code declared} but is followed by {@code actual} bytes. */
        Builder lyingOption(int optionIndex, int declared, int actual) {
            b(OP_OPTION, optionIndex, 5).int32(declared).b(actual);
            for (int i = 0; i < actual; i++) {
                out.write(i);
            }
            return this;
        }

        /**
         * A request: flags (low 5 bits), command index, cookie, offset kind and its byte, length
         * kind and its byte, and for a WRITE the payload mode (0 full, 1 {@code 16 * partial}
         * bytes, 2 none).
         */
        Builder request(int flags, int command, int cookie, int offsetKind, int offsetByte, int lengthKind,
                int lengthByte, int payloadMode, int partial) {
            b(OP_REQUEST, flags & 0x1f, command, cookie, offsetKind);
            if (offsetKind % 8 != 3 && offsetKind % 8 != 4) {
                b(offsetByte);
            }
            b(lengthKind);
            if (lengthKind % 8 == 0 || lengthKind % 8 == 1 || lengthKind % 8 == 3) {
                b(lengthByte);
            }
            if (command == CMD_WRITE) {
                b(payloadMode);
                if (payloadMode == 1) {
                    b(partial);
                }
            }
            return this;
        }

        /** A request with a raw command number. */
        Builder rawCommand(int command, int cookie) {
            return b(OP_REQUEST, 0, COMMANDS.length).int16(command).b(cookie, 0, 0, 2);
        }

        /** A request header with a wrong magic. */
        Builder badRequestMagic(int magic) {
            return b(OP_REQUEST, 0x60).int32(magic).b(0, 1, 0, 0, 0, 0);
        }

        Builder disc() {
            return b(OP_DISC);
        }

        Builder raw(byte... data) {
            b(OP_RAW, data.length);
            out.writeBytes(data);
            return this;
        }

        private Builder int16(int v) {
            return b(v >>> 8 & 0xff, v & 0xff);
        }

        private Builder int32(int v) {
            return int16(v >>> 16).int16(v & 0xffff);
        }

        byte[] build() {
            return out.toByteArray();
        }
    }
}
