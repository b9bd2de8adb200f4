package io.blkstack.remote;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;

/** Whole-buffer reads and writes on a {@link NbdTransport.Wire}; end of stream mid-message is an {@link EOFException}. */
final class WireBytes {

    private WireBytes() {
    }

    /** Fills the buffer's remaining bytes or throws. */
    static void readFully(NbdTransport.Wire wire, ByteBuffer buffer) throws IOException {
        while (buffer.hasRemaining()) {
            if (wire.read(buffer) < 0) {
                throw new EOFException("server closed the connection with " + buffer.remaining()
                        + " byte(s) of a message unread");
            }
        }
    }

    /** Fills every buffer of {@code buffers[0..count)} or throws. */
    static void readFully(NbdTransport.Wire wire, ByteBuffer[] buffers, int count) throws IOException {
        int idx = 0;
        while (idx < count) {
            if (!buffers[idx].hasRemaining()) {
                idx++;
                continue;
            }
            if (wire.read(buffers, idx, count - idx) < 0) {
                throw new EOFException("server closed the connection in the middle of a payload");
            }
        }
    }

    /** Writes the buffer's remaining bytes. */
    static void writeFully(NbdTransport.Wire wire, ByteBuffer buffer) throws IOException {
        while (buffer.hasRemaining()) {
            wire.write(buffer);
        }
    }

    /** Writes every buffer of {@code buffers[0..count)}. */
    static void writeFully(NbdTransport.Wire wire, ByteBuffer[] buffers, int count) throws IOException {
        int idx = 0;
        while (idx < count) {
            if (!buffers[idx].hasRemaining()) {
                idx++;
                continue;
            }
            wire.write(buffers, idx, count - idx);
        }
    }

    /** Reads and drops {@code bytes} through {@code scratch}. */
    static void skip(NbdTransport.Wire wire, ByteBuffer scratch, long bytes) throws IOException {
        for (long left = bytes; left > 0; ) {
            scratch.clear().limit((int) Math.min(scratch.capacity(), left));
            readFully(wire, scratch);
            left -= scratch.limit();
        }
    }
}
