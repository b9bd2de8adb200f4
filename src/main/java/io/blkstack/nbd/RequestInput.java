package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.CMD_DISC;
import static io.blkstack.nbd.NbdProtocol.REQUEST_HEADER_BYTES;
import static io.blkstack.nbd.NbdProtocol.REQUEST_MAGIC;

import io.blkstack.kernel.Task;
import java.io.EOFException;
import java.io.IOException;
import java.net.ProtocolException;
import java.nio.ByteBuffer;

/**
 * The reader's side of the wire: request headers and payloads from the connection's transport.
 *
 * <p>Input is buffered ({@link #INPUT_BYTES}), so one read brings in many small requests; a large
 * payload remainder bypasses the buffer and is read straight into the request's pages. A refused
 * WRITE's payload is skipped through a fixed scratch buffer, never stored. Used by the reader task
 * only.
 *
 * <p>The reader works plugged (its requests reach the device queues before their I/O tasks are
 * woken); every read from the transport first flushes the plug, since a socket read blocks outside
 * the kernel primitives and so does not flush it by itself.
 */
final class RequestInput {

    /** Bytes of the input buffer; larger payload remainders bypass it. */
    static final int INPUT_BYTES = 64 * 1024;
    /** The largest refused WRITE payload skipped instead of closing the connection. */
    static final long SKIP_MAX = 2L * NbdProtocol.DEFAULT_MAX_PAYLOAD;
    /** Bytes of the scratch buffer a refused payload is skipped through. */
    private static final int SKIP_SCRATCH_BYTES = 64 * 1024;

    private final NbdTransport transport;
    private final ConnectionTimers timers;
    /** Buffered input, in read mode. */
    private final ByteBuffer input = ByteBuffer.allocateDirect(INPUT_BYTES).flip();
    private final ByteBuffer skipScratch = ByteBuffer.allocateDirect(SKIP_SCRATCH_BYTES);
    /** What runs before every read from the transport, or null ({@link #sendBeforeRead}). */
    private Runnable beforeRead;

    RequestInput(NbdTransport transport, ConnectionTimers timers) {
        this.transport = transport;
        this.timers = timers;
    }

    /**
     * Reads a request header into the slot; false for end of stream or DISC.
     *
     * @throws ProtocolException for a wrong magic (garbage: the connection ends)
     */
    boolean readHeader(NbdRequest r) throws IOException {
        timers.awaitingRequest(true);
        boolean arrived;
        try {
            arrived = fillInput(REQUEST_HEADER_BYTES);
        } finally {
            timers.awaitingRequest(false);
        }
        if (!arrived) {
            return false;
        }
        timers.noteActivity();
        ByteBuffer h = input;
        int magic = h.getInt();
        if (magic != REQUEST_MAGIC) {
            // garbage: a hard disconnect of this connection only, said in the log
            throw new ProtocolException("a request with magic 0x" + Integer.toHexString(magic) + ", not NBD_REQUEST_MAGIC");
        }
        int flags = h.getShort() & 0xffff;
        int command = h.getShort() & 0xffff;
        long cookie = h.getLong();
        long offset = h.getLong();
        long length = h.getInt() & 0xffffffffL;
        if (command == CMD_DISC) {
            return false; // in-flight requests finish, then the writer closes
        }
        r.init(cookie, command, flags, offset, length);
        return true;
    }

    /**
     * Makes at least {@code bytes} bytes available in the input buffer, reading as much as the
     * transport has; false if the stream ends before the first of them, EOF exception if in between.
     */
    private boolean fillInput(int bytes) throws IOException {
        while (input.remaining() < bytes) {
            int before = input.remaining();
            input.compact();
            int n;
            try {
                unplug();
                n = transport.read(input);
            } finally {
                input.flip();
            }
            if (n < 0) {
                if (before == 0) {
                    return false;
                }
                throw new EOFException("peer closed with " + (bytes - before) + " byte(s) of a message unread");
            }
        }
        return true;
    }

    /**
     * Fills {@code buffers[0..count)} (holding {@code bytes} bytes in all) with payload: first
     * from the input buffer, then straight from the transport if much is left, else through the
     * input buffer again (so the next headers come in with the tail of this payload).
     */
    void readPayload(ByteBuffer[] buffers, int count, long bytes) throws IOException {
        timers.receiving(true); // a client that stops sending mid-payload holds its pages: the reply timeout cuts it
        try {
            readPayloadBuffers(buffers, count, bytes);
        } finally {
            timers.receiving(false);
        }
    }

    private void readPayloadBuffers(ByteBuffer[] buffers, int count, long bytes) throws IOException {
        long left = bytes;
        int idx = 0;
        while (idx < count) {
            ByteBuffer dst = buffers[idx];
            if (!dst.hasRemaining()) {
                idx++;
                continue;
            }
            if (input.hasRemaining()) {
                int k = Math.min(input.remaining(), dst.remaining());
                int limit = input.limit();
                input.limit(input.position() + k);
                dst.put(input);
                input.limit(limit);
                left -= k;
                continue;
            }
            long n;
            unplug();
            if (left >= INPUT_BYTES / 2) {
                n = transport.read(buffers, idx, count - idx);
                if (n > 0) {
                    left -= n;
                }
            } else {
                input.clear();
                try {
                    n = transport.read(input);
                } finally {
                    input.flip();
                }
            }
            if (n < 0) {
                throw new EOFException("peer closed in the middle of a payload");
            }
            timers.noteReceiveProgress();
        }
    }

    /**
     * Skips a refused WRITE's payload; false if it is too long to skip (the connection then
     * closes: the spec allows a hard disconnect for a payload large enough to be a denial of
     * service) or the stream failed or ended.
     */
    boolean skipPayload(long length) {
        if (length > SKIP_MAX) {
            return false;
        }
        try {
            int buffered = (int) Math.min(input.remaining(), length);
            input.position(input.position() + buffered);
            unplug();
            WireIo.skip(transport, skipScratch, length - buffered);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /**
     * Before every read from the transport: the reader sends the replies that are ready, if it
     * may ({@link #sendBeforeRead}), then delivers the wake-ups its plug held back (device queues,
     * and the writer's for what is left).
     */
    private void unplug() {
        if (beforeRead != null) {
            beforeRead.run();
        }
        Task.current().plug().flush();
    }

    /** Runs {@code send} before every read from the transport (the reader's inline replies). */
    void sendBeforeRead(Runnable send) {
        this.beforeRead = send;
    }
}
