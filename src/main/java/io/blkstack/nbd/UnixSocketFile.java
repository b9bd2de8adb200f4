package io.blkstack.nbd;

import java.io.IOException;
import java.net.ConnectException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.nio.charset.StandardCharsets;
import java.util.Objects;
import java.util.Set;
import java.util.function.Consumer;

/**
 * The file of a listening Unix domain socket: claiming its path (a live owner refuses it, a stale
 * socket is replaced), binding with a file mode and no window in which anyone else could connect,
 * and removing it on close only if it is still the one bound. Used by the NBD server's Unix
 * listeners and by the control socket.
 */
public final class UnixSocketFile {

    /** Longest socket path in bytes (sun_path is 108 bytes with its terminating NUL). */
    public static final int PATH_BYTES_MAX = 107;
    /** The mode a socket file gets unless told otherwise: the owner only. */
    public static final Set<PosixFilePermission> MODE_DEFAULT = Set.copyOf(PosixFilePermissions.fromString("rw-------"));

    private UnixSocketFile() {
    }

    /**
     * Refuses a path a live server answers on (or that is not a socket); removes a stale socket;
     * creates the parent directories of a path that does not exist.
     *
     * @param what names the socket in messages ("control socket")
     * @param choose what the user can do instead ("--control")
     * @param log where a replaced stale socket is reported
     */
    public static void claim(Path path, String what, String choose, Consumer<String> log) throws IOException {
        if (path.toString().getBytes(StandardCharsets.UTF_8).length > PATH_BYTES_MAX) {
            throw new IOException(what + " " + path + ": the path is longer than a Unix socket allows ("
                    + PATH_BYTES_MAX + " bytes)");
        }
        if (!Files.exists(path, LinkOption.NOFOLLOW_LINKS)) {
            Path parent = path.getParent();
            if (parent != null) {
                Files.createDirectories(parent);
            }
            return;
        }
        BasicFileAttributes attributes = Files.readAttributes(path, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
        if (!attributes.isOther()) {
            throw new IOException(what + " " + path + " exists and is not a socket; remove it or choose"
                    + " another path (" + choose + ")");
        }
        try (SocketChannel probe = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            // Non-blocking, so a server that answers but does not accept (a full backlog) cannot
            // stall the start: a connect that is merely pending counts as a live owner too.
            probe.configureBlocking(false);
            probe.connect(UnixDomainSocketAddress.of(path));
            throw new IOException(what + " " + path + " is in use: a running server answers on it"
                    + " (another blkstack serve?); stop it or choose another path (" + choose + ")");
        } catch (ConnectException stale) {
            Files.delete(path);
            log.accept("replaced the stale " + what + " " + path + " (nothing answered on it)");
        }
    }

    /**
     * Binds a listening Unix socket on {@code path} (claimed first) with {@code mode}: bound inside
     * a fresh directory of mode 0700 next to the path, given its mode, then renamed onto the path,
     * so nobody the mode excludes can ever connect. Returns the blocking channel; its file key is
     * {@link #fileKey}.
     */
    public static ServerSocketChannel bind(Path path, Set<PosixFilePermission> mode) throws IOException {
        Path parent = Objects.requireNonNull(path.getParent(), "socket path has no directory: " + path);
        Path privateDir = Files.createTempDirectory(parent, ".nbd",
                PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        Path bound = privateDir.resolve("s");
        ServerSocketChannel channel = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            channel.bind(UnixDomainSocketAddress.of(bound));
            Files.setPosixFilePermissions(bound, mode);
            try {
                Files.move(bound, path, StandardCopyOption.ATOMIC_MOVE);
            } catch (AtomicMoveNotSupportedException e) {
                throw new IOException("socket " + path + ": cannot rename the socket into place: " + e, e);
            }
            return channel;
        } catch (IOException | RuntimeException e) {
            channel.close();
            throw e;
        } finally {
            Files.deleteIfExists(bound);
            Files.deleteIfExists(privateDir);
        }
    }

    /** The file's identity now (to remove it later only if it is still ours), or null if it is gone. */
    public static Object fileKey(Path path) {
        try {
            return Files.readAttributes(path, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS).fileKey();
        } catch (IOException e) {
            return null;
        }
    }

    /** Removes the socket file if it is still the one whose key is {@code key}; never throws. */
    public static void removeIfOurs(Path path, Object key) {
        if (key == null) {
            return;
        }
        try {
            if (key.equals(fileKey(path))) {
                Files.delete(path);
            }
        } catch (IOException e) {
            // another process replaced it, or it is gone: nothing of ours to remove
        }
    }
}
