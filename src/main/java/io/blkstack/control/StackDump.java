package io.blkstack.control;

import io.blkstack.block.BlockDevice;
import io.blkstack.config.ListenAddress;
import io.blkstack.config.StackConfig;
import io.blkstack.config.StackConfig.DeviceSpec;
import io.blkstack.config.StackConfig.FileSpec;
import io.blkstack.config.StackConfig.MemorySpec;
import io.blkstack.config.StackConfig.NullSpec;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.StatusForm;
import io.blkstack.nbd.Export;
import io.blkstack.units.Durations;
import io.blkstack.units.Sizes;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.yaml.snakeyaml.DumperOptions;
import org.yaml.snakeyaml.Yaml;
import org.yaml.snakeyaml.nodes.Tag;
import org.yaml.snakeyaml.representer.Represent;
import org.yaml.snakeyaml.representer.Representer;

/**
 * {@code blkstack ctl dump}: the running stack written as a configuration that {@code serve
 * --config} accepts, so a live change can be kept (live changes are runtime-only, like dmsetup's).
 * Settings and bottom devices come from the configuration in effect; mapped devices are their live
 * tables (as {@code table} prints them), ordered so that each names only devices above it; exports
 * are the server's now. Thin ids and snapshots live in the pool's metadata, as in dm-thin. Written
 * with SnakeYAML; multi-line tables as literal blocks.
 */
final class StackDump {

    private StackDump() {
    }

    /** A file mode in octal, as the configuration's {@code mode} takes it ({@code 0660}). */
    private static String octal(Set<PosixFilePermission> mode) {
        String rwx = PosixFilePermissions.toString(mode);
        StringBuilder out = new StringBuilder("0");
        for (int i = 0; i < 9; i += 3) {
            out.append((rwx.charAt(i) == 'r' ? 4 : 0) + (rwx.charAt(i + 1) == 'w' ? 2 : 0) + (rwx.charAt(i + 2) == 'x' ? 1 : 0));
        }
        return out.toString();
    }

    /** The YAML text. */
    static String yaml(StackConfig config, List<MappedDevice> mapped, List<Export> exports) {
        Map<String, Object> root = new LinkedHashMap<>();
        root.put("memory", Sizes.format(config.memoryBytes()));
        List<Object> listen = new ArrayList<>();
        for (ListenAddress l : config.listeners()) {
            listen.add(!l.isUnix() || l.socketMode().equals(ListenAddress.SOCKET_MODE_DEFAULT) ? l.toString()
                    : Map.of("unix", l.socket().toString(), "mode", octal(l.socketMode())));
        }
        root.put("listen", listen.size() == 1 ? listen.get(0) : listen);
        root.put("control", config.controlPath().toString());
        if (config.metrics() != null) {
            root.put("metrics", config.metrics().toString());
        }
        StackConfig.TlsSpec tls = config.tls();
        if (tls.mode() != io.blkstack.nbd.ServerTls.Mode.OFF) {
            Map<String, Object> t = new LinkedHashMap<>();
            t.put("mode", tls.mode().name().toLowerCase());
            t.put("cert", tls.cert().toString());
            t.put("key", tls.key().toString());
            if (tls.ca() != null) {
                t.put("ca", tls.ca().toString());
            }
            root.put("tls", t);
        }
        StackConfig.Connections c = config.connections();
        root.put("max-connections", c.max());
        root.put("handshake-timeout", Durations.format(c.handshakeTimeoutNanos()));
        root.put("idle-timeout", offOr(c.idleTimeoutNanos()));
        root.put("reply-timeout", offOr(c.replyTimeoutNanos()));
        root.put("request-timeout", offOr(c.requestTimeoutNanos()));
        root.put("no-space-timeout", Durations.format(config.noSpaceTimeoutNanos()));
        root.put("drain-timeout", Durations.format(config.drainTimeoutNanos()));
        if (config.logLevel() != null) {
            root.put("log-level", config.logLevel());
        }
        Map<String, Object> devices = new LinkedHashMap<>();
        for (DeviceSpec spec : config.devices()) {
            devices.put(spec.name(), device(spec));
        }
        root.put("devices", devices);
        Map<String, Object> tables = new LinkedHashMap<>();
        for (MappedDevice m : dependencyOrder(mapped)) {
            tables.put(m.name(), String.join("\n", m.status(StatusForm.TABLE)) + "\n");
        }
        root.put("mapped", tables);
        Map<String, Object> out = new LinkedHashMap<>();
        for (Export e : exports) {
            Map<String, Object> export = new LinkedHashMap<>();
            export.put("device", e.device().name());
            if (e.readOnly()) {
                export.put("readonly", true);
            }
            if (!e.description().isEmpty()) {
                export.put("description", e.description());
            }
            out.put(e.name(), export);
        }
        root.put("exports", out);
        DumperOptions options = new DumperOptions();
        options.setDefaultFlowStyle(DumperOptions.FlowStyle.BLOCK);
        options.setIndent(2);
        return "# blkstack ctl dump: the running stack; serve it again with blkstack serve --config FILE\n"
                + new Yaml(new LiteralTables(options), options).dump(root);
    }

