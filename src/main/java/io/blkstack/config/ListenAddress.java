package io.blkstack.config;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.UnknownHostException;

/**
 * A listen address written {@code HOST:PORT} ({@code 127.0.0.1:10809}, {@code [::1]:10809},
 * {@code 0.0.0.0:0}); port 0 asks for an ephemeral port. Used by the configuration's
 * {@code listen} key and by {@code serve --listen}.
 *
 * @param host the host as written (without IPv6 brackets)
 * @param port 0..65535
 */
public record ListenAddress(String host, int port) {

    /** The NBD port that {@code serve} uses unless told otherwise. */
    public static final int NBD_PORT = 10809;
    /** Longest text accepted; a bound on what is parsed. */
    private static final int TEXT_LENGTH_MAX = 300;

    /** The default: loopback on the NBD port. */
    public static final ListenAddress DEFAULT = new ListenAddress("127.0.0.1", NBD_PORT);

    /** Checks the parts. */
    public ListenAddress {
        if (host == null || host.isEmpty()) {
            throw new IllegalArgumentException("listen address needs a host");
        }
        if (port < 0 || port > 65535) {
            throw new IllegalArgumentException("listen port " + port + " is not in 0..65535");
        }
    }

    /**
     * Parses {@code HOST:PORT}.
     *
     * @throws IllegalArgumentException quoting {@code text} when it is not an address
     */
    public static ListenAddress parse(String text) {
        if (text == null || text.isEmpty() || text.length() > TEXT_LENGTH_MAX) {
            throw new IllegalArgumentException("'" + text + "' is not an address: expected HOST:PORT, such as 127.0.0.1:10809");
        }
        int colon = text.lastIndexOf(':');
        if (colon <= 0 || colon == text.length() - 1) {
            throw new IllegalArgumentException("'" + text + "' is not an address: expected HOST:PORT, such as 127.0.0.1:10809");
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

    /** Resolves the host (a name lookup if it is not a literal address). */
    public InetSocketAddress resolve() throws UnknownHostException {
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

    @Override
    public String toString() {
        return (host.contains(":") ? "[" + host + "]" : host) + ":" + port;
    }
}
