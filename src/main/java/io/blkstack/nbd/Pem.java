package io.blkstack.nbd;

import java.io.IOException;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.List;
import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import org.bouncycastle.asn1.pkcs.PrivateKeyInfo;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.cert.jcajce.JcaX509CertificateConverter;
import org.bouncycastle.openssl.PEMKeyPair;
import org.bouncycastle.openssl.PEMParser;
import org.bouncycastle.openssl.jcajce.JcaPEMKeyConverter;

/**
 * PEM certificates and keys for TLS, read with BouncyCastle's PKIX (no hand-written parser): the
 * server's ({@link ServerTls}) and a remote device's client ({@code io.blkstack.remote.ClientTls}).
 * Errors name the file.
 */
public final class Pem {

    private Pem() {
    }

    /** Key managers that present the certificate chain in {@code cert} with the private key in {@code key}. */
    public static KeyManager[] keyManagers(Path cert, Path key) throws IOException {
        List<X509Certificate> chain = certificates(cert);
        PrivateKey privateKey = privateKey(key);
        try {
            KeyStore keys = KeyStore.getInstance("PKCS12");
            keys.load(null, null);
            keys.setKeyEntry("own", privateKey, new char[0], chain.toArray(new X509Certificate[0]));
            KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            kmf.init(keys, new char[0]);
            return kmf.getKeyManagers();
        } catch (GeneralSecurityException e) {
            throw new IOException("TLS: certificate " + cert + " and key " + key + " do not go together: "
                    + e.getMessage(), e);
        }
    }

    /** Trust managers that accept a peer whose chain leads to a certificate in {@code ca} (one or more CAs). */
    public static TrustManager[] trustManagers(Path ca) throws IOException {
        try {
            KeyStore trusted = KeyStore.getInstance("PKCS12");
            trusted.load(null, null);
            int i = 0;
            for (X509Certificate c : certificates(ca)) {
                trusted.setCertificateEntry("ca" + i++, c);
            }
            TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            tmf.init(trusted);
            return tmf.getTrustManagers();
        } catch (GeneralSecurityException e) {
            throw new IOException("TLS: " + ca + ": the CA certificates cannot be trusted: " + e.getMessage(), e);
        }
    }

    /** Every certificate in a PEM file, in file order; at least one. */
    public static List<X509Certificate> certificates(Path file) throws IOException {
        List<X509Certificate> out = new ArrayList<>();
        JcaX509CertificateConverter converter = new JcaX509CertificateConverter();
        try (Reader reader = Files.newBufferedReader(file, StandardCharsets.US_ASCII);
                PEMParser pem = new PEMParser(reader)) {
            for (Object o = pem.readObject(); o != null; o = pem.readObject()) {
                if (o instanceof X509CertificateHolder holder) {
                    out.add(converter.getCertificate(holder));
                }
            }
        } catch (GeneralSecurityException | RuntimeException e) {
            throw new IOException("TLS: " + file + ": not a PEM certificate: " + e.getMessage(), e);
        }
        if (out.isEmpty()) {
            throw new IOException("TLS: " + file + " holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
        }
        return out;
    }

    /** The first private key in a PEM file (PKCS#8, or a traditional RSA/EC key pair); unencrypted. */
    public static PrivateKey privateKey(Path file) throws IOException {
        JcaPEMKeyConverter converter = new JcaPEMKeyConverter();
        try (Reader reader = Files.newBufferedReader(file, StandardCharsets.US_ASCII);
                PEMParser pem = new PEMParser(reader)) {
            for (Object o = pem.readObject(); o != null; o = pem.readObject()) {
                if (o instanceof PrivateKeyInfo info) {
                    return converter.getPrivateKey(info);
                }
                if (o instanceof PEMKeyPair pair) {
                    return converter.getKeyPair(pair).getPrivate();
                }
            }
        } catch (RuntimeException e) {
            throw new IOException("TLS: " + file + ": not a PEM private key: " + e.getMessage(), e);
        }
        throw new IOException("TLS: " + file + " holds no unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)");
    }
}