    private static Object offOr(long nanos) {
        return nanos == 0 ? "off" : Durations.format(nanos);
    }

    private static Map<String, Object> device(DeviceSpec spec) {
        Map<String, Object> d = new LinkedHashMap<>();
        switch (spec) {
            case FileSpec f -> {
                d.put("file", f.path().toString());
                d.put("size", Sizes.format(f.sizeBytes()));
                if (f.direct()) {
                    d.put("direct", true);
                }
                d.put("io-tasks", f.ioTasks());
                d.put("queue-depth", f.queueDepth());
            }
            case MemorySpec m -> {
                d.put("memory", Sizes.format(m.sizeBytes()));
                if (m.latencyNanos() > 0) {
                    d.put("latency", m.latencyNanos() / 1000 + "us");
                }
            }
            case NullSpec n -> {
                d.put("null", Sizes.format(n.sizeBytes()));
                if (n.latencyNanos() > 0) {
                    d.put("latency", n.latencyNanos() / 1000 + "us");
                }
            }
            case StackConfig.RemoteSpec r -> {
                d.put("nbd", r.uri());
                d.put("connections", r.connections());
                d.put("timeout", Durations.format(r.timeoutNanos()));
                if (r.sizeBytes() > 0) {
                    d.put("size", Sizes.format(r.sizeBytes()));
                }
                if (r.tls() != null) {
                    Map<String, Object> t = new LinkedHashMap<>();
                    if (r.tls().ca() != null) {
                        t.put("ca", r.tls().ca().toString());
                    }
                    if (r.tls().cert() != null) {
                        t.put("cert", r.tls().cert().toString());
                        t.put("key", r.tls().key().toString());
                    }
                    if (!r.tls().verifyPeer()) {
                        t.put("verify-peer", false);
                    }
                    d.put("tls", t);
                }
            }
        }
        return d;
    }

    /** The mapped devices with every device after the mapped devices its live table names. */
    static List<MappedDevice> dependencyOrder(List<MappedDevice> mapped) {
        List<MappedDevice> order = new ArrayList<>(mapped.size());
        Set<MappedDevice> placed = new HashSet<>();
        for (MappedDevice m : mapped) {
            place(m, mapped, placed, order, 0);
        }
        return order;
    }

    private static void place(MappedDevice m, List<MappedDevice> all, Set<MappedDevice> placed,
            List<MappedDevice> order, int depth) {
        if (placed.contains(m)) {
            return;
        }
        if (depth > all.size()) {
            throw new IllegalStateException("dm " + m.name() + ": the live tables form a cycle");
        }
        for (BlockDevice lower : LiveStack.dependencies(m.table())) {
            if (lower instanceof MappedDevice below && all.contains(below)) {
                place(below, all, placed, order, depth + 1);
            }
        }
        placed.add(m);
        order.add(m);
    }

    /** Writes strings with line breaks (tables) as literal blocks. */
    private static final class LiteralTables extends Representer {
        LiteralTables(DumperOptions options) {
            super(options);
            Represent quotedWhereNeeded = this.representers.get(String.class);
            this.representers.put(String.class, data -> ((String) data).contains("\n")
                    ? representScalar(Tag.STR, (String) data, DumperOptions.ScalarStyle.LITERAL)
                    : quotedWhereNeeded.representData(data));
        }
    }
}
