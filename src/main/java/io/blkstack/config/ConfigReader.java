package io.blkstack.config;

import io.blkstack.block.DeviceQueue;
import io.blkstack.config.StackConfig.DeviceSpec;
import io.blkstack.config.StackConfig.ExportSpec;
import io.blkstack.config.StackConfig.FileSpec;
import io.blkstack.config.StackConfig.MappedSpec;
import io.blkstack.config.StackConfig.MemorySpec;
import io.blkstack.config.StackConfig.NullSpec;
import io.blkstack.config.StackConfig.RemoteSpec;
import io.blkstack.kernel.Reserves;
import io.blkstack.nbd.NbdServer;
import io.blkstack.nbd.ServerTls;
import io.blkstack.units.Durations;
import io.blkstack.units.Sizes;
import java.io.StringReader;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;
import org.yaml.snakeyaml.DumperOptions;
import org.yaml.snakeyaml.LoaderOptions;
import org.yaml.snakeyaml.Yaml;
import org.yaml.snakeyaml.error.MarkedYAMLException;
import org.yaml.snakeyaml.error.YAMLException;
import org.yaml.snakeyaml.nodes.MappingNode;
import org.yaml.snakeyaml.nodes.Node;
import org.yaml.snakeyaml.nodes.NodeTuple;
import org.yaml.snakeyaml.nodes.ScalarNode;
import org.yaml.snakeyaml.nodes.SequenceNode;

/**
 * Reads a configuration's YAML into a {@link StackConfig}, strictly: it walks SnakeYAML's node
 * tree (not a map of objects) so that every value keeps its position, and every error names the
 * file, the line, the key path and the bad value. Unknown keys, duplicate names and values of the
 * wrong kind are errors, never ignored: a misspelt {@code readonly} must not silently export a
 * device writable.
 */
final class ConfigReader {

