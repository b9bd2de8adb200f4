package io.blkstack.remote;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.StandardSocketOptions;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;

/**
 * How a remote device reaches its server: the device's "cable". The real one is a blocking socket
 * ({@link #socket}); a simulated server (for the checker) supplies its own {@link Wire}s, so the
 * client's code is the same either way.
 */
public interface NbdTransport {

    /** Opens a new connection; a TCP connect gives up after {@code timeoutNanos}. */
    Wire connect(long timeoutNanos) throws IOException;

    /** Where it connects, for messages. */
    String describe();

    /**
     * One connection. Reads and writes block the calling task like device I/O; {@link #cut} makes a
     * blocked or later read or write fail at once and never blocks itself (timers call it).
     */
    interface Wire extends AutoCloseable {
        /** Reads some bytes into {@code buffer}; -1 at end of stream. */
        int read(ByteBuffer buffer) throws IOException;

        /** Scatter read; -1 at end of stream. */
        long read(ByteBuffer[] buffers, int offset, int length) throws IOException;

        /** Writes some bytes of {@code buffer}. */
        int write(ByteBuffer buffer) throws IOException;

        /** Gather write. */
        long write(ByteBuffer[] buffers, int offset, int length) throws IOException;

        /** Ends both directions now, without waiting for blocked readers or writers. */
        void cut();

        /** Releases the connection; called only when no task reads or writes it any more. */
        @Override
        void close();
    }

    /** Connects to {@code address} (TCP or Unix domain) with blocking socket channels. */
    static NbdTransport socket(SocketAddress address) {
        return new NbdTransport() {
            @Override
            public Wire connect(long timeoutNanos) throws IOException {
                SocketChannel channel;
                if (address instanceof UnixDomainSocketAddress unix) {
                    channel = SocketChannel.open(unix);
                } else {
                    InetSocketAddress inet = (InetSocketAddress) address;
                    InetSocketAddress resolved = inet.isUnresolved()
                            ? new InetSocketAddress(inet.getHostString(), inet.getPort()) : inet;
                    channel = SocketChannel.open();
                    try {
                        int millis = (int) Math.max(1, Math.min(Integer.MAX_VALUE, timeoutNanos / 1_000_000));
                        channel.socket().connect(resolved, millis);
                        channel.setOption(StandardSocketOptions.TCP_NODELAY, true);
                    } catch (IOException | RuntimeException e) {
                        channel.close();
                        throw e;
                    }
                }
                return new SocketWire(channel);
            }

            @Override
            public String describe() {
                return address.toString();
            }
        };
    }

    /** A wire over a blocking socket channel. */
    final class SocketWire implements Wire {
        private final SocketChannel channel;

        SocketWire(SocketChannel channel) {
            this.channel = channel;
        }

        @Override
        public int read(ByteBuffer buffer) throws IOException {
            return channel.read(buffer);
        }

        @Override
        public long read(ByteBuffer[] buffers, int offset, int length) throws IOException {
            return channel.read(buffers, offset, length);
        }

        @Override
        public int write(ByteBuffer buffer) throws IOException {
            return channel.write(buffer);
        }

        @Override
        public long write(ByteBuffer[] buffers, int offset, int length) throws IOException {
            return channel.write(buffers, offset, length);
        }

        @Override
        public void cut() {
            // shutdown signals blocked threads and returns; close() would wait for them
            try {
                channel.shutdownInput();
            } catch (IOException e) {
                // already closed
            }
            try {
                channel.shutdownOutput();
            } catch (IOException e) {
                // already closed
            }
        }

        @Override
        public void close() {
            try {
                channel.close();
            } catch (IOException e) {
                // nothing left to release
            }
        }
    }
}
