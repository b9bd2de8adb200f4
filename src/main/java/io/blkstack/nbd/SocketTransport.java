package io.blkstack.nbd;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;

/** A connection's transport over a blocking TCP socket: every call goes straight to the channel. */
final class SocketTransport implements NbdTransport {

    private final SocketChannel channel;

    SocketTransport(SocketChannel channel) {
        if (channel == null || !channel.isBlocking()) {
            throw new IllegalArgumentException("socket transport needs a blocking channel, got " + channel);
        }
        this.channel = channel;
    }

    @Override
    public int read(ByteBuffer dst) throws IOException {
        return channel.read(dst);
    }

    @Override
    public long read(ByteBuffer[] dsts, int offset, int length) throws IOException {
        return channel.read(dsts, offset, length);
    }

    @Override
    public int write(ByteBuffer src) throws IOException {
        return channel.write(src);
    }

    @Override
    public long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
        return channel.write(srcs, offset, length);
    }

    @Override
    public void shutdownInput() throws IOException {
        channel.shutdownInput();
    }

    @Override
    public void shutdownOutput() throws IOException {
        channel.shutdownOutput();
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }

    /** The socket, as the target of {@code FileChannel.transferTo} (reads by reference). */
    SocketChannel channel() {
        return channel;
    }

    @Override
    public String toString() {
        return "socket transport " + channel;
    }
}
