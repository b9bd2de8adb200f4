package io.blkstack.remote;

import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.UnixDomainSocketAddress;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;

/**
 * Where a remote device's NBD server is, from an NBD URI (the NBD project's {@code doc/uri.md}):
 * {@code nbd://host[:port]/export} for TCP (port 10809 by default) and
 * {@code nbd+unix:///export?socket=PATH} for a Unix domain socket. An empty export path means the
 * export named {@code ""} (the server's default). The TLS schemes {@code nbds://} and
 * {@code nbds+unix://} are the same with TLS required ({@code STARTTLS} before anything else, as
 * libnbd does for them); the certificates come from the device's {@code tls} settings
 * ({@link ClientTls}), not from the URI.
 *
 * @param text the URI as written
 * @param address where to connect
 * @param exportName the export to ask for in {@code NBD_OPT_GO}
 * @param tls whether the scheme asks for TLS ({@code nbds}, {@code nbds+unix})
 */
public record NbdUri(String text, SocketAddress address, String exportName, boolean tls) {

    /** The NBD port a URI without one uses. */
    public static final int DEFAULT_PORT = 10809;

    /** Parses {@code text}; the exception's message says what is wrong with it. */
    public static NbdUri parse(String text) {
        URI uri;
        try {
            uri = new URI(text);
        } catch (URISyntaxException e) {
            throw new IllegalArgumentException("'" + text + "' is not an NBD URI: " + e.getMessage());
        }
        String scheme = uri.getScheme();
        if (scheme == null) {
            throw new IllegalArgumentException("'" + text + "' is not an NBD URI: give nbd://host:port/export"
                    + " or nbd+unix:///export?socket=PATH (nbds:// and nbds+unix:// for TLS)");
        }
        String exportName = exportName(uri);
        return switch (scheme) {
            case "nbd", "nbd+tcp", "nbds" -> {
                if (uri.getHost() == null || uri.getHost().isEmpty()) {
                    throw new IllegalArgumentException("'" + text + "' has no host: give " + scheme
                            + "://host:port/export");
                }
                int port = uri.getPort() < 0 ? DEFAULT_PORT : uri.getPort();
                yield new NbdUri(text, InetSocketAddress.createUnresolved(uri.getHost(), port), exportName,
                        scheme.equals("nbds"));
            }
            case "nbd+unix", "nbds+unix" -> new NbdUri(text, UnixDomainSocketAddress.of(socketPath(uri, text, scheme)),
                    exportName, scheme.equals("nbds+unix"));
            default -> throw new IllegalArgumentException("'" + text + "': scheme " + scheme
                    + " is not nbd, nbd+unix, nbds or nbds+unix");
        };
    }

    /** The export name: the path without its leading slash, percent-decoded. */
    private static String exportName(URI uri) {
        String path = uri.getPath();
        return path == null || path.isEmpty() ? "" : path.substring(1);
    }

    /** The {@code socket=} query parameter of an {@code nbd+unix} URI. */
    private static String socketPath(URI uri, String text, String scheme) {
        String query = uri.getRawQuery();
        if (query != null) {
            for (String pair : query.split("&")) {
                if (pair.startsWith("socket=")) {
                    String path = URLDecoder.decode(pair.substring("socket=".length()), StandardCharsets.UTF_8);
                    if (!path.isEmpty()) {
                        return path;
                    }
                }
            }
        }
        throw new IllegalArgumentException("'" + text + "' has no socket: give " + scheme + ":///export?socket=PATH");
    }

    @Override
    public String toString() {
        return text;
    }
}
