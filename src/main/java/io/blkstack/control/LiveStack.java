package io.blkstack.control;

import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.DeviceStats;
import io.blkstack.config.Stack;
import io.blkstack.config.StackConfig;
import io.blkstack.config.StackConfig.DeviceSpec;
import io.blkstack.config.StackConfig.FileSpec;
import io.blkstack.config.StackConfig.MemorySpec;
import io.blkstack.config.StackConfig.NullSpec;
import io.blkstack.control.ControlApi.DeviceInfo;
import io.blkstack.control.ControlApi.DeviceList;
import io.blkstack.control.ControlApi.ExportInfo;
import io.blkstack.control.ControlApi.Lines;
import io.blkstack.control.ControlApi.MessageReply;
import io.blkstack.control.ControlApi.Removed;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.StatusForm;
import io.blkstack.dm.Table;
import io.blkstack.dm.TableException;
import io.blkstack.dm.Target;
import io.blkstack.dm.thin.ThinPoolTarget;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.nbd.Export;
import io.blkstack.nbd.ExportStats;
import io.blkstack.nbd.NbdServer;
import io.blkstack.units.Durations;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Consumer;
import java.util.regex.Pattern;

/**
 * The running stack as the control socket sees it: every {@code dmsetup}-like operation on a
 * {@link Stack} and the {@link NbdServer} in front of it, with the checks that keep a live change
 * from breaking what runs (the HTTP layer, {@link ControlServer}, only maps routes to these).
 *
 * <p><b>One change at a time.</b> Every operation, reads included (they walk the same maps),
 * runs alone: it waits for the one before it at most {@link #gateTimeoutNanos} (the suspend
 * bound plus {@link #GATE_SLACK_NANOS}), then is refused with {@code busy}. The caller's thread
 * (one of the control server's own threads, never a data-path task) is attached to the kernel for
 * the operation, so suspend and resume use the kernel's waits like any other control path.
 *
 * <p><b>Nothing waits for ever.</b> A suspend (also inside {@code reload}, and the implied one of
 * a {@code resume} with a loaded table) waits at most its timeout for the I/O in flight; past it
 * the suspend fails, the device runs on with its old table, and the reply says so with the number
 * of clones still in flight. A refused request changes nothing: a table is parsed and built
 * before anything is swapped, and a failed build closes what it built.
 *
 * <p><b>Dependencies.</b> A mapped device cannot be removed while a mapped device's live or loaded
 * table maps to it, an export serves it, or a connection still serves it (an export removed with
 * {@code force} whose connections are still finishing their requests); the refusal names them
 * ({@code busy: used by X / exported as Y}). A table may not name its own device or a device that
 * depends on it, so no cycle can be loaded.
 */
public final class LiveStack {

