package io.blkstack.config;

import io.blkstack.kernel.Reserves;
import io.blkstack.nbd.NbdServer;
import io.blkstack.nbd.ServerTls;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * A parsed and checked configuration (DESIGN.md section 8): the page arena size, the listen
 * address, bottom devices, mapped devices as dmsetup table text, and exports, each with the YAML
 * line it came from so that errors found later (when {@link Stack#build} parses a table or opens
 * a file) still name the file and the line.
 *
 * <p>What {@link ConfigReader} checks: the YAML shape, unknown keys, sizes, names, duplicate
 * names, and that every export names a device. What only building can check (it needs the
 * devices): the table lines themselves and their references.
 *
 * @param source the file name used in messages
 * @param memoryBytes the page arena for the data path
 * @param listeners the addresses to serve on (YAML {@code listen}, one or a list), TCP and Unix
 *     sockets; at least one
 * @param devices bottom devices in file order
 * @param mapped mapped devices in file order (build order)
 * @param exports exports in file order
 * @param connections how {@code serve} treats its clients: limit and timeouts
 * @param noSpaceTimeoutNanos the {@code no_space_timeout} of every thin pool whose table line does
 *     not set one (YAML {@code no-space-timeout}); 0 waits for ever
 * @param drainTimeoutNanos how long {@code serve} lets open requests finish when it stops (YAML
 *     {@code drain-timeout})
 * @param reserves the reserve sizes of the kernel that serves (or checks) the stack (YAML
 *     {@code reserves:}); the kernel's defaults unless the file says
 * @param control the control socket's path (YAML {@code control}, resolved against the file's
 *     directory), or null for {@link #DEFAULT_CONTROL}
 * @param logLevel {@code serve}'s log level (YAML {@code log-level}: one of {@link #LOG_LEVELS}), or
 *     null for {@link #DEFAULT_LOG_LEVEL}
 * @param metrics where {@code serve} serves Prometheus {@code /metrics} (YAML {@code metrics}), or
 *     null for none
 * @param tls NBD over TLS (YAML {@code tls}): the mode and the PEM files; {@link TlsSpec#OFF} unless
 *     the file says
 */
public record StackConfig(String source, long memoryBytes, List<ListenAddress> listeners, List<DeviceSpec> devices,
        List<MappedSpec> mapped, List<ExportSpec> exports, Connections connections, long noSpaceTimeoutNanos,
        long drainTimeoutNanos, Reserves reserves, Path control, String logLevel, ListenAddress metrics,
        TlsSpec tls) {

    /** The log levels {@code log-level} and {@code serve --log-level} take, least verbose first (SLF4J's). */
    public static final List<String> LOG_LEVELS = List.of("error", "warn", "info", "debug", "trace");
    /** The log level when neither the file nor {@code --log-level} says. */
    public static final String DEFAULT_LOG_LEVEL = "info";

    /**
     * The control socket when neither the file nor {@code --control} says: {@code control.sock}
     * in the embedded default's data directory, relative to the working directory (where
     * {@code blkstack ctl} looks by default too).
     */
    public static final String DEFAULT_CONTROL = "blkstack-data/control.sock";

    /** A configuration with one listen address. */
    public StackConfig(String source, long memoryBytes, ListenAddress listen, List<DeviceSpec> devices,
            List<MappedSpec> mapped, List<ExportSpec> exports, Connections connections, long noSpaceTimeoutNanos,
            long drainTimeoutNanos, Reserves reserves, Path control) {
        this(source, memoryBytes, List.of(listen), devices, mapped, exports, connections, noSpaceTimeoutNanos,
                drainTimeoutNanos, reserves, control, null, null, TlsSpec.OFF);
    }

    /** The log level to serve with: {@link #logLevel}, else {@link #DEFAULT_LOG_LEVEL}. */
    public String logLevelOrDefault() {
        return logLevel != null ? logLevel : DEFAULT_LOG_LEVEL;
    }

    /** The first listen address (the only one, unless {@code listen} is a list). */
    public ListenAddress listen() {
        return listeners.get(0);
    }

    /** A configuration without a {@code control} key. */
    public StackConfig(String source, long memoryBytes, ListenAddress listen, List<DeviceSpec> devices,
            List<MappedSpec> mapped, List<ExportSpec> exports, Connections connections, long noSpaceTimeoutNanos,
            long drainTimeoutNanos, Reserves reserves) {
        this(source, memoryBytes, listen, devices, mapped, exports, connections, noSpaceTimeoutNanos,
                drainTimeoutNanos, reserves, null);
    }

    /** The control socket to serve on: {@link #control}, else {@link #DEFAULT_CONTROL} in the working directory. */
    public Path controlPath() {
        return control != null ? control : Path.of(DEFAULT_CONTROL).toAbsolutePath();
    }

    /** The page arena when the file does not say. */
    public static final long DEFAULT_MEMORY_BYTES = 64L << 20;
    /** The smallest page arena served: below it the watermarks and the targets' pools leave no payload. */
    public static final long MEMORY_BYTES_MIN = 4L << 20;
    /** The largest page arena: one direct buffer, indexed by int. */
    public static final long MEMORY_BYTES_MAX = 2047L << 20;

    /**
     * What is wrong with a page arena of {@code bytes}, or null if it is within bounds: the one
     * check behind both the configuration's {@code memory} and {@code serve --memory}.
     */
    public static String memoryProblem(long bytes) {
        if (bytes < MEMORY_BYTES_MIN || bytes > MEMORY_BYTES_MAX) {
            return "must be between 4MiB and 2047MiB";
        }
        if (bytes % 4096 != 0) {
            return "must be a whole number of 4KiB pages";
        }
        return null;
    }
    /** A thin pool's no_space_timeout when neither its table line nor the file says: 60 s, as dm-thin. */
    public static final long DEFAULT_NO_SPACE_TIMEOUT_NANOS = 60_000_000_000L;
    /** How long {@code serve} drains when the file does not say: 30 s. */
    public static final long DEFAULT_DRAIN_TIMEOUT_NANOS = 30_000_000_000L;

    /** Copies the lists. */
    public StackConfig {
        if (noSpaceTimeoutNanos < 0 || drainTimeoutNanos < 0) {
            throw new IllegalArgumentException("no-space-timeout " + noSpaceTimeoutNanos + " ns and drain-timeout "
                    + drainTimeoutNanos + " ns must not be negative");
        }
        if (logLevel != null && !LOG_LEVELS.contains(logLevel)) {
            throw new IllegalArgumentException(source + ": log level '" + logLevel + "' is not one of " + LOG_LEVELS);
        }
        if (listeners == null || listeners.isEmpty()) {
            throw new IllegalArgumentException(source + ": no listen address");
        }
        listeners = List.copyOf(listeners);
        devices = List.copyOf(devices);
        mapped = List.copyOf(mapped);
        exports = List.copyOf(exports);
        if (connections == null) {
            throw new IllegalArgumentException(source + ": no connection settings");
        }
        if (reserves == null) {
            throw new IllegalArgumentException(source + ": no reserve sizes");
        }
        if (tls == null) {
            tls = TlsSpec.OFF;
        }
    }

    /** A configuration with the kernel's default reserves. */
    public StackConfig(String source, long memoryBytes, ListenAddress listen, List<DeviceSpec> devices,
            List<MappedSpec> mapped, List<ExportSpec> exports, Connections connections, long noSpaceTimeoutNanos,
            long drainTimeoutNanos) {
        this(source, memoryBytes, listen, devices, mapped, exports, connections, noSpaceTimeoutNanos, drainTimeoutNanos,
                Reserves.DEFAULTS);
    }

    /** A configuration with the default connection settings, no-space-timeout and drain-timeout. */
    public StackConfig(String source, long memoryBytes, ListenAddress listen, List<DeviceSpec> devices,
            List<MappedSpec> mapped, List<ExportSpec> exports) {
        this(source, memoryBytes, listen, devices, mapped, exports, Connections.DEFAULTS,
                DEFAULT_NO_SPACE_TIMEOUT_NANOS, DEFAULT_DRAIN_TIMEOUT_NANOS);
    }

    /**
     * NBD over TLS (YAML {@code tls: { mode, cert, key, ca }}): paths resolved against the file's
     * directory; with mode on or require a certificate and a key are given.
     *
     * @param mode off, on (plain clients still served) or require
     * @param cert the server's PEM certificate (chain), or null when off
     * @param key the server's PEM private key, or null when off
     * @param ca the PEM CA client certificates must be signed by, or null for no client certificates
     */
    public record TlsSpec(ServerTls.Mode mode, Path cert, Path key, Path ca) {

        /** No TLS. */
        public static final TlsSpec OFF = new TlsSpec(ServerTls.Mode.OFF, null, null, null);

        /** Checks that TLS on has a certificate and a key. */
        public TlsSpec {
            if (mode == null || (mode != ServerTls.Mode.OFF && (cert == null || key == null))) {
                throw new IllegalArgumentException("tls mode " + mode + " needs a certificate and a key, got " + cert
                        + " and " + key);
            }
        }
    }

    /**
     * How {@code serve} treats its clients (keys {@code max-connections}, {@code handshake-timeout},
     * {@code idle-timeout}, {@code reply-timeout}, {@code request-timeout}).
     *
     * @param max connections served at once; a client past it is refused with an NBD error
     * @param handshakeTimeoutNanos how long a client may take to negotiate an export
     * @param idleTimeoutNanos how long a connection may sit with nothing in flight; 0 for never
     * @param replyTimeoutNanos how long a connection may go without its replies being read; 0 for never
     * @param requestTimeoutNanos how long a request may wait for its device before its connection is
     *     cut; 0 for never
     */
    public record Connections(int max, long handshakeTimeoutNanos, long idleTimeoutNanos, long replyTimeoutNanos,
            long requestTimeoutNanos) {

        /** 1,024 connections, a 10 s handshake timeout, no idle timeout, a 30 s reply timeout, a 2 min request timeout. */
        public static final Connections DEFAULTS = new Connections(NbdServer.Options.CONNECTIONS_DEFAULT,
                NbdServer.Options.HANDSHAKE_TIMEOUT_DEFAULT_NANOS, 0, NbdServer.Options.REPLY_TIMEOUT_DEFAULT_NANOS,
                NbdServer.Options.REQUEST_TIMEOUT_DEFAULT_NANOS);

        /** Checks the bounds (the reader reports bad values with their line first). */
        public Connections {
            if (max < 1 || max > NbdServer.Options.CONNECTIONS_MAX || handshakeTimeoutNanos <= 0 || idleTimeoutNanos < 0
                    || replyTimeoutNanos < 0 || requestTimeoutNanos < 0) {
                throw new IllegalArgumentException("connections: max " + max + ", handshake timeout "
                        + handshakeTimeoutNanos + " ns, idle timeout " + idleTimeoutNanos + " ns, reply timeout "
                        + replyTimeoutNanos + " ns, request timeout " + requestTimeoutNanos + " ns out of range");
            }
        }
    }

    /** Reads and checks {@code file}; relative backing files resolve against its directory. */
    public static StackConfig load(Path file) throws ConfigException, IOException {
        String text = Files.readString(file, StandardCharsets.UTF_8);
        Path dir = file.toAbsolutePath().getParent();
        return parse(file.toString(), text, dir);
    }

    /**
     * Parses {@code text}; {@code source} names it in messages, {@code baseDir} is where relative
     * backing file paths resolve.
     */
    public static StackConfig parse(String source, String text, Path baseDir) throws ConfigException {
        return new ConfigReader(source, baseDir).read(text);
    }

    /** A bottom device: the file, memory or null kind, with where it was written. */
    public sealed interface DeviceSpec permits FileSpec, MemorySpec, NullSpec, RemoteSpec {
        /** The device name tables and exports use. */
        String name();

        /** Size in bytes. */
        long sizeBytes();

        /** The line of the device's entry. */
        int line();

        /** The line of the size value. */
        int sizeLine();
    }

    /**
     * A device backed by a file, created sparse if missing.
     *
     * @param path absolute (resolved against the configuration's directory)
     * @param written the path as written in the file
     * @param ioTasks the device I/O tasks serving its queue
     * @param queueDepth how many bios may be in flight on it
     */
    public record FileSpec(String name, Path path, String written, long sizeBytes, boolean direct, int ioTasks,
            int queueDepth, int line, int sizeLine) implements DeviceSpec {
        /** I/O tasks of a file device unless the configuration says otherwise. */
        public static final int IO_TASKS_DEFAULT = 4;
        /** Queue depth of a file device unless the configuration says otherwise. */
        public static final int QUEUE_DEPTH_DEFAULT = 64;
    }

    /** A sparse memory device, optionally with a completion latency. */
    public record MemorySpec(String name, long sizeBytes, long latencyNanos, int line, int sizeLine)
            implements DeviceSpec {
    }

    /** A null device (reads zeros, writes vanish), optionally with a completion latency. */
    public record NullSpec(String name, long sizeBytes, long latencyNanos, int line, int sizeLine)
            implements DeviceSpec {
    }

    /**
     * A device on another NBD server (a remote device), reached by an NBD URI.
     *
     * @param uri the URI as written ({@code nbd://host:port/export} or {@code nbd+unix:///export?socket=PATH})
     * @param connections connections wanted (used only if the server allows multi-conn)
     * @param timeoutNanos a request's deadline, and how long the device may be without a connection
     * @param sizeBytes the size the export must have, or 0 to take the server's (a dry run needs it)
     * @param tls the TLS settings of an {@code nbds://} or {@code nbds+unix://} URI, else null
     */
    public record RemoteSpec(String name, String uri, int connections, long timeoutNanos, long sizeBytes, int line,
            int sizeLine, RemoteTlsSpec tls) implements DeviceSpec {
        /** The request timeout unless the configuration says otherwise: 30 s. */
        public static final long TIMEOUT_DEFAULT_NANOS = 30_000_000_000L;
    }

    /**
     * A remote device's TLS (YAML {@code tls: { ca, cert, key, verify-peer }} under the device):
     * paths resolved against the file's directory; the files are read when the device opens.
     *
     * @param ca the CA the server's certificate must lead to; null only with {@code verifyPeer} false
     * @param cert the client certificate, or null
     * @param key its key, given exactly when {@code cert} is
     * @param verifyPeer false to accept any server certificate ({@code verify-peer: false})
     */
    public record RemoteTlsSpec(Path ca, Path cert, Path key, boolean verifyPeer) {
    }

    /**
     * A mapped device: its table text and how a table line maps to a line of the file.
     *
     * @param line the line of the {@code name:} key
     * @param textLine the line where the value starts (the {@code |} of a literal block)
     * @param literal whether the value is a literal block, whose table line N is file line
     *     {@code textLine + N}; otherwise every table line is reported at {@code textLine}
     */
    public record MappedSpec(String name, String table, int line, int textLine, boolean literal) {

        /** The file line of table line {@code tableLine} (1-based; 0 means the value as a whole). */
        public int fileLine(int tableLine) {
            if (tableLine <= 0 || !literal) {
                return textLine;
            }
            return textLine + tableLine;
        }
    }

    /** An export of a device or mapped device. */
    public record ExportSpec(String name, String device, boolean readOnly, String description, int line,
            int deviceLine) {
    }
}
