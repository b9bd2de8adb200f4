package io.blkstack;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Certificates made at test time with {@code openssl} (EC P-256, valid two days): certificate
 * authorities, and leaf certificates signed by one of them, as PEM files {@code NAME-cert.pem} and
 * {@code NAME-key.pem} in one directory. {@link #gnutlsDir} copies a set into the file names GnuTLS
 * programs look for in a certificate directory (libnbd's {@code tls-certificates=}, nbdkit's
 * {@code --tls-certificates}, qemu's {@code tls-creds-x509 dir=}): {@code ca-cert.pem},
 * {@code server-cert.pem}/{@code server-key.pem} or {@code client-cert.pem}/{@code client-key.pem}.
 */
public final class TestPki {

    private static final long SECONDS_MAX = 60;

    private final Path dir;

    /** A PKI whose files go in {@code dir} (created if missing). */
    public TestPki(Path dir) throws IOException {
        this.dir = Files.createDirectories(dir);
    }

    /** Whether openssl is installed (tests using this are skipped without it). */
    public static boolean available() {
        return Programs.installed("openssl");
    }

    /** A self-signed CA {@code name} with the common name {@code subject}. */
    public TestPki ca(String name, String subject) throws Exception {
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                name + "-key.pem", "-out", name + "-cert.pem", "-days", "2", "-subj", "/CN=" + subject);
        return this;
    }

    /** A server certificate {@code name} from {@code ca} for the host names and IP addresses in {@code altNames} ("IP:127.0.0.1", "DNS:localhost"). */
    public TestPki server(String name, String ca, String... altNames) throws Exception {
        return leaf(name, ca, "localhost", "subjectAltName=" + String.join(",", altNames)
                + "\nextendedKeyUsage=serverAuth\n");
    }

    /** A client certificate {@code name} from {@code ca}. */
    public TestPki client(String name, String ca) throws Exception {
        return leaf(name, ca, "client", "extendedKeyUsage=clientAuth\n");
    }

    private TestPki leaf(String name, String ca, String commonName, String extensions) throws Exception {
        Files.writeString(dir.resolve(name + ".ext"), extensions);
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                name + "-key.pem", "-out", name + ".csr", "-subj", "/CN=" + commonName);
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + "-cert.pem", "-CAkey", ca + "-key.pem",
                "-set_serial", String.valueOf(Math.abs(name.hashCode())), "-out", name + "-cert.pem", "-days", "2",
                "-extfile", name + ".ext");
        return this;
    }

    /** {@code NAME-cert.pem}. */
    public Path cert(String name) {
        return dir.resolve(name + "-cert.pem");
    }

    /** {@code NAME-key.pem}. */
    public Path key(String name) {
        return dir.resolve(name + "-key.pem");
    }

    /**
     * A GnuTLS certificate directory {@code target}: {@code ca-cert.pem} from {@code ca}, and
     * {@code ROLE-cert.pem} and {@code ROLE-key.pem} from {@code leaf} (role "server" or "client";
     * a null leaf for the CA alone).
     */
    public Path gnutlsDir(Path target, String ca, String role, String leaf) throws IOException {
        Files.createDirectories(target);
        Files.copy(cert(ca), target.resolve("ca-cert.pem"));
        if (leaf != null) {
            Files.copy(cert(leaf), target.resolve(role + "-cert.pem"));
            Files.copy(key(leaf), target.resolve(role + "-key.pem"));
        }
        return target;
    }

    private void openssl(String... args) throws Exception {
        List<String> command = new ArrayList<>(List.of("openssl"));
        command.addAll(List.of(args));
        Programs.run(dir, SECONDS_MAX, command.toArray(new String[0]));
    }
}
