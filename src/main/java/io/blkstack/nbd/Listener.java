package io.blkstack.nbd;

import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.util.Set;

/**
 * One address an {@link NbdServer} listens on: a TCP address, or a Unix domain socket file with
 * the mode it is created with ({@link UnixSocketFile}).
 *
 * @param tcp the TCP address (port 0 for an ephemeral port), or null for a Unix socket
 * @param unixPath the absolute socket path, or null for TCP
 * @param unixMode the socket file's mode (Unix only)
 */
public record Listener(InetSocketAddress tcp, Path unixPath, Set<PosixFilePermission> unixMode) {

    /** Checks that exactly one kind is given. */
    public Listener {
        if ((tcp == null) == (unixPath == null)) {
            throw new IllegalArgumentException("a listener is a TCP address or a Unix socket path, got " + tcp + " and "
                    + unixPath);
        }
        if (unixPath != null && (!unixPath.isAbsolute() || unixMode == null)) {
            throw new IllegalArgumentException("a Unix listener needs an absolute path and a mode, got " + unixPath
                    + " mode " + unixMode);
        }
        unixMode = unixMode == null ? null : Set.copyOf(unixMode);
    }

    /** A TCP listener. */
    public static Listener tcp(InetSocketAddress address) {
        return new Listener(address, null, null);
    }

    /** A Unix socket listener with {@code mode}. */
    public static Listener unix(Path path, Set<PosixFilePermission> mode) {
        return new Listener(null, path, mode);
    }

    /** Whether this is a Unix socket. */
    public boolean isUnix() {
        return unixPath != null;
    }

    @Override
    public String toString() {
        return isUnix() ? "unix:" + unixPath : tcp.toString();
    }
}
