package io.blkstack.config;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.UnknownHostException;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Set;

/**
 * A listen address written {@code HOST:PORT} ({@code 127.0.0.1:10809}, {@code [::1]:10809},
 * {@code 0.0.0.0:0}; port 0 asks for an ephemeral port) or {@code unix:PATH} (a Unix domain
 * socket, created with mode 0600 unless the configuration gives another). Used by the
 * configuration's {@code listen} key and by {@code serve --listen}.
 *
 * @param host the host as written (without IPv6 brackets), or null for a Unix socket
 * @param port 0..65535 (0 for a Unix socket)
 * @param socket the Unix socket's absolute path, or null for TCP
 * @param socketMode the Unix socket file's mode, or null for TCP
 */
public record ListenAddress(String host, int port, Path socket, Set<PosixFilePermission> socketMode) {

    /** The NBD port that {@code serve} uses unless told otherwise. */
    public static final int NBD_PORT = 10809;
    /** Longest text accepted; a bound on what is parsed. */
    private static final int TEXT_LENGTH_MAX = 300;

    /** The default: loopback on the NBD port. */
    public static final ListenAddress DEFAULT = new ListenAddress("127.0.0.1", NBD_PORT);

    /** The prefix of a Unix socket address. */
    public static final String UNIX_PREFIX = "unix:";
    /** A Unix socket's mode unless the configuration says otherwise: the owner only. */
    public static final Set<PosixFilePermission> SOCKET_MODE_DEFAULT = Set.copyOf(PosixFilePermissions.fromString("rw-------"));

    /** A TCP address. */
    public ListenAddress(String host, int port) {
        this(host, port, null, null);
    }

    /** A Unix socket with {@code mode}. */
    public static ListenAddress unix(Path socket, Set<PosixFilePermission> mode) {
        return new ListenAddress(null, 0, socket, mode);
    }

    /** Checks the parts. */
    public ListenAddress {
        if (socket != null) {
            if (host != null || port != 0 || socketMode == null || !socket.isAbsolute()) {
                throw new IllegalArgumentException("a Unix listen address has an absolute path and a mode only, got host "
                        + host + " port " + port + " path " + socket + " mode " + socketMode);
            }
            socketMode = Set.copyOf(socketMode);
        } else if (socketMode != null) {
            throw new IllegalArgumentException("a TCP listen address has no socket mode");
        } else if (host == null || host.isEmpty()) {
            throw new IllegalArgumentException("listen address needs a host");
        } else if (port < 0 || port > 65535) {
            throw new IllegalArgumentException("listen port " + port + " is not in 0..65535");
        }
    }

    /** Whether this is a Unix socket. */
    public boolean isUnix() {
        return socket != null;
    }

    /**
     * Parses {@code HOST:PORT} or {@code unix:PATH}; a relative path resolves against the working
     * directory.
     *
     * @throws IllegalArgumentException quoting {@code text} when it is not an address
     */
    public static ListenAddress parse(String text) {
        return parse(text, Path.of("").toAbsolutePath());
    }

    /**
     * Parses {@code HOST:PORT} or {@code unix:PATH} (mode 0600); a relative path resolves against
     * {@code baseDir}.
     *
     * @throws IllegalArgumentException quoting {@code text} when it is not an address
     */
    public static ListenAddress parse(String text, Path baseDir) {
        if (text != null && text.startsWith(UNIX_PREFIX) && text.length() <= TEXT_LENGTH_MAX) {
            String path = text.substring(UNIX_PREFIX.length());
            if (path.isEmpty() || path.indexOf('\0') >= 0) {
                throw new IllegalArgumentException("'" + text + "' is not a Unix socket address: expected unix:PATH,"
                        + " such as unix:/run/blkstack/nbd.sock");
            }
            return unix(baseDir.resolve(path).normalize(), SOCKET_MODE_DEFAULT);
        }
        if (text == null || text.isEmpty() || text.length() > TEXT_LENGTH_MAX) {
            throw new IllegalArgumentException("'" + text + "' is not an address: expected HOST:PORT, such as 127.0.0.1:10809,"
                    + " or unix:PATH");
        }
        int colon = text.lastIndexOf(':');
        if (colon <= 0 || colon == text.length() - 1) {
            throw new IllegalArgumentException("'" + text + "' is not an address: expected HOST:PORT, such as 127.0.0.1:10809,"
                    + " or unix:PATH");
        }
        String host = text.substring(0, colon);
        if (host.startsWith("[") && host.endsWith("]") && host.length() > 2) {
            host = host.substring(1, host.length() - 1);
        } else if (host.contains(":")) {
            throw new IllegalArgumentException("'" + text + "' is not an address: write an IPv6 host in brackets, such as [::1]:10809");
        }
        String portText = text.substring(colon + 1);
        if (portText.length() > 5 || !portText.chars().allMatch(c -> c >= '0' && c <= '9')) {
            throw new IllegalArgumentException("'" + text + "' has port '" + portText + "', which is not a number in 0..65535");
        }
        int port = Integer.parseInt(portText);
        if (port > 65535) {
            throw new IllegalArgumentException("'" + text + "' has port " + port + ", which is not in 0..65535");
        }
        return new ListenAddress(host, port);
    }

    /** Resolves the host (a name lookup if it is not a literal address); TCP only. */
    public InetSocketAddress resolve() throws UnknownHostException {
        if (isUnix()) {
            throw new IllegalStateException("a Unix socket address has no host to resolve: " + this);
        }
        return new InetSocketAddress(InetAddress.getByName(host), port);
    }

    /** The host as it goes in a URI: IPv6 in brackets. */
    public static String uriHost(InetAddress address) {
        String text = address.getHostAddress();
        int zone = text.indexOf('%');
        if (zone >= 0) {
            text = text.substring(0, zone);
        }
        return text.contains(":") ? "[" + text + "]" : text;
    }

    /** The socket's mode as {@code ls} shows it ({@code rw-------}); Unix only. */
    public String socketModeText() {
        return PosixFilePermissions.toString(socketMode);
    }

    @Override
    public String toString() {
        if (isUnix()) {
            return UNIX_PREFIX + socket;
        }
        return (host.contains(":") ? "[" + host + "]" : host) + ":" + port;
    }
}
