package io.blkstack.remote;

import io.blkstack.nbd.Pem;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketAddress;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.cert.CertPathBuilderException;
import java.security.cert.CertPathValidatorException;
import java.security.cert.CertificateException;
import java.security.cert.X509Certificate;
import javax.net.ssl.KeyManager;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManager;
import javax.net.ssl.X509ExtendedTrustManager;

/**
 * A remote device's TLS settings, for {@code nbds://} and {@code nbds+unix://} URIs: the CA that
 * must have signed the server's certificate, and an optional client certificate and key for a
 * server that asks for one. PEM files, read with {@link Pem}.
 *
 * <p>Verification is what libnbd and qemu do by default: the server's chain must lead to the CA,
 * and over TCP the certificate must also name the host of the URI (a DNS name or an IP address in
 * its subject alternative names); over a Unix socket there is no host name to check, so the chain
 * alone decides. Turning verification off ({@code verify-peer: false}, libnbd's
 * {@code tls-verify-peer=false}, qemu's {@code verify-peer=off}) still encrypts, but accepts any
 * server; it must be asked for, a missing CA is not taken to mean it.
 *
 * <p>TLS 1.3 is offered first, 1.2 too (the NBD TLS profile's minimum), for servers built on older
 * libraries.
 */
public final class ClientTls {

    private static final java.util.List<String> PROTOCOLS = java.util.List.of("TLSv1.3", "TLSv1.2");

    private final SSLContext context;
    private final Path ca;
    private final boolean verifyPeer;
    private final boolean clientCertificate;

    private ClientTls(SSLContext context, Path ca, boolean verifyPeer, boolean clientCertificate) {
        this.context = context;
        this.ca = ca;
        this.verifyPeer = verifyPeer;
        this.clientCertificate = clientCertificate;
    }

    /**
     * Loads the settings.
     *
     * @param ca the CA certificates (PEM) the server's must lead to; required unless {@code verifyPeer} is false
     * @param cert the client's certificate chain (PEM), or null for none
     * @param key the client's private key (PEM, unencrypted); given exactly when {@code cert} is
     * @param verifyPeer false to accept any server certificate (encrypted, not authenticated)
     * @throws IOException a file cannot be read or holds no certificate or key, naming it
     */
    public static ClientTls load(Path ca, Path cert, Path key, boolean verifyPeer) throws IOException {
        if ((cert == null) != (key == null)) {
            throw new IllegalArgumentException("TLS: a client certificate needs its key and a key its certificate,"
                    + " got cert " + cert + " and key " + key);
        }
        if (verifyPeer && ca == null) {
            throw new IllegalArgumentException("TLS: verifying the server needs the CA that signed its certificate"
                    + " (ca: PEM), or verify-peer: false to accept any server");
        }
        KeyManager[] keys = cert == null ? null : Pem.keyManagers(cert, key);
        TrustManager[] trusted = verifyPeer ? Pem.trustManagers(ca) : new TrustManager[] {new AnyServer()};
        try {
            SSLContext context = SSLContext.getInstance("TLS");
            context.init(keys, trusted, null);
            return new ClientTls(context, ca, verifyPeer, cert != null);
        } catch (GeneralSecurityException e) {
            throw new IOException("TLS: no client context from ca " + ca + ", cert " + cert + ", key " + key + ": "
                    + e.getMessage(), e);
        }
    }

    /**
     * A client-mode engine for one connection to {@code address}: with the host name (for SNI and
     * the certificate's name check) over TCP, without over a Unix socket.
     */
    SSLEngine newEngine(SocketAddress address) {
        SSLEngine engine;
        boolean tcp = address instanceof InetSocketAddress;
        if (tcp) {
            InetSocketAddress inet = (InetSocketAddress) address;
            engine = context.createSSLEngine(inet.getHostString(), inet.getPort());
        } else {
            engine = context.createSSLEngine();
        }
        engine.setUseClientMode(true);
        SSLParameters parameters = engine.getSSLParameters();
        parameters.setProtocols(PROTOCOLS.toArray(new String[0]));
        if (tcp && verifyPeer) {
            parameters.setEndpointIdentificationAlgorithm("HTTPS"); // RFC 2818 names: what GnuTLS checks too
        }
        engine.setSSLParameters(parameters);
        return engine;
    }

    /** Whether the server's certificate is checked. */
    public boolean verifiesPeer() {
        return verifyPeer;
    }

    /** A failed handshake in words: a refused server certificate says which CA it was checked against. */
    String explain(SSLException e) {
        boolean noPath = false;
        for (Throwable t = e; t != null; t = t.getCause()) {
            noPath |= t instanceof CertPathBuilderException || t instanceof CertPathValidatorException;
        }
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof CertificateException) {
                return "the server's certificate is not accepted with ca " + ca + ": "
                        + (noPath ? "that CA did not sign it (" + t.getMessage() + ")" : t.getMessage());
            }
        }
        String message = e.getMessage();
        if (message != null && message.contains("alert") && message.contains("certificate")) {
            return "the server refused " + (clientCertificate ? "the client certificate" : "a client without a certificate")
                    + ": " + message;
        }
        return message;
    }

    @Override
    public String toString() {
        return "TLS" + (verifyPeer ? " verifying the server with ca " + ca : " without verifying the server")
                + (clientCertificate ? ", with a client certificate" : "");
    }

    /** {@code verify-peer: false}: every server certificate is accepted (the session is still encrypted). */
    private static final class AnyServer extends X509ExtendedTrustManager {
        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, SSLEngine engine) {
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, Socket socket) {
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType) {
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, SSLEngine engine)
                throws CertificateException {
            throw new CertificateException("a client does not check clients");
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, Socket socket)
                throws CertificateException {
            throw new CertificateException("a client does not check clients");
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType) throws CertificateException {
            throw new CertificateException("a client does not check clients");
        }

        @Override
        public X509Certificate[] getAcceptedIssuers() {
            return new X509Certificate[0];
        }
    }
}
