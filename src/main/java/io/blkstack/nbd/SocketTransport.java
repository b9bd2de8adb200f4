package io.blkstack.nbd;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Function;

/**
 * A connection's transport over a blocking socket (TCP or Unix): every call goes straight to the
 * channel, except {@link #writeNow}, which goes through the socket's own {@link SendNow} where
 * this JVM allows one.
 */
final class SocketTransport implements NbdTransport {

    private final SocketChannel channel;
    /**
     * The non-waiting sender on a duplicate of the socket once {@link #enableWriteNow} made one,
     * {@link #RETIRED} once {@link #close} ran, else null.
     */
    private final AtomicReference<Object> now = new AtomicReference<>();
    private static final String RETIRED = "retired";

    /** Makes the sender in {@link #enableWriteNow}: {@link SendNow#open}, or a test's stand-in. */
    private final Function<SocketChannel, SendNow> opener;

    SocketTransport(SocketChannel channel) {
        this(channel, SendNow::open);
    }

    /**
     * A transport whose {@link #enableWriteNow} opens its sender with {@code opener}: tests use it
     * to close the transport between the sender's open and its publication.
     */
    SocketTransport(SocketChannel channel, Function<SocketChannel, SendNow> opener) {
        if (channel == null || !channel.isBlocking()) {
            throw new IllegalArgumentException("socket transport needs a blocking channel, got " + channel);
        }
        this.channel = channel;
        this.opener = opener;
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

    /**
     * Makes the socket's non-waiting sender. Its duplicate is taken while the channel is open: the
     * sender is published before {@link #close} retires it, and close retires it before it closes
     * the channel, so a duplicate that could name another socket (taken after the close) is never
     * published, and one that is published is closed before the channel's number can be reused.
     */
    @Override
    public boolean enableWriteNow() {
        SendNow sender = opener.apply(channel);
        if (sender == null) {
            return false;
        }
        if (!now.compareAndSet(null, sender)) {
            sender.close(); // closed meanwhile (or enabled twice): never used
            return now.get() instanceof SendNow;
        }
        return true;
    }

    @Override
    public long writeNow(ByteBuffer[] srcs, int offset, int length) throws IOException {
        return now.get() instanceof SendNow sender ? sender.send(srcs, offset, length) : -1;
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
        if (now.getAndSet(RETIRED) instanceof SendNow sender) {
            sender.close(); // first: see enableWriteNow
        }
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