    /** A name that tables (split on blanks) and exports can use: one word of safe characters. */
    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}");
    /** Largest configuration accepted, in characters. */
    private static final int TEXT_CHARS_MAX = 1 << 20;
    /** Bounds on the page arena. */
    /** Longest device latency accepted. */
    static final long LATENCY_NANOS_MAX = 10_000_000_000L;
    /** Longest no-space-timeout and drain-timeout accepted: one day. */
    static final long TIMEOUT_NANOS_MAX = 86_400_000_000_000L;
    /** Longest export description accepted, in characters. */
    static final int DESCRIPTION_CHARS_MAX = 1024;

    private static final Set<String> TOP_KEYS = Set.of("memory", "listen", "max-connections", "handshake-timeout",
            "idle-timeout", "reply-timeout", "request-timeout", "devices", "mapped", "exports", "no-space-timeout", "drain-timeout", "reserves",
            "control", "log-level", "metrics", "tls");
    private static final Set<String> RESERVE_KEYS = Set.of("dm-clones", "target-bios", "bufio-buffers");
    private static final Set<String> EXPORT_KEYS = Set.of("device", "readonly", "description");
    private static final Set<String> DEVICE_KINDS = Set.of("file", "memory", "null", "nbd");
    private static final Set<String> FILE_KEYS = Set.of("file", "size", "direct", "io-tasks", "queue-depth");
    private static final Set<String> MEMORY_KEYS = Set.of("memory", "latency");
    private static final Set<String> NULL_KEYS = Set.of("null", "latency");
    private static final Set<String> REMOTE_KEYS = Set.of("nbd", "connections", "timeout", "size", "tls");
    /** Most listen addresses. */
    static final int LISTENERS_MAX = 16;
    /** Most connections of one remote device. */
    static final int REMOTE_CONNECTIONS_MAX = 16;
    /** Every key some device kind takes; which kind may use which is checked once the kind is known. */
    private static final Set<String> DEVICE_KEYS = union(FILE_KEYS, MEMORY_KEYS, NULL_KEYS, REMOTE_KEYS);

    private final String source;
    private final Path baseDir;

    ConfigReader(String source, Path baseDir) {
        this.source = source;
        this.baseDir = baseDir;
    }

    /** Parses and checks the whole text. */
    StackConfig read(String text) throws ConfigException {
        if (text.length() > TEXT_CHARS_MAX) {
            throw new ConfigException(source, 0, "", null, "is longer than " + TEXT_CHARS_MAX + " characters");
        }
        MappingNode root = mapping(compose(text), "", "the configuration");
        Map<String, NodeTuple> top = entries(root, "", TOP_KEYS);
        long memory = StackConfig.DEFAULT_MEMORY_BYTES;
        if (top.containsKey("memory")) {
            memory = memory(top.get("memory").getValueNode());
        }
        List<ListenAddress> listen = top.containsKey("listen") ? listeners(top.get("listen").getValueNode())
                : List.of(ListenAddress.DEFAULT);
        StackConfig.Connections connections = connections(top);
        long noSpaceTimeout = timeout(top, "no-space-timeout", StackConfig.DEFAULT_NO_SPACE_TIMEOUT_NANOS);
        long drainTimeout = timeout(top, "drain-timeout", StackConfig.DEFAULT_DRAIN_TIMEOUT_NANOS);
        List<DeviceSpec> devices = top.containsKey("devices") ? devices(top.get("devices")) : List.of();
        List<MappedSpec> mapped = top.containsKey("mapped") ? mapped(top.get("mapped"), devices) : List.of();
        if (!top.containsKey("exports")) {
            throw new ConfigException(source, line(root), "", null, "has no 'exports': name at least one device to serve");
        }
        List<ExportSpec> exports = exports(top.get("exports"), devices, mapped);
        Reserves reserves = top.containsKey("reserves") ? reserves(top.get("reserves")) : Reserves.DEFAULTS;
        Path control = top.containsKey("control")
                ? resolve(scalar(top.get("control").getValueNode(), "control"), "control") : null;
        String logLevel = top.containsKey("log-level") ? logLevel(top.get("log-level")) : null;
        ListenAddress metrics = null;
        if (top.containsKey("metrics")) {
            ScalarNode node = scalar(top.get("metrics").getValueNode(), "metrics");
            try {
                metrics = ListenAddress.parse(node.getValue());
            } catch (IllegalArgumentException e) {
                throw error(node, "metrics", null, e.getMessage());
            }
        }
        StackConfig.TlsSpec tls = top.containsKey("tls") ? tls(top.get("tls")) : StackConfig.TlsSpec.OFF;
        return new StackConfig(source, memory, listen, devices, mapped, exports, connections, noSpaceTimeout,
                drainTimeout, reserves, control, logLevel, metrics, tls);
    }

    /** {@code log-level:}: one of {@link StackConfig#LOG_LEVELS}. */
    private String logLevel(NodeTuple entry) throws ConfigException {
        ScalarNode node = scalar(entry.getValueNode(), "log-level");
        String level = node.getValue();
        if (!StackConfig.LOG_LEVELS.contains(level)) {
            throw error(node, "log-level", level, "is not one of " + String.join(", ", StackConfig.LOG_LEVELS));
        }
        return level;
    }

    /**
     * {@code listen:}: one address ({@code HOST:PORT}, {@code unix:PATH}, or a map
     * {@code { unix: PATH, mode: "0660" }}), or a list of them; Unix paths resolve against the
     * file's directory; the same address twice is an error.
     */
    private List<ListenAddress> listeners(Node node) throws ConfigException {
        List<Node> items = node instanceof SequenceNode list ? list.getValue() : List.of(node);
        if (items.isEmpty()) {
            throw error(node, "listen", null, "is an empty list: give at least one address");
        }
        if (items.size() > LISTENERS_MAX) {
            throw error(node, "listen", null, "has " + items.size() + " addresses; at most " + LISTENERS_MAX);
        }
        List<ListenAddress> out = new ArrayList<>();
        for (int i = 0; i < items.size(); i++) {
            String path = items.size() == 1 ? "listen" : "listen[" + i + "]";
            ListenAddress a = listener(items.get(i), path);
            if (out.contains(a)) {
                throw error(items.get(i), path, a.toString(), "is given twice");
            }
            out.add(a);
        }
        return out;
    }

    /** One listen address: a scalar, or a Unix socket's map with its mode. */
    private ListenAddress listener(Node node, String path) throws ConfigException {
        Path dir = baseDir != null ? baseDir : Path.of("").toAbsolutePath();
        if (node instanceof ScalarNode s) {
            try {
                return ListenAddress.parse(s.getValue(), dir);
            } catch (IllegalArgumentException e) {
                throw error(s, path, null, e.getMessage());
            }
        }
        MappingNode map = mapping(node, path, "an address such as 127.0.0.1:10809 or unix:PATH, or a map such as"
                + " { unix: nbd.sock, mode: \"0660\" }");
        Map<String, NodeTuple> keys = entries(map, path, Set.of("unix", "mode"));
        if (!keys.containsKey("unix")) {
            throw error(map, path, null, "has no 'unix': the socket's path");
        }
        Path socket = resolve(scalar(keys.get("unix").getValueNode(), path + ".unix"), path + ".unix");
        Set<PosixFilePermission> mode = ListenAddress.SOCKET_MODE_DEFAULT;
        if (keys.containsKey("mode")) {
            mode = socketMode(scalar(keys.get("mode").getValueNode(), path + ".mode"), path + ".mode");
        }
        return ListenAddress.unix(socket, mode);
    }

    /** A socket file's mode in octal ({@code 0600}, {@code 0660}, {@code 0666}): read and write bits only. */
    private Set<PosixFilePermission> socketMode(ScalarNode node, String path) throws ConfigException {
        String text = node.getValue();
        if (!text.matches("0?[0-7]{3}")) {
            throw error(node, path, text, "is not an octal file mode such as 0600 or 0660 (quote it in YAML)");
        }
        int bits = Integer.parseInt(text, 8);
        if ((bits & 0111) != 0 || (bits & 0600) != 0600) {
            throw error(node, path, text, "must give the owner read and write and nobody execute, such as 0600 or 0660");
        }
        StringBuilder rwx = new StringBuilder();
        for (int shift = 6; shift >= 0; shift -= 3) {
            rwx.append((bits >> shift & 4) != 0 ? 'r' : '-').append((bits >> shift & 2) != 0 ? 'w' : '-').append('-');
        }
        return PosixFilePermissions.fromString(rwx.toString());
    }

    /**
     * {@code tls:}: {@code { mode: off|on|require, cert: PEM, key: PEM, ca: PEM }}; the mode is
     * {@code on} unless given; on and require need cert and key; the files are read when serving.
     */
    private StackConfig.TlsSpec tls(NodeTuple entry) throws ConfigException {
        MappingNode map = mapping(entry.getValueNode(), "tls", "a map such as { mode: require, cert: server-cert.pem,"
                + " key: server-key.pem, ca: ca-cert.pem }");
        Map<String, NodeTuple> keys = entries(map, "tls", Set.of("mode", "cert", "key", "ca"));
        ServerTls.Mode mode = ServerTls.Mode.ON;
        if (keys.containsKey("mode")) {
            ScalarNode m = scalar(keys.get("mode").getValueNode(), "tls.mode");
            mode = switch (m.getValue()) {
                case "off" -> ServerTls.Mode.OFF;
                case "on" -> ServerTls.Mode.ON;
                case "require" -> ServerTls.Mode.REQUIRE;
                default -> throw error(m, "tls.mode", m.getValue(), "is not off, on or require");
            };
        }
        Path cert = keys.containsKey("cert") ? resolve(scalar(keys.get("cert").getValueNode(), "tls.cert"), "tls.cert")
                : null;
        Path key = keys.containsKey("key") ? resolve(scalar(keys.get("key").getValueNode(), "tls.key"), "tls.key") : null;
        Path ca = keys.containsKey("ca") ? resolve(scalar(keys.get("ca").getValueNode(), "tls.ca"), "tls.ca") : null;
        if (mode != ServerTls.Mode.OFF && (cert == null || key == null)) {
            throw error(map, "tls", null, "has mode " + mode.name().toLowerCase() + " but no " + (cert == null ? "cert" : "key")
                    + ": give the server's PEM certificate and key");
        }
        return new StackConfig.TlsSpec(mode, cert, key, ca);
    }

    /**
     * A remote device's {@code tls:}: {@code { ca: PEM, cert: PEM, key: PEM, verify-peer: true|false }};
     * ca is required unless verify-peer is false (libnbd's and qemu's name for not checking the
     * server); cert and key come together.
     */
    private StackConfig.RemoteTlsSpec remoteTls(NodeTuple entry, String path) throws ConfigException {
        MappingNode map = mapping(entry.getValueNode(), path, "a map such as { ca: ca-cert.pem, cert: client-cert.pem,"
                + " key: client-key.pem }");
        Map<String, NodeTuple> keys = entries(map, path, Set.of("ca", "cert", "key", "verify-peer"));
        Path ca = keys.containsKey("ca") ? resolve(scalar(keys.get("ca").getValueNode(), path + ".ca"), path + ".ca")
                : null;
        Path cert = keys.containsKey("cert")
                ? resolve(scalar(keys.get("cert").getValueNode(), path + ".cert"), path + ".cert") : null;
        Path key = keys.containsKey("key") ? resolve(scalar(keys.get("key").getValueNode(), path + ".key"), path + ".key")
                : null;
        boolean verifyPeer = !keys.containsKey("verify-peer")
                || bool(keys.get("verify-peer").getValueNode(), path + ".verify-peer");
        if ((cert == null) != (key == null)) {
            throw error(map, path, null, "has a client " + (cert == null ? "key but no cert" : "cert but no key")
                    + ": give both or neither");
        }
        if (ca == null && verifyPeer) {
            throw error(map, path, null, "has no ca: give the CA that signed the server's certificate (ca: PEM),"
                    + " or verify-peer: false to accept any server (encrypted, not authenticated)");
        }
        return new StackConfig.RemoteTlsSpec(ca, cert, key, verifyPeer);
    }

    /** {@code reserves:}: a map of reserve sizes, each a whole number in 1..Reserves.MAX; keys not given keep the defaults. */
    private Reserves reserves(NodeTuple entry) throws ConfigException {
        MappingNode map = mapping(entry.getValueNode(), "reserves", "a map such as { dm-clones: 1, target-bios: 1,"
                + " bufio-buffers: 1 }");
        Map<String, NodeTuple> keys = entries(map, "reserves", RESERVE_KEYS);
        Reserves d = Reserves.DEFAULTS;
        return new Reserves(intIn(keys, "reserves", "dm-clones", d.dmClones(), 1, Reserves.MAX),
                intIn(keys, "reserves", "target-bios", d.targetBios(), 1, Reserves.MAX),
                intIn(keys, "reserves", "bufio-buffers", d.bufioBuffers(), 1, Reserves.MAX));
    }

    /** An optional top-level timeout (0 allowed), up to a day. */
    private long timeout(Map<String, NodeTuple> top, String key, long absent) throws ConfigException {
        if (!top.containsKey(key)) {
            return absent;
        }
        ScalarNode node = scalar(top.get(key).getValueNode(), key);
        return duration(node, key, TIMEOUT_NANOS_MAX, "1 day (86400s)");
    }

    /** The YAML node tree; syntax errors carry SnakeYAML's line. */
    private Node compose(String text) throws ConfigException {
        LoaderOptions options = new LoaderOptions();
        options.setMaxAliasesForCollections(16);
        options.setNestingDepthLimit(16);
        options.setCodePointLimit(TEXT_CHARS_MAX);
        try {
            Node node = new Yaml(options).compose(new StringReader(text));
            if (node == null) {
                throw new ConfigException(source, 0, "", null, "is empty: expected devices, mapped and exports");
            }
            return node;
        } catch (MarkedYAMLException e) {
            int line = e.getProblemMark() != null ? e.getProblemMark().getLine() + 1 : 0;
            throw new ConfigException(source, line, "", null, "is not valid YAML: " + e.getProblem());
        } catch (YAMLException e) {
            throw new ConfigException(source, 0, "", null, "is not valid YAML: " + e.getMessage());
        }
    }

    /** The page arena size, within bounds. */
    private long memory(Node node) throws ConfigException {
        long bytes = size(node, "memory");
        String problem = StackConfig.memoryProblem(bytes);
        if (problem != null) {
            throw error(node, "memory", value(node), problem);
        }
        return bytes;
    }

    /**
     * {@code max-connections}, {@code handshake-timeout}, {@code idle-timeout}, {@code reply-timeout}
     * and {@code request-timeout}, each optional.
     */
    private StackConfig.Connections connections(Map<String, NodeTuple> top) throws ConfigException {
        StackConfig.Connections d = StackConfig.Connections.DEFAULTS;
        int max = intIn(top, "", "max-connections", d.max(), 1, NbdServer.Options.CONNECTIONS_MAX);
        long handshake = d.handshakeTimeoutNanos();
        if (top.containsKey("handshake-timeout")) {
            ScalarNode node = scalar(top.get("handshake-timeout").getValueNode(), "handshake-timeout");
            try {
                handshake = Durations.parsePositive(node.getValue());
            } catch (IllegalArgumentException e) {
                throw error(node, "handshake-timeout", null, e.getMessage());
            }
        }
        long idle = timeoutOrOff(top, "idle-timeout", d.idleTimeoutNanos());
        long reply = timeoutOrOff(top, "reply-timeout", d.replyTimeoutNanos());
        long request = timeoutOrOff(top, "request-timeout", d.requestTimeoutNanos());
        return new StackConfig.Connections(max, handshake, idle, reply, request);
    }

    /** An optional top-level positive timeout or {@code off} (0), up to a day. */
    private long timeoutOrOff(Map<String, NodeTuple> top, String key, long absent) throws ConfigException {
        if (!top.containsKey(key)) {
            return absent;
        }
        ScalarNode node = scalar(top.get(key).getValueNode(), key);
        try {
            return Durations.parseOrOff(node.getValue());
        } catch (IllegalArgumentException e) {
            throw error(node, key, null, e.getMessage());
        }
    }

    // ---- devices --------------------------------------------------------------------------------

    private List<DeviceSpec> devices(NodeTuple entry) throws ConfigException {
        MappingNode map = mapping(entry.getValueNode(), "devices", "a map of device names to devices");
        List<DeviceSpec> out = new ArrayList<>();
        for (Map.Entry<String, NodeTuple> e : entries(map, "devices", null).entrySet()) {
            String name = name(e.getValue().getKeyNode(), "devices");
            out.add(device(name, e.getValue().getValueNode()));
        }
        return out;
    }

    /** One device: exactly one of file, memory, null, with the keys that kind allows. */
    private DeviceSpec device(String name, Node node) throws ConfigException {
        String path = "devices." + name;
        MappingNode map = mapping(node, path, "a map such as { file: data/a.img, size: 1GiB }, { memory: 256MiB }"
                + " or { null: 1GiB }");
        Map<String, NodeTuple> keys = entries(map, path, DEVICE_KEYS);
        List<String> kinds = keys.keySet().stream().filter(DEVICE_KINDS::contains).toList();
        if (kinds.size() != 1) {
            throw error(map, path, null, kinds.isEmpty()
                    ? "has no kind: give exactly one of file, memory, null, nbd"
                    : "has " + kinds.size() + " kinds (" + String.join(", ", kinds) + "): give exactly one of file, memory,"
                    + " null, nbd");
        }
        String kind = kinds.get(0);
        int line = line(map);
        switch (kind) {
            case "file" -> {
                only(keys, path, "file", FILE_KEYS);
                ScalarNode file = scalar(keys.get("file").getValueNode(), path + ".file");
                if (!keys.containsKey("size")) {
                    throw error(map, path, null, "is a file device without 'size': give the device size, such as 1GiB");
                }
                Node sizeNode = keys.get("size").getValueNode();
                long size = sectorMultiple(sizeNode, path + ".size");
                boolean direct = keys.containsKey("direct") && bool(keys.get("direct").getValueNode(), path + ".direct");
                int ioTasks = intIn(keys, path, "io-tasks", FileSpec.IO_TASKS_DEFAULT, 1, DeviceQueue.TASKS_MAX);
                int queueDepth = intIn(keys, path, "queue-depth", FileSpec.QUEUE_DEPTH_DEFAULT, 1, DeviceQueue.DEPTH_MAX);
                return new FileSpec(name, resolve(file, path + ".file"), file.getValue(), size, direct, ioTasks, queueDepth,
                        line, line(sizeNode));
            }
            case "memory" -> {
                only(keys, path, "memory", MEMORY_KEYS);
                Node sizeNode = keys.get("memory").getValueNode();
                long size = sectorMultiple(sizeNode, path + ".memory");
                return new MemorySpec(name, size, latency(keys, path), line, line(sizeNode));
            }
            case "nbd" -> {
                return remote(name, keys, path, line);
            }
            default -> {
                only(keys, path, "null", NULL_KEYS);
                Node sizeNode = keys.get("null").getValueNode();
                long size = sectorMultiple(sizeNode, path + ".null");
                return new NullSpec(name, size, latency(keys, path), line, line(sizeNode));
            }
        }
    }

    /**
     * A remote device: an NBD URI, optional connections, timeout and expected size, and for the TLS
     * schemes ({@code nbds://}, {@code nbds+unix://}) its {@code tls} map.
     */
    private RemoteSpec remote(String name, Map<String, NodeTuple> keys, String path, int line) throws ConfigException {
        only(keys, path, "nbd", REMOTE_KEYS);
        ScalarNode uri = scalar(keys.get("nbd").getValueNode(), path + ".nbd");
        io.blkstack.remote.NbdUri parsed;
        try {
            parsed = io.blkstack.remote.NbdUri.parse(uri.getValue());
        } catch (IllegalArgumentException e) {
            throw error(uri, path + ".nbd", uri.getValue(), e.getMessage());
        }
        StackConfig.RemoteTlsSpec tls = null;
        if (keys.containsKey("tls")) {
            if (!parsed.tls()) {
                throw error(keys.get("tls").getKeyNode(), path + ".tls", null, "is given but the URI '" + uri.getValue()
                        + "' does not use TLS: write nbds:// or nbds+unix:// (nbd:// never uses TLS)");
            }
            tls = remoteTls(keys.get("tls"), path + ".tls");
        } else if (parsed.tls()) {
            throw error(uri, path + ".nbd", uri.getValue(), "uses TLS but the device has no tls map: add"
                    + " tls: { ca: ca-cert.pem } (the CA that signed the server's certificate)");
        }
        int connections = intIn(keys, path, "connections", 1, 1, REMOTE_CONNECTIONS_MAX);
        long timeout = RemoteSpec.TIMEOUT_DEFAULT_NANOS;
        if (keys.containsKey("timeout")) {
            timeout = duration(scalar(keys.get("timeout").getValueNode(), path + ".timeout"), path + ".timeout",
                    TIMEOUT_NANOS_MAX, "1 day (86400s)");
            if (timeout < 1_000_000) {
                throw error(keys.get("timeout").getValueNode(), path + ".timeout", null, "must be at least 1ms");
            }
        }
        long size = 0;
        int sizeLine = line;
        if (keys.containsKey("size")) {
            Node sizeNode = keys.get("size").getValueNode();
            size = sectorMultiple(sizeNode, path + ".size");
            sizeLine = line(sizeNode);
        }
        return new RemoteSpec(name, uri.getValue(), connections, timeout, size, line, sizeLine, tls);
    }

    @SafeVarargs
    private static Set<String> union(Set<String>... sets) {
        Set<String> all = new java.util.HashSet<>();
        for (Set<String> set : sets) {
            all.addAll(set);
        }
        return Set.copyOf(all);
    }

    /** Rejects keys that exist but do not belong to {@code kind}. */
    private void only(Map<String, NodeTuple> keys, String path, String kind, Set<String> allowed) throws ConfigException {
        for (Map.Entry<String, NodeTuple> e : keys.entrySet()) {
            if (!allowed.contains(e.getKey())) {
                throw error(e.getValue().getKeyNode(), path + "." + e.getKey(), null,
                        "does not apply to a " + kind + " device (it takes: " + String.join(", ", sorted(allowed)) + ")");
            }
        }
    }

    /** The backing file's path, resolved against the configuration's directory. */
    private Path resolve(ScalarNode node, String path) throws ConfigException {
        String written = node.getValue();
        if (written.isEmpty()) {
            throw error(node, path, written, "is not a file path");
        }
        try {
            Path p = Path.of(written);
            return (p.isAbsolute() || baseDir == null ? p : baseDir.resolve(p)).normalize();
        } catch (InvalidPathException e) {
            throw error(node, path, written, "is not a file path: " + e.getReason());
        }
    }

    /** The optional latency of a memory or null device. */
    private long latency(Map<String, NodeTuple> keys, String path) throws ConfigException {
        if (!keys.containsKey("latency")) {
            return 0;
        }
        ScalarNode node = scalar(keys.get("latency").getValueNode(), path + ".latency");
        return duration(node, path + ".latency", LATENCY_NANOS_MAX, "10s");
    }

    /** A duration: a whole number with ns, us, ms or s, up to {@code maxNanos}. */
    private long duration(ScalarNode node, String path, long maxNanos, String maxText) throws ConfigException {
        String text = node.getValue();
        String problem = Durations.problem(text, maxNanos, maxText);
        if (problem != null) {
            throw error(node, path, text, problem);
        }
        return Durations.parse(text, maxNanos, maxText);
    }

    // ---- mapped devices -------------------------------------------------------------------------

    private List<MappedSpec> mapped(NodeTuple entry, List<DeviceSpec> devices) throws ConfigException {
        MappingNode map = mapping(entry.getValueNode(), "mapped", "a map of mapped device names to table text");
        Map<String, Integer> bottom = new LinkedHashMap<>();
        for (DeviceSpec d : devices) {
            bottom.put(d.name(), d.line());
        }
        List<MappedSpec> out = new ArrayList<>();
        for (Map.Entry<String, NodeTuple> e : entries(map, "mapped", null).entrySet()) {
            Node key = e.getValue().getKeyNode();
            String name = name(key, "mapped");
            if (bottom.containsKey(name)) {
                throw error(key, "mapped." + name, null, "is already the name of a device (line " + bottom.get(name)
                        + "); every device and mapped device needs its own name");
            }
            ScalarNode text = scalar(e.getValue().getValueNode(), "mapped." + name);
            if (text.getValue().isBlank()) {
                throw error(text, "mapped." + name, null, "has an empty table: give dmsetup table lines such as"
                        + " '0 2097152 linear a 0'");
            }
            boolean literal = text.getScalarStyle() == DumperOptions.ScalarStyle.LITERAL;
            out.add(new MappedSpec(name, text.getValue(), line(key), line(text), literal));
        }
        return out;
    }

    // ---- exports --------------------------------------------------------------------------------

    private List<ExportSpec> exports(NodeTuple entry, List<DeviceSpec> devices, List<MappedSpec> mapped)
            throws ConfigException {
        MappingNode map = mapping(entry.getValueNode(), "exports", "a map of export names to { device: NAME }");
        Set<String> known = new java.util.HashSet<>();
        devices.forEach(d -> known.add(d.name()));
        mapped.forEach(m -> known.add(m.name()));
        List<ExportSpec> out = new ArrayList<>();
        for (Map.Entry<String, NodeTuple> e : entries(map, "exports", null).entrySet()) {
            String name = name(e.getValue().getKeyNode(), "exports");
            String path = "exports." + name;
            MappingNode body = mapping(e.getValue().getValueNode(), path, "a map such as { device: stripe0 }");
            Map<String, NodeTuple> keys = entries(body, path, EXPORT_KEYS);
            if (!keys.containsKey("device")) {
                throw error(body, path, null, "has no 'device': name the device or mapped device to export");
            }
            ScalarNode device = scalar(keys.get("device").getValueNode(), path + ".device");
            if (!known.contains(device.getValue())) {
                throw error(device, path + ".device", device.getValue(), "names no device or mapped device; known: "
                        + (known.isEmpty() ? "none" : String.join(", ", sorted(known))));
            }
            boolean readOnly = keys.containsKey("readonly") && bool(keys.get("readonly").getValueNode(), path + ".readonly");
            String description = "";
            if (keys.containsKey("description")) {
                ScalarNode d = scalar(keys.get("description").getValueNode(), path + ".description");
                if (d.getValue().length() > DESCRIPTION_CHARS_MAX) {
                    throw error(d, path + ".description", null, "is longer than " + DESCRIPTION_CHARS_MAX + " characters");
                }
                description = d.getValue();
            }
            out.add(new ExportSpec(name, device.getValue(), readOnly, description, line(body), line(device)));
        }
        if (out.isEmpty()) {
            throw error(map, "exports", null, "is empty: name at least one device to serve");
        }
        return out;
    }

    // ---- node helpers ---------------------------------------------------------------------------

    /**
     * The entries of {@code map} by key, in file order; a key twice, a key that is not a plain
     * scalar, or (when {@code allowed} is given) a key not in {@code allowed} is an error.
     */
    private Map<String, NodeTuple> entries(MappingNode map, String path, Set<String> allowed) throws ConfigException {
        Map<String, NodeTuple> out = new LinkedHashMap<>();
        for (NodeTuple t : map.getValue()) {
            Node keyNode = t.getKeyNode();
            if (!(keyNode instanceof ScalarNode key)) {
                throw error(keyNode, path, null, "has a key that is not a plain name");
            }
            String full = path.isEmpty() ? key.getValue() : path + "." + key.getValue();
            if (allowed != null && !allowed.contains(key.getValue())) {
                throw error(key, full, null, "unknown key; known keys" + (path.isEmpty() ? "" : " of " + path)
                        + ": " + String.join(", ", sorted(allowed)));
            }
            NodeTuple before = out.putIfAbsent(key.getValue(), t);
            if (before != null) {
                throw error(key, full, null, "is given twice (first at line " + line(before.getKeyNode()) + ")");
            }
        }
        return out;
    }

    /** The node as a mapping, or an error saying what was expected. */
    private MappingNode mapping(Node node, String path, String expected) throws ConfigException {
        if (node instanceof MappingNode m) {
            return m;
        }
        throw error(node, path, node instanceof ScalarNode s ? s.getValue() : null, "is not " + expected);
    }

    /** The node as a scalar, or an error. */
    private ScalarNode scalar(Node node, String path) throws ConfigException {
        if (node instanceof ScalarNode s) {
            return s;
        }
        throw error(node, path, null, "must be a single value, not a " + (node instanceof MappingNode ? "map" : "list"));
    }

    /** A device, mapped device or export name. */
    private String name(Node key, String section) throws ConfigException {
        String name = ((ScalarNode) key).getValue();
        if (!NAME.matcher(name).matches()) {
            throw error(key, section, name, "is not a name: use 1-64 letters, digits, '_', '.', '+', '-', starting"
                    + " with a letter or digit");
        }
        return name;
    }

    /** A size in bytes through {@link Sizes#parse}: binary units only. */
    private long size(Node node, String path) throws ConfigException {
        ScalarNode s = scalar(node, path);
        try {
            return Sizes.parse(s.getValue());
        } catch (IllegalArgumentException e) {
            throw error(s, path, null, e.getMessage());
        }
    }

    /** A positive size in whole 512-byte sectors. */
    private long sectorMultiple(Node node, String path) throws ConfigException {
        long bytes = size(node, path);
        if (bytes <= 0 || bytes % 512 != 0) {
            throw error(node, path, value(node), "is not a positive multiple of 512 bytes (one sector)");
        }
        return bytes;
    }

    /** The optional whole number under {@code key}, in {@code [min, max]}; {@code fallback} if absent. */
    private int intIn(Map<String, NodeTuple> keys, String path, String key, int fallback, int min, int max)
            throws ConfigException {
        if (!keys.containsKey(key)) {
            return fallback;
        }
        String full = path.isEmpty() ? key : path + "." + key;
        ScalarNode s = scalar(keys.get(key).getValueNode(), full);
        long value;
        try {
            value = Long.parseLong(s.getValue());
        } catch (NumberFormatException e) {
            throw error(s, full, s.getValue(), "is not a whole number");
        }
        if (value < min || value > max) {
            throw error(s, full, s.getValue(), "is not in " + min + ".." + max);
        }
        return (int) value;
    }

    /** {@code true} or {@code false}, nothing else. */
    private boolean bool(Node node, String path) throws ConfigException {
        ScalarNode s = scalar(node, path);
        return switch (s.getValue()) {
            case "true" -> true;
            case "false" -> false;
            default -> throw error(s, path, s.getValue(), "is not true or false");
        };
    }

    private static String value(Node node) {
        return node instanceof ScalarNode s ? s.getValue() : null;
    }

    /** The node's 1-based line. */
    private static int line(Node node) {
        return node.getStartMark() == null ? 0 : node.getStartMark().getLine() + 1;
    }

    private ConfigException error(Node node, String path, String value, String reason) {
        return new ConfigException(source, line(node), path, value, reason);
    }

    private static List<String> sorted(Set<String> names) {
        return names.stream().sorted().toList();
    }
}
