package io.blkstack.nbd;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * The client end of an in-process NBD connection ({@link NbdServer#connectInProcess}): the
 * connection's reader and writer run exactly as for a TCP client, but read requests from and
 * write replies to two {@link BytePipe}s instead of a socket, so every wait on the way is a kernel
 * wait. The checker drives the NBD request path through it (payload budget, bio set, replies)
 * under its deterministic scheduler.
 *
 * <p>The connection starts in transmission (no handshake), with simple replies and no metadata
 * context, as a client that never asked for the block sizes: a READ or WRITE longer than the
 * export's maximum payload is served in windows. Calls must come from kernel tasks; one task sends
 * and one reads replies (they may be the same).
 */
public final class InProcessClient {

    /** Bytes each direction buffers. */
    static final int PIPE_BYTES = 64 * 1024;

    private final BytePipe requests;
    private final BytePipe replies;
    private final NbdTransport serverEnd;
    private final Export export;
    private NbdConnection connection;

    InProcessClient(String name, Export export) {
        this.export = export;
        this.requests = new BytePipe(name + " requests", PIPE_BYTES);
        this.replies = new BytePipe(name + " replies", PIPE_BYTES);
        this.serverEnd = new ServerEnd();
    }

    /** The transport the server's connection uses. */
    NbdTransport serverEnd() {
        return serverEnd;
    }

    void attach(NbdConnection value) {
        this.connection = value;
    }

    /** The export as served (its maximum payload may have been lowered to the budget). */
    public Export export() {
        return export;
    }

    /** Sends every remaining byte of {@code buffer} (waits while the server does not read). */
    public void send(ByteBuffer buffer) throws IOException {
        ByteBuffer[] one = {buffer};
        while (buffer.hasRemaining()) {
            requests.write(one, 0, 1);
        }
    }

    /** Fills {@code buffer} from the replies, or throws {@link EOFException} if the connection ends first. */
    public void receive(ByteBuffer buffer) throws IOException {
        ByteBuffer[] one = {buffer};
        while (buffer.hasRemaining()) {
            if (replies.read(one, 0, 1) < 0) {
                throw new EOFException("nbd in-process connection ended with " + buffer.remaining()
                        + " byte(s) of a reply unread");
            }
        }
    }

    /** Ends the request stream (the server's reader sees end of stream, finishes and closes). */
    public void shutdownOutput() {
        requests.closeWrite();
    }

    /** Waits until the server has finished the connection (every reply sent or dropped, budget back). */
    public void awaitEnd() {
        connection.done.await();
    }

    /** Whether {@code transport} is the server's end of an in-process client (plain bytes, like a socket). */
    static boolean isServerEnd(NbdTransport transport) {
        return transport instanceof ServerEnd;
    }

    /** The server's side of the two pipes. */
    private final class ServerEnd implements NbdTransport {

        /** One buffer as an array, for the reader task's single reads (no allocation per read). */
        private final ByteBuffer[] readOne = new ByteBuffer[1];
        /** The same for the writer task's single writes. */
        private final ByteBuffer[] writeOne = new ByteBuffer[1];

        @Override
        public int read(ByteBuffer dst) throws IOException {
            readOne[0] = dst;
            try {
                return (int) requests.read(readOne, 0, 1);
            } finally {
                readOne[0] = null;
            }
        }

        @Override
        public long read(ByteBuffer[] dsts, int offset, int length) throws IOException {
            return requests.read(dsts, offset, length);
        }

        @Override
        public int write(ByteBuffer src) throws IOException {
            writeOne[0] = src;
            try {
                return (int) replies.write(writeOne, 0, 1);
            } finally {
                writeOne[0] = null;
            }
        }

        @Override
        public long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
            return replies.write(srcs, offset, length);
        }

        @Override
        public boolean enableWriteNow() {
            return true;
        }

        @Override
        public long writeNow(ByteBuffer[] srcs, int offset, int length) throws IOException {
            return replies.writeNow(srcs, offset, length);
        }

        @Override
        public void shutdownInput() {
            requests.shutdownRead();
        }

        @Override
        public void shutdownOutput() {
            replies.closeWrite();
        }

        @Override
        public void close() {
            requests.close();
            replies.closeWrite();
        }
    }
}
