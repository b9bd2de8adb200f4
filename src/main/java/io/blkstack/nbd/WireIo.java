package io.blkstack.nbd;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * Whole-buffer reads and writes on a connection's {@link NbdTransport} (its "hardware").
 * A short read at end of stream is an {@link EOFException}, so a client vanishing mid-message is
 * one exception type for the caller.
 */
final class WireIo {

    private WireIo() {
    }

    /** Fills the buffer's remaining bytes; EOF before the first byte returns false, later throws. */
    static boolean readFullyOrEof(NbdTransport channel, ByteBuffer buffer) throws IOException {
        boolean first = true;
        while (buffer.hasRemaining()) {
            int n = channel.read(buffer);
            if (n < 0) {
                if (first) {
                    return false;
                }
                throw new EOFException("peer closed with " + buffer.remaining() + " byte(s) of a message unread");
            }
            if (n > 0) {
                first = false;
            }
        }
        return true;
    }

    /** Fills the buffer's remaining bytes or throws {@link EOFException}. */
    static void readFully(NbdTransport channel, ByteBuffer buffer) throws IOException {
        if (!readFullyOrEof(channel, buffer) && buffer.hasRemaining()) {
            throw new EOFException("peer closed before a message of " + buffer.remaining() + " byte(s)");
        }
    }

    /** Fills every buffer of a scatter array (from index 0 to count) or throws {@link EOFException}. */
    static void readFully(NbdTransport channel, ByteBuffer[] buffers, int count) throws IOException {
        int idx = 0;
        while (idx < count) {
            if (!buffers[idx].hasRemaining()) {
                idx++;
                continue;
            }
            long n = channel.read(buffers, idx, count - idx);
            if (n < 0) {
                throw new EOFException("peer closed in the middle of a payload");
            }
        }
    }

    /** Writes the buffer's remaining bytes. */
    static void writeFully(NbdTransport channel, ByteBuffer buffer) throws IOException {
        while (buffer.hasRemaining()) {
            channel.write(buffer);
        }
    }

    /** Writes every buffer of a gather array (from index 0 to count). */
    static void writeFully(NbdTransport channel, ByteBuffer[] buffers, int count) throws IOException {
        writeFully(channel, buffers, 0, count);
    }

    /** Writes every buffer of {@code buffers[from..to)}. */
    static void writeFully(NbdTransport channel, ByteBuffer[] buffers, int from, int to) throws IOException {
        int idx = from;
        while (idx < to) {
            if (!buffers[idx].hasRemaining()) {
                idx++;
                continue;
            }
            channel.write(buffers, idx, to - idx);
        }
    }

    /** Reads and drops {@code bytes} through a scratch buffer, storing nothing. */
    static void skip(NbdTransport channel, ByteBuffer scratch, long bytes) throws IOException {
        long left = bytes;
        while (left > 0) {
            scratch.clear().limit((int) Math.min(scratch.capacity(), left));
            readFully(channel, scratch);
            left -= scratch.limit();
        }
    }
}
