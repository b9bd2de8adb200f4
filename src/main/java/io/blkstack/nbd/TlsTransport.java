package io.blkstack.nbd;

import io.blkstack.kernel.Mutex;
import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLEngineResult;
import javax.net.ssl.SSLEngineResult.HandshakeStatus;
import javax.net.ssl.SSLException;

/**
 * A connection's transport after {@code STARTTLS}: the JDK's {@link SSLEngine} over the plain
 * transport underneath (the client's socket). Both ends use it: the server with a server-mode
 * engine, a remote device's client ({@code io.blkstack.remote}) with a client-mode one over its wire. Bounded memory: three buffers of the engine's fixed
 * record sizes (records in, records out, plaintext in), allocated once when the connection turns to
 * TLS and never grown; a write encrypts at most one record's plaintext per call, a read decrypts
 * one record at a time.
 *
 * <p>Tasks: the reader task reads, the writer task writes, as on the plain transport. Encrypting
 * and sending a record happen under {@link #sendLock}, so records leave in the order the engine
 * numbered them even when the reader must send one itself (a TLS 1.3 key update answered while
 * reading). {@link #shutdownInput} and {@link #close} go straight to the transport underneath, so
 * a blocked read or write ends as on a plain connection.
 */
public final class TlsTransport implements NbdTransport {

    /** Nothing to wrap: handshake and close records carry no application data. */
    private final ByteBuffer empty = ByteBuffer.allocate(0);

    private final NbdTransport plain;
    private final SSLEngine engine;
    /** Records read from the socket, not yet decrypted; kept in write mode (data in [0, position)). */
    private final ByteBuffer recordsIn;
    /** One encrypted record on its way out; used only under {@link #sendLock}. */
    private final ByteBuffer recordsOut;
    /** Decrypted bytes not yet handed to a reader; kept in read mode. */
    private final ByteBuffer plainIn;
    private final Mutex sendLock;
    private boolean inputClosed;

    private TlsTransport(NbdTransport plain, SSLEngine engine, String name) {
        this.plain = plain;
        this.engine = engine;
        int packet = engine.getSession().getPacketBufferSize();
        int application = engine.getSession().getApplicationBufferSize();
        this.recordsIn = ByteBuffer.allocateDirect(packet);
        this.recordsOut = ByteBuffer.allocateDirect(packet);
        this.plainIn = ByteBuffer.allocate(application).flip();
        this.sendLock = new Mutex(name + " tls send");
    }

    /**
     * Runs the TLS handshake over {@code plain} (on the one task that uses the connection so far:
     * the server's reader before the writer exists, the client's connecting task) and returns the
     * transport to use from then on. The engine's mode (client or server) says which side this is.
     *
     * @throws SSLException the handshake failed (the peer got an alert if one could be sent)
     * @throws EOFException the peer closed (or the handshake timer shut the input) mid-handshake
     */
    public static TlsTransport handshake(NbdTransport plain, SSLEngine engine, String name) throws IOException {
        TlsTransport tls = new TlsTransport(plain, engine, name);
        try {
            tls.runHandshake();
        } catch (SSLException e) {
            tls.sendAlert();
            throw e;
        }
        return tls;
    }

    private void runHandshake() throws IOException {
        engine.beginHandshake();
        HandshakeStatus status = engine.getHandshakeStatus();
        while (status != HandshakeStatus.FINISHED && status != HandshakeStatus.NOT_HANDSHAKING) {
            switch (status) {
                case NEED_WRAP -> status = sendRecord(empty);
                case NEED_TASK -> status = runTasks();
                case NEED_UNWRAP, NEED_UNWRAP_AGAIN -> {
                    SSLEngineResult r = unwrap();
                    if (r.getStatus() == SSLEngineResult.Status.CLOSED) {
                        throw new EOFException("TLS: the peer closed during the handshake");
                    }
                    if (r.getStatus() == SSLEngineResult.Status.BUFFER_UNDERFLOW && !fill()) {
                        throw new EOFException("TLS: the peer closed during the handshake");
                    }
                    status = r.getHandshakeStatus();
                }
                default -> throw new IllegalStateException("TLS handshake status " + status);
            }
        }
    }

    /** After a failed handshake: the engine's alert, if it has one and it can be sent; never throws. */
    private void sendAlert() {
        try {
            engine.closeOutbound();
            recordsOut.clear();
            engine.wrap(empty, recordsOut);
            recordsOut.flip();
            WireIo.writeFully(plain, recordsOut);
        } catch (IOException | RuntimeException e) {
            // the connection is going anyway
        }
    }

    /** Runs the engine's delegated tasks on this task (certificate checks: CPU only). */
    private HandshakeStatus runTasks() {
        for (Runnable task = engine.getDelegatedTask(); task != null; task = engine.getDelegatedTask()) {
            task.run();
        }
        return engine.getHandshakeStatus();
    }

