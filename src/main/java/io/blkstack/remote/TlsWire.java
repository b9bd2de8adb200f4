package io.blkstack.remote;

import io.blkstack.nbd.TlsTransport;
import java.io.IOException;
import java.nio.ByteBuffer;
import javax.net.ssl.SSLEngine;

/**
 * A remote connection after {@code NBD_OPT_STARTTLS}: the server's own TLS engine
 * ({@link TlsTransport}, the JDK's {@code SSLEngine} in fixed record buffers made once per
 * connection) run in client mode over the plain wire. Reads and writes block only where the plain
 * wire does (and on the engine's send lock, a kernel mutex); {@link #cut} and {@link #close} go
 * straight to the plain wire, so a timer's cut ends a blocked TLS read or write as it ends a plain one.
 */
final class TlsWire implements NbdTransport.Wire {

    private final NbdTransport.Wire plain;
    private final TlsTransport tls;

    private TlsWire(NbdTransport.Wire plain, TlsTransport tls) {
        this.plain = plain;
        this.tls = tls;
    }

    /**
     * Runs the TLS handshake over {@code plain} on the calling task (bounded by the caller's timer,
     * which cuts the plain wire) and returns the encrypted wire.
     *
     * @throws javax.net.ssl.SSLException the handshake failed
     */
    static TlsWire handshake(NbdTransport.Wire plain, SSLEngine engine, String name) throws IOException {
        return new TlsWire(plain, TlsTransport.handshake(new Plain(plain), engine, name));
    }

    @Override
    public int read(ByteBuffer buffer) throws IOException {
        return tls.read(buffer);
    }

    @Override
    public long read(ByteBuffer[] buffers, int offset, int length) throws IOException {
        return tls.read(buffers, offset, length);
    }

    @Override
    public int write(ByteBuffer buffer) throws IOException {
        return tls.write(buffer);
    }

    @Override
    public long write(ByteBuffer[] buffers, int offset, int length) throws IOException {
        return tls.write(buffers, offset, length);
    }

    @Override
    public void cut() {
        plain.cut();
    }

    @Override
    public void close() {
        plain.close();
    }

    @Override
    public String toString() {
        return "TLS over " + plain;
    }

    /** The plain wire as the TLS engine's transport underneath. */
    private record Plain(NbdTransport.Wire wire) implements io.blkstack.nbd.NbdTransport {
        @Override
        public int read(ByteBuffer dst) throws IOException {
            return wire.read(dst);
        }

        @Override
        public long read(ByteBuffer[] dsts, int offset, int length) throws IOException {
            return wire.read(dsts, offset, length);
        }

        @Override
        public int write(ByteBuffer src) throws IOException {
            return wire.write(src);
        }

        @Override
        public long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
            return wire.write(srcs, offset, length);
        }

        @Override
        public void shutdownInput() {
            wire.cut();
        }

        @Override
        public void shutdownOutput() {
            wire.cut();
        }

        @Override
        public void close() {
            wire.close();
        }
    }
}
