package io.blkstack.nbd;

import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * The byte stream one NBD connection reads requests from and writes replies to: its "hardware".
 * For {@code serve} it is the client's TCP socket ({@link SocketTransport}); the checker plugs in
 * an in-process pipe built on kernel waits, so the whole request path (parsing, validation, payload
 * budget, bio set, replies) runs under the deterministic scheduler.
 *
 * <p>The contract is the blocking {@link java.nio.channels.SocketChannel}'s, cut to what a
 * connection uses: a read blocks until at least one byte arrived and returns -1 at end of stream;
 * a write blocks until it moved at least one byte; {@link #shutdownInput} makes a blocked or later
 * read return end of stream, {@link #close} makes blocked and later reads and writes fail. The
 * scatter and gather forms take the caller's arrays as they are, so the hot path neither copies
 * nor allocates for them. Implementations that block outside the kernel primitives (a socket) are
 * "hardware" as device I/O is; an in-process one must block only through kernel primitives.
 *
 * <p>Public so that a remote device's client can run {@link TlsTransport} over its own wire: one
 * TLS engine serves both ends of the protocol.
 */
public interface NbdTransport {

    /** Reads into {@code dst}; the count read, or -1 at end of stream. */
    int read(ByteBuffer dst) throws IOException;

    /** Reads into {@code dsts[offset..offset+length)} in order; the count read, or -1 at end of stream. */
    long read(ByteBuffer[] dsts, int offset, int length) throws IOException;

    /** Writes from {@code src}; the count written. */
    int write(ByteBuffer src) throws IOException;

    /** Writes from {@code srcs[offset..offset+length)} in order; the count written. */
    long write(ByteBuffer[] srcs, int offset, int length) throws IOException;

    /**
     * Prepares {@link #writeNow}; whether it can move bytes at all: a socket whose descriptor this
     * JVM can send on without waiting, or an in-process pipe; not TLS (its records go out through
     * one engine). Called once, by the connection's reader, when transmission begins.
     */
    default boolean enableWriteNow() {
        return false;
    }

    /**
     * Writes from {@code srcs[offset..offset+length)} what the transport takes without waiting
     * (never blocks); the count written (0 when it would have to wait), or -1 when this transport
     * cannot write without waiting (or not these buffers), the bytes untouched. The connection's
     * reader sends ready replies with it before it blocks on a read.
     */
    default long writeNow(ByteBuffer[] srcs, int offset, int length) throws IOException {
        return -1;
    }

    /** Ends input: a blocked read and every later read see end of stream. Never blocks. */
    void shutdownInput() throws IOException;

    /** Ends output: the peer sees end of stream once it has read what was written. Never blocks. */
    void shutdownOutput() throws IOException;

    /** Closes both directions: blocked and later reads and writes fail. Never blocks; idempotent. */
    void close() throws IOException;
}
