package io.blkstack.config;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.FileDevice;
import io.blkstack.block.LockedFile;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.NullDevice;
import io.blkstack.block.Submit;
import io.blkstack.config.StackConfig.DeviceSpec;
import io.blkstack.config.StackConfig.ExportSpec;
import io.blkstack.config.StackConfig.FileSpec;
import io.blkstack.config.StackConfig.MappedSpec;
import io.blkstack.config.StackConfig.MemorySpec;
import io.blkstack.config.StackConfig.NullSpec;
import io.blkstack.config.StackConfig.RemoteSpec;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.Table;
import io.blkstack.dm.TableException;
import io.blkstack.dm.thin.ThinPoolTarget;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;
import io.blkstack.nbd.Export;
import io.blkstack.remote.ClientTls;
import io.blkstack.remote.NbdUri;
import io.blkstack.remote.RemoteDevice;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A running stack built from a {@link StackConfig}: the bottom devices, the mapped devices over
 * them, and the exports. It owns every device and closes them in reverse build order (top first),
 * so no device is closed while one above it can still send it bios.
 *
 * <p>Build order: bottom devices in file order, then mapped devices in file order, each table
 * parsed with a resolver over the devices built so far (so a table can name only devices and
 * mapped devices above it: a forward reference is an error naming its line), then exports. An
 * error at any step closes what was built and reports the file and line; a table's own line is
 * mapped to the YAML line inside the mapped device's block.
 *
 * <p>{@link Mode#DRY} builds every bottom device as a {@link NullDevice} of the configured size
 * and touches no file: that is how {@code table check} validates tables against real device
 * sizes without creating backing files. (A file device with {@code direct: true} gets the file
 * system's block size as its logical block size only in {@link Mode#SERVE}; a dry run checks
 * alignment against 512-byte sectors.)
 */
public final class Stack implements AutoCloseable {

    /** How bottom devices are built. */
    public enum Mode {
        /** Open (and create sparse) backing files, allocate memory devices: a stack to serve. */
        SERVE,
        /** Null devices of the configured sizes; nothing on disk is touched. */
        DRY
    }

    /**
     * Builds a bottom device in place of the configured one: the checker gives every file device a
     * simulated device of the same size ({@code blkstack check --config}), so nothing on disk is touched.
     */
    @FunctionalInterface
    public interface DeviceStandIn {
        /** A device named and sized as {@code spec}, built on {@code kernel}; null to build it as configured. */
        BlockDevice build(Kernel kernel, DeviceSpec spec);
    }

    /** Flush bios in the reserve of the stack's own bio set (one flush at a time). */
    static final int FLUSH_POOL_SIZE = 2;

    private final Kernel kernel;
    private final StackConfig config;
    private final BioSet flushSet;
    private final Map<String, BlockDevice> devices = new LinkedHashMap<>();
    private final List<BlockDevice> bottom = new ArrayList<>();
    private final List<MappedDevice> mapped = new ArrayList<>();
    private final List<Export> exports = new ArrayList<>();
    private boolean closed;

    private Stack(Kernel kernel, StackConfig config) {
        this.kernel = kernel;
        this.config = config;
        this.flushSet = new BioSet(kernel, "stack-flush", FLUSH_POOL_SIZE, 0, null, false);
    }

    /**
     * Builds the stack on {@code kernel}; the caller must be a task of it.
     *
     * @throws ConfigException a table, reference or size that does not work, with file and line
     * @throws IOException a backing file that cannot be created or opened (also with file and line)
     */
    public static Stack build(Kernel kernel, StackConfig config, Mode mode) throws ConfigException, IOException {
        return build(kernel, config, mode, null);
    }

    /**
     * Builds the stack as {@link Mode#SERVE} does, except that every bottom device for which
     * {@code standIn} gives one is that device; {@code standIn} must give one for every file device.
     */
    public static Stack build(Kernel kernel, StackConfig config, DeviceStandIn standIn) throws ConfigException, IOException {
        if (standIn == null) {
            throw new IllegalArgumentException("no stand-in for the bottom devices");
        }
        return build(kernel, config, Mode.SERVE, standIn);
    }

    private static Stack build(Kernel kernel, StackConfig config, Mode mode, DeviceStandIn standIn)
            throws ConfigException, IOException {
        Stack stack = new Stack(kernel, config);
        try {
            for (DeviceSpec spec : config.devices()) {
                BlockDevice device = null;
                if (mode == Mode.DRY) {
                    device = stack.dry(spec);
                } else if (standIn != null) {
                    device = standIn.build(kernel, spec);
                    if (device == null && spec instanceof FileSpec) {
                        throw new IllegalStateException("devices." + spec.name() + ": the stand-in gave no device for a file");
                    }
                }
                stack.addBottom(device != null ? device : stack.open(spec));
            }
            for (int i = 0; i < config.mapped().size(); i++) {
                stack.addMapped(i);
            }
            for (ExportSpec spec : config.exports()) {
                stack.addExport(spec);
            }
            return stack;
        } catch (ConfigException | IOException | RuntimeException e) {
            stack.close();
            throw e;
        }
    }

    /** Opens one bottom device for serving. */
    private BlockDevice open(DeviceSpec spec) throws ConfigException, IOException {
        try {
            return switch (spec) {
                case FileSpec f -> openFile(f);
                case MemorySpec m -> new MemoryDevice(kernel, m.name(), m.sizeBytes(), m.latencyNanos());
                case NullSpec n -> new NullDevice(kernel, n.name(), n.sizeBytes(), n.latencyNanos());
                case RemoteSpec r -> openRemote(r);
            };
        } catch (IllegalArgumentException e) {
            throw new ConfigException(config.source(), spec.sizeLine(), "devices." + spec.name(), null, e.getMessage());
        }
    }

    /** A dry run's stand-in: a null device of the configured size (a remote device must give its size). */
    private BlockDevice dry(DeviceSpec spec) throws ConfigException {
        if (spec instanceof RemoteSpec r && r.sizeBytes() == 0) {
            throw new ConfigException(config.source(), r.line(), "devices." + r.name(), null,
                    "is a remote device without 'size': a dry run does not connect, so give the export's size");
        }
        return new NullDevice(kernel, spec.name(), spec.sizeBytes(), 0);
    }

    /** Connects a remote device; its size must match the configured one, if given. */
    private RemoteDevice openRemote(RemoteSpec r) throws IOException, ConfigException {
        RemoteDevice.Options options = RemoteDevice.Options.of(NbdUri.parse(r.uri())).withConnections(r.connections())
                .withTimeoutNanos(r.timeoutNanos());
        RemoteDevice device;
        try {
            if (r.tls() != null) {
                options = options.withTls(ClientTls.load(r.tls().ca(), r.tls().cert(), r.tls().key(), r.tls().verifyPeer()));
            }
            device = RemoteDevice.open(kernel, r.name(), options);
        } catch (IOException e) {
            throw new IOException(config.source() + ":" + r.line() + ": devices." + r.name() + ".nbd: " + e.getMessage(), e);
        }
        if (r.sizeBytes() != 0 && device.capacityBytes() != r.sizeBytes()) {
            long actual = device.capacityBytes();
            device.close();
            throw new ConfigException(config.source(), r.sizeLine(), "devices." + r.name() + ".size", null,
                    "is " + r.sizeBytes() + " bytes but the export has " + actual);
        }
        return device;
    }

    /** Opens a file device, creating the file (and its directory) sparse if missing. */
    private FileDevice openFile(FileSpec f) throws IOException {
        try {
            Path parent = f.path().getParent();
            if (parent != null) {
                Files.createDirectories(parent);
            }
            FileDevice.Options options = FileDevice.Options.defaults().withCreate(true).withDirect(f.direct())
                    .withIoTasks(f.ioTasks()).withQueueDepth(f.queueDepth());
            return FileDevice.open(kernel, f.name(), f.path(), f.sizeBytes(), options);
        } catch (LockedFile.FileInUseException e) {
            // Another server (or a tool) owns the file: say which file, and where it was configured.
            throw new LockedFile.FileInUseException(e.path(), config.source() + ":" + f.line() + ": devices." + f.name()
                    + ".file: ", e);
        } catch (IOException e) {
            throw new IOException(config.source() + ":" + f.line() + ": devices." + f.name() + ".file: '" + f.written()
                    + "' (" + f.path() + ") cannot be opened: " + e, e);
        }
    }

    private void addBottom(BlockDevice device) {
        bottom.add(device);
        devices.put(device.name(), device);
    }

    /** Parses mapped device {@code index}'s table over what exists so far and builds the device. */
    private void addMapped(int index) throws ConfigException {
        MappedSpec spec = config.mapped().get(index);
        Table table;
        try {
            table = Table.parse(kernel, spec.name(), spec.table(), devices::get);
        } catch (TableException e) {
            throw tableError(index, e);
        }
        for (int t = 0; t < table.targetCount(); t++) {
            if (table.target(t) instanceof ThinPoolTarget pool) {
                pool.applyDefaultNoSpaceTimeout(config.noSpaceTimeoutNanos());
            }
        }
        try {
            MappedDevice device = new MappedDevice(kernel, spec.name(), table);
            mapped.add(device);
            devices.put(spec.name(), device);
        } catch (RuntimeException e) {
            table.close();
            throw new ConfigException(config.source(), spec.line(), "mapped." + spec.name(), null, e.getMessage());
        }
    }

    /**
     * The configuration error for a table error: the table's line mapped to the file's, and a
     * name that refers forward (or to the device itself) said so plainly.
     */
    private ConfigException tableError(int index, TableException e) {
        MappedSpec spec = config.mapped().get(index);
        int line = spec.fileLine(e.line());
        String path = "mapped." + spec.name() + (e.line() > 0 ? " (table line " + e.line() + ")" : "");
        String value = e.value();
        String where = (e.targetType() != null ? e.targetType() + ": " : "")
                + (e.argument() > 0 ? "argument " + e.argument() + " " : "");
        if (value != null && value.equals(spec.name())) {
            return new ConfigException(config.source(), line, path, null, where + "'" + value
                    + "' is the mapped device this table defines; a table cannot name its own device");
        }
        List<MappedSpec> all = config.mapped();
        for (int j = index + 1; j < all.size(); j++) {
            if (all.get(j).name().equals(value)) {
                return new ConfigException(config.source(), line, path, null, where + "'" + value
                        + "' is a forward reference: it is defined later (line " + all.get(j).line()
                        + "); a table may only name devices and mapped devices defined above it");
            }
        }
        String message = e.getMessage();
        String prefix = "line " + e.line() + ": ";
        if (e.line() > 0 && message.startsWith(prefix)) {
            message = message.substring(prefix.length());
        }
        return new ConfigException(config.source(), line, path, null, message);
    }

    /** Builds one export over an existing device. */
    private void addExport(ExportSpec spec) throws ConfigException {
        BlockDevice device = devices.get(spec.device());
        if (device == null) {
            throw new IllegalStateException("export " + spec.name() + " names '" + spec.device()
                    + "', which the reader accepted but was not built");
        }
        try {
            exports.add(new Export(spec.name(), device, spec.readOnly(), spec.description()));
        } catch (IllegalArgumentException e) {
            throw new ConfigException(config.source(), spec.line(), "exports." + spec.name(), null, e.getMessage());
        }
    }

    /** The exports, in file order. */
    public List<Export> exports() {
        return List.copyOf(exports);
    }

    /** A device or mapped device by name, or null. */
    public BlockDevice device(String name) {
        return devices.get(name);
    }

    /** The mapped devices, in build order. */
    public List<MappedDevice> mappedDevices() {
        return List.copyOf(mapped);
    }

    /** The bottom devices, in file order. */
    public List<BlockDevice> bottomDevices() {
        return List.copyOf(bottom);
    }

    /**
     * Adds a mapped device built at run time (the control socket's {@code create}): the stack owns
     * it from now on and closes it before the devices built earlier. The caller serialises changes.
     */
    public void addMapped(MappedDevice device) {
        if (closed || devices.containsKey(device.name())) {
            throw new IllegalArgumentException("stack: cannot add mapped device '" + device.name() + "': "
                    + (closed ? "the stack is closed" : "the name is taken"));
        }
        mapped.add(device);
        devices.put(device.name(), device);
    }

    /**
     * Removes a mapped device and closes it (the control socket's {@code remove}); the caller has
     * checked that no device, export or connection uses it, and serialises changes.
     */
    public void removeMapped(MappedDevice device) {
        if (!mapped.remove(device)) {
            throw new IllegalArgumentException("stack: '" + device.name() + "' is not a mapped device of this stack");
        }
        devices.remove(device.name());
        device.close();
    }

    /**
     * Sends an empty FLUSH bio to every mapped device (top first) and then to every bottom device,
     * waiting for each, and returns the devices whose flush failed with the status (empty if all
     * succeeded). The caller must be a task outside the submit loop. One flush bio is out at a time,
     * so the two-bio reserve always suffices.
     */
    public List<String> flushAll() {
        List<String> failures = new ArrayList<>();
        List<BlockDevice> order = new ArrayList<>();
        for (int i = mapped.size() - 1; i >= 0; i--) {
            order.add(mapped.get(i));
        }
        order.addAll(bottom);
        for (BlockDevice device : order) {
            Bio bio = flushSet.alloc(Gfp.NOIO, 0).init(device, BioOp.FLUSH, 0, 0);
            try {
                BioStatus status = Submit.submitAndWaitStatus(bio);
                if (status != BioStatus.OK) {
                    failures.add(device.name() + ": " + status);
                }
            } finally {
                bio.put();
            }
        }
        return failures;
    }

    /**
     * Fails, with {@code status}, every bio a mapped device's target holds back waiting for a
     * resource that may never come (a full thin pool's queued writes; see
     * {@link io.blkstack.dm.Target#failWaiting}); returns how many. Never blocks.
     */
    public int failWaiting(BioStatus status) {
        int failed = 0;
        for (MappedDevice device : mapped) {
            for (io.blkstack.dm.Target target : device.table().targets()) {
                failed += target.failWaiting(status);
            }
        }
        return failed;
    }

    /**
     * Resumes every suspended mapped device with its live table ({@link MappedDevice#resumeLive}),
     * bottom first, so that what they hold goes out; returns their names.
     */
    public List<String> resumeSuspended() {
        List<String> resumed = new ArrayList<>();
        for (MappedDevice device : mapped) {
            if (device.resumeLive()) {
                resumed.add(device.name());
            }
        }
        return resumed;
    }

    /** Closes mapped devices last built first, then bottom devices last first, then the flush set. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        List<RuntimeException> failures = new ArrayList<>();
        for (int i = mapped.size() - 1; i >= 0; i--) {
            closeQuietly(mapped.get(i), failures);
        }
        for (int i = bottom.size() - 1; i >= 0; i--) {
            closeQuietly(bottom.get(i), failures);
        }
        try {
            flushSet.close();
        } catch (RuntimeException e) {
            failures.add(e);
        }
        exports.clear();
        if (!failures.isEmpty()) {
            RuntimeException first = failures.get(0);
            failures.subList(1, failures.size()).forEach(first::addSuppressed);
            throw first;
        }
    }

    private static void closeQuietly(BlockDevice device, List<RuntimeException> failures) {
        try {
            device.close();
        } catch (RuntimeException e) {
            failures.add(e);
        }
    }
}
