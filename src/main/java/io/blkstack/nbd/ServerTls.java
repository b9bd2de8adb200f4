package io.blkstack.nbd;

import java.io.IOException;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import javax.net.ssl.KeyManager;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManager;

/**
 * The server's TLS settings (NBD {@code STARTTLS} with X.509): the mode, and the JDK
 * {@link SSLContext} built from PEM files read with BouncyCastle's PKIX ({@link Pem}).
 * Every connection that asks for TLS gets its own {@link SSLEngine} from it, TLS 1.3 or 1.2; with a
 * CA the server requires a client certificate signed by it.
 *
 * <p>Modes, as the NBD spec names them: {@link Mode#OFF} (no TLS: {@code STARTTLS} is
 * unsupported), {@link Mode#ON} (TLS offered, plain clients still served) and
 * {@link Mode#REQUIRE} (every option but {@code STARTTLS} and {@code ABORT} before TLS gets
 * {@code NBD_REP_ERR_TLS_REQD}).
 */
public final class ServerTls {

    /** Whether and how TLS is offered. */
    public enum Mode { OFF, ON, REQUIRE }

    /** No TLS. */
    public static final ServerTls OFF = new ServerTls(Mode.OFF, null, false);
    /**
     * The protocols offered, newest first. The NBD spec: implementations "MUST support TLS version
     * 1.2, SHOULD support any later versions" and should not offer older ones by default. Clients
     * that offer only 1.2 exist (the NBD project's own, through GnuTLS with
     * {@code NORMAL:-VERS-TLS-ALL:+VERS-TLS1.2}, whose {@code tls} tests failed here when only 1.3
     * was offered). The JDK's default cipher suites and disabled algorithms apply to both.
     */
    static final java.util.List<String> PROTOCOLS = java.util.List.of("TLSv1.3", "TLSv1.2");

    private final Mode mode;
    private final SSLContext context;
    private final boolean clientCertificates;

    private ServerTls(Mode mode, SSLContext context, boolean clientCertificates) {
        this.mode = mode;
        this.context = context;
        this.clientCertificates = clientCertificates;
    }

    /**
     * Loads the server's certificate chain and key, and the CA that client certificates must be
     * signed by (optional), from PEM files.
     *
     * @param mode {@link Mode#ON} or {@link Mode#REQUIRE}
     * @param ca null for no client certificates
     * @throws IOException a file cannot be read or holds no certificate or key, naming it
     */
    public static ServerTls load(Mode mode, Path cert, Path key, Path ca) throws IOException {
        if (mode == Mode.OFF || cert == null || key == null) {
            throw new IllegalArgumentException("TLS mode " + mode + " needs a certificate and a key, got " + cert
                    + " and " + key);
        }
        KeyManager[] keys = Pem.keyManagers(cert, key);
        TrustManager[] trusted = ca == null ? null : Pem.trustManagers(ca);
        try {
            SSLContext context = SSLContext.getInstance("TLS");
            context.init(keys, trusted, null);
            return new ServerTls(mode, context, ca != null);
        } catch (GeneralSecurityException e) {
            throw new IOException("TLS: certificate " + cert + " and key " + key + " do not make a server context: "
                    + e.getMessage(), e);
        }
    }

    /** The mode. */
    public Mode mode() {
        return mode;
    }

    /** Whether client certificates are required (a CA was given). */
    public boolean verifiesClients() {
        return clientCertificates;
    }

    /** A new server-side engine for one connection: TLS 1.3 or 1.2, client certificates if a CA was given. */
    SSLEngine newEngine() {
        if (context == null) {
            throw new IllegalStateException("TLS is off");
        }
        SSLEngine engine = context.createSSLEngine();
        engine.setUseClientMode(false);
        SSLParameters parameters = engine.getSSLParameters();
        parameters.setProtocols(PROTOCOLS.toArray(new String[0]));
        parameters.setNeedClientAuth(clientCertificates);
        engine.setSSLParameters(parameters);
        return engine;
    }

    @Override
    public String toString() {
        return "TLS " + mode.name().toLowerCase() + (clientCertificates ? " with client certificates" : "");
    }
}