    /** Decrypts what {@link #recordsIn} holds into {@link #plainIn} (which must be drained). */
    private SSLEngineResult unwrap() throws SSLException {
        plainIn.clear();
        recordsIn.flip();
        try {
            return engine.unwrap(recordsIn, plainIn);
        } finally {
            recordsIn.compact();
            plainIn.flip();
        }
    }

    /** Reads more records from the socket; false at end of stream. */
    private boolean fill() throws IOException {
        if (!recordsIn.hasRemaining()) {
            throw new SSLException("TLS record larger than " + recordsIn.capacity() + " bytes");
        }
        return plain.read(recordsIn) >= 0;
    }

    /** Encrypts up to one record of {@code src} and sends it whole; returns the engine's next handshake step. */
    private HandshakeStatus sendRecord(ByteBuffer src) throws IOException {
        recordsOut.clear();
        return sent(engine.wrap(src, recordsOut)).getHandshakeStatus();
    }

    /** Encrypts up to one record of {@code srcs[offset..offset+length)} and sends it whole. */
    private SSLEngineResult sendRecord(ByteBuffer[] srcs, int offset, int length) throws IOException {
        recordsOut.clear();
        return sent(engine.wrap(srcs, offset, length, recordsOut));
    }

    /** Sends the record a wrap just made. */
    private SSLEngineResult sent(SSLEngineResult r) throws IOException {
        if (r.getStatus() == SSLEngineResult.Status.CLOSED && r.bytesProduced() == 0) {
            throw new IOException("TLS: the connection is closed for writing");
        }
        if (r.getStatus() != SSLEngineResult.Status.OK && r.getStatus() != SSLEngineResult.Status.CLOSED) {
            throw new IllegalStateException("TLS wrap into a record buffer of " + recordsOut.capacity() + " bytes: " + r);
        }
        recordsOut.flip();
        WireIo.writeFully(plain, recordsOut);
        return r;
    }

    // ---- NbdTransport ----------------------------------------------------------------------------

    @Override
    public int read(ByteBuffer dst) throws IOException {
        if (!awaitPlaintext()) {
            return -1;
        }
        return moveTo(dst);
    }

    @Override
    public long read(ByteBuffer[] dsts, int offset, int length) throws IOException {
        if (!awaitPlaintext()) {
            return -1;
        }
        long n = 0;
        for (int i = offset; i < offset + length && plainIn.hasRemaining(); i++) {
            n += moveTo(dsts[i]);
        }
        return n;
    }

    /** Copies what fits of the decrypted bytes to {@code dst}. */
    private int moveTo(ByteBuffer dst) {
        int n = Math.min(dst.remaining(), plainIn.remaining());
        int limit = plainIn.limit();
        plainIn.limit(plainIn.position() + n);
        dst.put(plainIn);
        plainIn.limit(limit);
        return n;
    }

    /**
     * Blocks until decrypted bytes are there; false at end of stream (the peer's close_notify, or
     * the socket's end).
     */
    private boolean awaitPlaintext() throws IOException {
        while (!plainIn.hasRemaining()) {
            if (inputClosed) {
                return false;
            }
            SSLEngineResult r = recordsIn.position() == 0 ? null : unwrap();
            if (r == null || r.getStatus() == SSLEngineResult.Status.BUFFER_UNDERFLOW) {
                if (!fill()) {
                    inputClosed = true;
                    return false;
                }
                continue;
            }
            if (r.getStatus() == SSLEngineResult.Status.CLOSED) {
                inputClosed = true;
                return false;
            }
            if (r.getStatus() == SSLEngineResult.Status.BUFFER_OVERFLOW) {
                throw new IllegalStateException("TLS record larger than the engine's application buffer of "
                        + plainIn.capacity() + " bytes");
            }
            answerPostHandshake(r.getHandshakeStatus());
        }
        return true;
    }

    /** A post-handshake message (a key update) may ask for tasks or a record back. */
    private void answerPostHandshake(HandshakeStatus status) throws IOException {
        while (true) {
            switch (status) {
                case NEED_TASK -> status = runTasks();
                case NEED_WRAP -> {
                    sendLock.lock();
                    try {
                        status = sendRecord(empty);
                    } finally {
                        sendLock.unlock();
                    }
                }
                default -> {
                    return;
                }
            }
        }
    }

    @Override
    public int write(ByteBuffer src) throws IOException {
        sendLock.lock();
        try {
            return sent(engine.wrap(src, recordsOut.clear())).bytesConsumed();
        } finally {
            sendLock.unlock();
        }
    }

    @Override
    public long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
        sendLock.lock();
        try {
            return sendRecord(srcs, offset, length).bytesConsumed();
        } finally {
            sendLock.unlock();
        }
    }

    @Override
    public void shutdownInput() throws IOException {
        plain.shutdownInput();
    }

    @Override
    public void shutdownOutput() throws IOException {
        plain.shutdownOutput();
    }

    @Override
    public void close() throws IOException {
        plain.close();
    }

    @Override
    public String toString() {
        return "TLS over " + plain;
    }
}