    /** How much longer than the suspend bound a request waits for the one before it. */
    static final long GATE_SLACK_NANOS = 10_000_000_000L;
    /** Device and export names: what dmsetup and NBD clients can both spell. */
    static final Pattern NAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._+-]{0,127}");
    /** Longest table text accepted in one request. */
    static final int TABLE_CHARS_MAX = 64 * 1024;

    private final Kernel kernel;
    private final Stack stack;
    private final NbdServer server;
    private final StackConfig config;
    private final long suspendTimeoutNanos;
    private final long gateTimeoutNanos;
    private final Consumer<String> log;
    private final AtomicBoolean busy = new AtomicBoolean();
    private final WaitQueue gate = new WaitQueue("control: one request at a time");
    /** Set by {@link #close}: every later request is refused. */
    private volatile boolean closed;

    /**
     * @param config the configuration in effect (command-line overrides applied): bottom devices
     *     and settings for {@link #dump}
     * @param suspendTimeoutNanos how long a suspend waits for I/O in flight unless a request says
     * @param log one line per change (create, load, suspend, resume, remove, message, export)
     */
    public LiveStack(Kernel kernel, Stack stack, NbdServer server, StackConfig config, long suspendTimeoutNanos,
            Consumer<String> log) {
        if (suspendTimeoutNanos <= 0) {
            throw new IllegalArgumentException("suspend timeout " + suspendTimeoutNanos + " ns must be positive");
        }
        this.kernel = kernel;
        this.stack = stack;
        this.server = server;
        this.config = config;
        this.suspendTimeoutNanos = suspendTimeoutNanos;
        this.gateTimeoutNanos = suspendTimeoutNanos + GATE_SLACK_NANOS;
        this.log = log;
    }

    /** An operation run under the gate. */
    @FunctionalInterface
    interface Operation<T> {
        T run() throws ControlException;
    }

    /**
     * Runs {@code op} alone, on this thread attached to the kernel as a task named {@code what};
     * refused with {@code busy} (503) if the request before it does not finish in time.
     */
    <T> T exclusive(String what, Operation<T> op) throws ControlException {
        try (Kernel.Attachment self = kernel.attach("control " + what)) {
            if (!gate.waitEventTimeout(() -> busy.compareAndSet(false, true), gate, gateTimeoutNanos, false)) {
                throw new ControlException(503, "busy", "another control request has run for more than "
                        + Durations.format(gateTimeoutNanos) + "; try again", null);
            }
            try {
                if (closed) {
                    throw new ControlException(503, "stopping", "the server is stopping; no more changes", null);
                }
                return op.run();
            } finally {
                busy.set(false);
                gate.wakeAll();
            }
        }
    }

    /**
     * Refuses every later request and waits (at most the gate's bound) for the one under way, so
     * that the owner can drain and close the stack with no live change racing it. The caller must
     * be a task of the kernel. Returns whether no request is under way any more.
     */
    public boolean close() {
        if (!gate.waitEventTimeout(() -> busy.compareAndSet(false, true), gate, gateTimeoutNanos, false)) {
            closed = true;
            return false;
        }
        closed = true;
        busy.set(false);
        gate.wakeAll();
        return true;
    }

    // ---- reads -------------------------------------------------------------------------------

    /** {@code ls}: every device with its dependencies, and every export. */
    public DeviceList list() throws ControlException {
        return exclusive("ls", () -> {
            List<DeviceInfo> devices = new ArrayList<>();
            for (BlockDevice d : stack.bottomDevices()) {
                devices.add(describe(d));
            }
            for (MappedDevice d : stack.mappedDevices()) {
                devices.add(describe(d));
            }
            return new DeviceList(devices, exportInfos());
        });
    }

    /** {@code info NAME}. */
    public DeviceInfo info(String name) throws ControlException {
        return exclusive("info", () -> describe(device(name)));
    }

    /** {@code table NAME}: the live table's lines, as they rebuild it. */
    public Lines table(String name) throws ControlException {
        return exclusive("table", () -> new Lines(name, mapped(name).status(StatusForm.TABLE)));
    }

    /** {@code status NAME}: each live target's status line. */
    public Lines status(String name) throws ControlException {
        return exclusive("status", () -> new Lines(name, mapped(name).status(StatusForm.INFO)));
    }

    /** {@code stats}: every device's statistics. */
    public ControlApi.StatsList stats() throws ControlException {
        return exclusive("stats", () -> {
            List<ControlApi.DeviceStatsReply> out = new ArrayList<>();
            for (BlockDevice d : stack.bottomDevices()) {
                out.add(statsOf(d));
            }
            for (MappedDevice d : stack.mappedDevices()) {
                out.add(statsOf(d));
            }
            List<ControlApi.ExportStatsReply> exports = new ArrayList<>();
            for (Export e : server.exports()) {
                ExportStats stats = server.exportStats(e.name());
                if (stats != null) {
                    exports.add(exportStatsOf(e, stats));
                }
            }
            return new ControlApi.StatsList(out, exports);
        });
    }

    /** {@code stats --export NAME}: one export's request statistics. */
    public ControlApi.ExportStatsReply exportStats(String name) throws ControlException {
        return exclusive("stats", () -> {
            for (Export e : server.exports()) {
                ExportStats stats = server.exportStats(e.name());
                if (e.name().equals(name) && stats != null) {
                    return exportStatsOf(e, stats);
                }
            }
            throw new ControlException(404, "no-export", "no export '" + name + "'", null, null, name);
        });
    }

    private ControlApi.ExportStatsReply exportStatsOf(Export e, ExportStats stats) {
        ExportStats.Snapshot s = stats.snapshot();
        java.util.Map<String, Long> errors = new java.util.LinkedHashMap<>();
        for (ExportStats.Error error : ExportStats.Error.values()) {
            errors.put(error.name(), s.errors(error));
        }
        java.util.Map<String, ControlApi.LatencyReply> latency = new java.util.LinkedHashMap<>();
        for (DeviceStats.LatencyClass c : DeviceStats.LatencyClass.values()) {
            DeviceStats.Latency l = s.latency(c);
            latency.put(c.name().toLowerCase(java.util.Locale.ROOT), new ControlApi.LatencyReply(l.count(),
                    micros(l.sumNanos()), micros(l.percentileNanos(50)), micros(l.percentileNanos(90)),
                    micros(l.percentileNanos(99)), micros(l.percentileNanos(99.9)), micros(l.maxNanos())));
        }
        return new ControlApi.ExportStatsReply(e.name(), e.device().name(), s.requests(ExportStats.Command.READ),
                s.requests(ExportStats.Command.WRITE), s.requests(ExportStats.Command.FLUSH),
                s.requests(ExportStats.Command.TRIM), s.requests(ExportStats.Command.WRITE_ZEROES),
                s.requests(ExportStats.Command.BLOCK_STATUS), s.requests(ExportStats.Command.CACHE),
                s.requests(ExportStats.Command.OTHER), s.bytes(ExportStats.Command.READ),
                s.bytes(ExportStats.Command.WRITE), s.bytes(ExportStats.Command.TRIM),
                s.bytes(ExportStats.Command.WRITE_ZEROES), s.inFlight(), errors, latency,
                server.clientCount(e.name()));
    }

    /** {@code stats NAME}. */
    public ControlApi.DeviceStatsReply stats(String name) throws ControlException {
        return exclusive("stats", () -> statsOf(device(name)));
    }

    private ControlApi.DeviceStatsReply statsOf(BlockDevice d) {
        DeviceStats.Snapshot s = d.stats().snapshot();
        java.util.Map<String, Long> errors = new java.util.LinkedHashMap<>();
        for (BioStatus status : BioStatus.values()) {
            if (status.isError()) {
                errors.put(status.errnoName(), s.errors(status));
            }
        }
        java.util.Map<String, ControlApi.LatencyReply> latency = new java.util.LinkedHashMap<>();
        for (DeviceStats.LatencyClass c : DeviceStats.LatencyClass.values()) {
            DeviceStats.Latency l = s.latency(c);
            latency.put(c.name().toLowerCase(java.util.Locale.ROOT), new ControlApi.LatencyReply(l.count(),
                    micros(l.sumNanos()), micros(l.percentileNanos(50)), micros(l.percentileNanos(90)),
                    micros(l.percentileNanos(99)), micros(l.percentileNanos(99.9)),
                    micros(l.count() == 0 ? 0 : l.histogram().getMaxValue())));
        }
        return new ControlApi.DeviceStatsReply(d.name(), s.ios(BioOp.READ), s.ios(BioOp.WRITE), s.ios(BioOp.FLUSH),
                s.ios(BioOp.DISCARD), s.ios(BioOp.WRITE_ZEROES), s.sectors(BioOp.READ), s.sectors(BioOp.WRITE),
                s.sectors(BioOp.DISCARD), s.sectors(BioOp.WRITE_ZEROES), s.inFlight(), errors, latency, exportsOf(d));
    }

    private static double micros(long nanos) {
        return nanos / 1000.0;
    }

    /** {@code export ls}. */
    public List<ExportInfo> exports() throws ControlException {
        return exclusive("export ls", this::exportInfos);
    }

    /** {@code dump}: the running stack as a configuration {@code serve --config} accepts. */
    public String dump() throws ControlException {
        return exclusive("dump", () -> StackDump.yaml(config, stack.mappedDevices(), server.exports()));
    }

    // ---- changes -----------------------------------------------------------------------------

    /** {@code create NAME --table TEXT}: builds a mapped device and makes it live. */
    public DeviceInfo create(String name, String text) throws ControlException {
        requireName(name, "device");
        return exclusive("create", () -> {
            if (stack.device(name) != null) {
                throw new ControlException(409, "exists", "device '" + name + "' exists", name, null, name);
            }
            Table table = parse(name, text);
            MappedDevice device;
            try {
                device = new MappedDevice(kernel, name, table);
            } catch (RuntimeException e) {
                table.close();
                throw new ControlException(400, "bad-table", "dm " + name + ": " + e.getMessage(), name);
            }
            stack.addMapped(device);
            log.accept("created " + name + " (" + device.capacitySectors() + " sectors, " + table.targetCount()
                    + " target(s))");
            return describe(device);
        });
    }

    /** {@code load NAME --table TEXT}: the table becomes live at the next resume. */
    public DeviceInfo load(String name, String text) throws ControlException {
        return exclusive("load", () -> {
            MappedDevice device = mapped(name);
            loadInto(device, text);
            log.accept("loaded an inactive table into " + name);
            return describe(device);
        });
    }

    /** {@code suspend NAME}: bounded by {@code timeout} (null: the server's default). */
    public DeviceInfo suspend(String name, String timeout) throws ControlException {
        long bound = timeout(timeout, name);
        return exclusive("suspend", () -> {
            MappedDevice device = mapped(name);
            if (device.isSuspended()) {
                throw new ControlException(409, "suspended", "dm " + name + " is already suspended", name);
            }
            suspendWithin(device, bound);
            log.accept("suspended " + name);
            return describe(device);
        });
    }

    /** {@code resume NAME}: a loaded table becomes live (after a bounded suspend if the device runs). */
    public DeviceInfo resume(String name, String timeout) throws ControlException {
        long bound = timeout(timeout, name);
        return exclusive("resume", () -> {
            MappedDevice device = mapped(name);
            boolean swap = device.hasInactiveTable();
            if (!device.isSuspended() && swap) {
                suspendWithin(device, bound);
            }
            device.resume();
            log.accept("resumed " + name + (swap ? " with its loaded table" : ""));
            return describe(device);
        });
    }

    /**
     * {@code reload NAME --table TEXT}: load, suspend (bounded), resume. If the suspend times out
     * the loaded table is dropped again and the device runs on with its old one.
     */
    public DeviceInfo reload(String name, String text, String timeout) throws ControlException {
        long bound = timeout(timeout, name);
        return exclusive("reload", () -> {
            MappedDevice device = mapped(name);
            if (device.isSuspended()) {
                throw new ControlException(409, "suspended", "dm " + name
                        + " is suspended; use load and resume", name);
            }
            loadInto(device, text);
            try {
                suspendWithin(device, bound);
            } catch (ControlException e) {
                device.clearInactiveTable();
                throw e;
            }
            device.resume();
            log.accept("reloaded " + name);
            return describe(device);
        });
    }

    /** {@code remove NAME}: refused while anything depends on it. */
    public Removed remove(String name) throws ControlException {
        return exclusive("remove", () -> {
            MappedDevice device = mapped(name);
            List<String> users = usersOf(device);
            List<String> exportedAs = exportsOf(device);
            int clients = server.clientCountOn(device);
            if (!users.isEmpty() || !exportedAs.isEmpty() || clients > 0) {
                List<String> why = new ArrayList<>();
                if (!users.isEmpty()) {
                    why.add("used by " + String.join(", ", users));
                }
                if (!exportedAs.isEmpty()) {
                    why.add("exported as " + String.join(", ", exportedAs));
                }
                if (clients > 0) {
                    why.add(clients + " NBD connection(s) still serving it");
                }
                throw new ControlException(409, "busy", "busy: " + String.join(" / ", why), name);
            }
            stack.removeMapped(device);
            log.accept("removed " + name);
            return new Removed(name, 0);
        });
    }

    /** {@code message NAME SECTOR MESSAGE}: to the live target covering {@code sector}. */
    public MessageReply message(String name, Long sector, String message) throws ControlException {
        if (sector == null || sector < 0) {
            throw new ControlException(400, "bad-request", "message to " + name + ": 'sector' must be a sector number"
                    + " (got " + sector + ")", name, null, String.valueOf(sector));
        }
        if (message == null || message.isBlank()) {
            throw new ControlException(400, "bad-request", "message to " + name + ": 'message' is empty", name);
        }
        return exclusive("message", () -> {
            MappedDevice device = mapped(name);
            if (sector >= device.capacitySectors()) {
                throw new ControlException(400, "bad-request", "message to " + name + ": sector " + sector
                        + " is beyond its " + device.capacitySectors() + " sectors", name, null, sector.toString());
            }
            String[] words = message.strip().split("\\s+");
            String reply;
            try {
                reply = device.message(sector, words);
            } catch (IllegalArgumentException | IllegalStateException | UnsupportedOperationException e) {
                throw new ControlException(400, "bad-message", "message '" + message.strip() + "' to " + name
                        + " at sector " + sector + ": " + e.getMessage(), name, null, message.strip());
            }
            log.accept("message to " + name + " at sector " + sector + ": " + message.strip());
            return new MessageReply(name, sector, message.strip(), reply);
        });
    }

    /** {@code export add NAME --device D}. */
    public ExportInfo addExport(String name, String deviceName, boolean readOnly, String description)
            throws ControlException {
        requireName(name, "export");
        if (deviceName == null) {
            throw new ControlException(400, "bad-request", "export " + name + ": 'device' is missing", null);
        }
        return exclusive("export add", () -> {
            BlockDevice device = device(deviceName);
            Export served;
            try {
                served = server.addExport(new Export(name, device, readOnly, description));
            } catch (IllegalArgumentException e) {
                boolean taken = e.getMessage().contains("exists");
                throw new ControlException(taken ? 409 : 400, taken ? "exists" : "bad-request", e.getMessage(),
                        deviceName, null, name);
            }
            log.accept("export " + name + " added: " + deviceName + (readOnly ? ", read-only" : ""));
            return exportInfo(served);
        });
    }

    /** {@code export remove NAME [--force]}. */
    public Removed removeExport(String name, boolean force) throws ControlException {
        return exclusive("export remove", () -> {
            int closed;
            try {
                closed = server.removeExport(name, force);
            } catch (IllegalArgumentException e) {
                throw new ControlException(404, "no-export", e.getMessage(), null, null, name);
            } catch (IllegalStateException e) {
                throw new ControlException(409, "busy", e.getMessage(), null, null, name);
            }
            log.accept("export " + name + " removed" + (closed > 0 ? ", closing " + closed + " connection(s)" : ""));
            return new Removed(name, closed);
        });
    }

    // ---- helpers -----------------------------------------------------------------------------

    /** Parses {@code text} into a table and {@link MappedDevice#loadTable loads} it, or refuses. */
    private void loadInto(MappedDevice device, String text) throws ControlException {
        Table table = parse(device.name(), text);
        try {
            device.loadTable(table);
        } catch (IllegalArgumentException e) {
            table.close();
            throw new ControlException(400, "bad-table", e.getMessage() + " (" + device.name() + ")", device.name(),
                    null, Long.toString(table.lengthSectors()));
        }
    }

    /**
     * Parses a table for mapped device {@code name}; refuses a table naming the device itself, or
     * a device that already depends on it (a cycle).
     */
    private Table parse(String name, String text) throws ControlException {
        if (text == null || text.isBlank()) {
            throw new ControlException(400, "bad-table", "dm " + name + ": 'table' is empty", name);
        }
        if (text.length() > TABLE_CHARS_MAX) {
            throw new ControlException(400, "bad-table", "dm " + name + ": table longer than " + TABLE_CHARS_MAX
                    + " characters", name);
        }
        BlockDevice self = stack.device(name);
        String[] refused = new String[1];
        Table table;
        try {
            table = Table.parse(kernel, name, text, n -> {
                BlockDevice d = stack.device(n);
                if (d != null && self != null && (d == self || dependsOn(d, self))) {
                    refused[0] = n;
                    return null;
                }
                return d;
            });
        } catch (TableException e) {
            String message = "dm " + name + ": " + e.getMessage();
            if (refused[0] != null && refused[0].equals(e.value())) {
                message = "dm " + name + ": line " + e.line() + ": '" + e.value() + "' "
                        + (refused[0].equals(name) ? "is the device itself" : "depends on " + name)
                        + "; a table cannot make a cycle";
            }
            throw new ControlException(400, "bad-table", message, name, e.line() > 0 ? e.line() : null, e.value());
        }
        for (Target t : table.targets()) {
            if (t instanceof ThinPoolTarget pool) {
                pool.applyDefaultNoSpaceTimeout(config.noSpaceTimeoutNanos());
            }
        }
        return table;
    }

    /** Whether {@code upper}'s tables map, directly or further down, to {@code lower}. */
    private static boolean dependsOn(BlockDevice upper, BlockDevice lower) {
        Deque<BlockDevice> todo = new ArrayDeque<>();
        Set<BlockDevice> seen = new HashSet<>();
        todo.push(upper);
        while (!todo.isEmpty()) {
            BlockDevice d = todo.pop();
            if (d == lower) {
                return true;
            }
            if (seen.add(d) && d instanceof MappedDevice m) {
                todo.addAll(tablesDevices(m));
            }
        }
        return false;
    }

    /** The devices {@code m}'s live table and its loaded table (if any) map to. */
    private static List<BlockDevice> tablesDevices(MappedDevice m) {
        List<BlockDevice> out = dependencies(m.table());
        Table loaded = m.inactiveTable();
        if (loaded != null) {
            out.addAll(dependencies(loaded));
        }
        return out;
    }

    /** What {@code table}'s targets need to exist ({@link Target#dependencies}), without repeats, in table order. */
    static List<BlockDevice> dependencies(Table table) {
        List<BlockDevice> out = new ArrayList<>();
        for (int i = 0; i < table.targetCount(); i++) {
            for (BlockDevice d : table.target(i).dependencies()) {
                if (!out.contains(d)) {
                    out.add(d);
                }
            }
        }
        return out;
    }

    /** Suspends within {@code bound}, or refuses with {@code timeout} (the device runs on). */
    private static void suspendWithin(MappedDevice device, long bound) throws ControlException {
        if (!device.suspend(bound)) {
            throw new ControlException(503, "timeout", "dm " + device.name() + ": suspend did not finish within "
                    + Durations.format(bound) + " (" + device.inFlight() + " clone(s) still in flight); the device"
                    + " runs on unchanged", device.name(), null, Durations.format(bound));
        }
    }

    /** A request's timeout, or the server's default. */
    private long timeout(String text, String device) throws ControlException {
        if (text == null) {
            return suspendTimeoutNanos;
        }
        try {
            return Durations.parse(text, Durations.NANOS_MAX, "1 day (86400s)");
        } catch (IllegalArgumentException e) {
            throw new ControlException(400, "bad-request", "'timeout': " + e.getMessage(), device, null, text);
        }
    }

    private static void requireName(String name, String what) throws ControlException {
        if (name == null || !NAME.matcher(name).matches()) {
            throw new ControlException(400, "bad-name", what + " name '" + name + "' must match " + NAME.pattern(),
                    null, null, name);
        }
    }

    /** A device by name, or 404. */
    private BlockDevice device(String name) throws ControlException {
        BlockDevice d = name == null ? null : stack.device(name);
        if (d == null) {
            throw new ControlException(404, "no-device", "no device '" + name + "'", name, null, name);
        }
        return d;
    }

    /** A mapped device by name: 404 if none, 400 if it is a bottom device. */
    private MappedDevice mapped(String name) throws ControlException {
        BlockDevice d = device(name);
        if (!(d instanceof MappedDevice m)) {
            throw new ControlException(400, "not-mapped", "'" + name + "' is a bottom device from the configuration,"
                    + " not a mapped device", name, null, name);
        }
        return m;
    }

    /** The mapped devices whose live or loaded table maps to {@code device}. */
    private List<String> usersOf(BlockDevice device) {
        List<String> users = new ArrayList<>();
        for (MappedDevice m : stack.mappedDevices()) {
            if (m != device && tablesDevices(m).contains(device)) {
                users.add(m.name());
            }
        }
        return users;
    }

    private List<String> exportsOf(BlockDevice device) {
        List<String> names = new ArrayList<>();
        for (Export e : server.exports()) {
            if (e.device() == device) {
                names.add(e.name());
            }
        }
        return names;
    }

    private DeviceInfo describe(BlockDevice d) {
        List<String> exportedAs = exportsOf(d);
        List<String> usedBy = usersOf(d);
        int clients = server.clientCountOn(d);
        if (d instanceof MappedDevice m) {
            List<String> deps = new ArrayList<>();
            for (BlockDevice lower : dependencies(m.table())) {
                deps.add(lower.name());
            }
            return new DeviceInfo(m.name(), "mapped", m.capacitySectors(), m.isSuspended() ? "SUSPENDED" : "ACTIVE",
                    m.table().targetCount(), m.hasInactiveTable(), deps, usedBy, exportedAs, clients);
        }
        return new DeviceInfo(d.name(), kindOf(d.name()), d.capacitySectors(), "ACTIVE", null, null, List.of(),
                usedBy, exportedAs, clients);
    }

    private String kindOf(String name) {
        for (DeviceSpec spec : config.devices()) {
            if (spec.name().equals(name)) {
                return switch (spec) {
                    case FileSpec f -> "file";
                    case MemorySpec m -> "memory";
                    case NullSpec n -> "null";
                    case StackConfig.RemoteSpec r -> "nbd";
                };
            }
        }
        return "bottom";
    }

    private List<ExportInfo> exportInfos() {
        List<ExportInfo> out = new ArrayList<>();
        for (Export e : server.exports()) {
            out.add(exportInfo(e));
        }
        return out;
    }

    private ExportInfo exportInfo(Export e) {
        return new ExportInfo(e.name(), e.device().name(), e.readOnly(), e.description(), e.sizeBytes(),
                server.clientCount(e.name()));
    }
}
