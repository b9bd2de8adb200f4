package io.blkstack.sim.workload;

import io.blkstack.bio.Bio;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.CachedMemoryDevice;
import io.blkstack.block.MemoryDevice;
import io.blkstack.config.ConfigException;
import io.blkstack.config.Stack;
import io.blkstack.config.StackConfig;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.Table;
import io.blkstack.dm.TableException;
import io.blkstack.dm.Target;
import io.blkstack.dm.thin.ThinPoolTarget;
import io.blkstack.dm.thin.ThinTarget;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.remote.NbdUri;
import io.blkstack.remote.RemoteDevice;
import io.blkstack.sim.SimFaults;
import io.blkstack.sim.nbd.SimNbdServer;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A configuration's stack under the checker (DESIGN.md section 7): the real targets of the
 * configuration over simulated bottom devices, with every control event a workload can schedule.
 *
 * <p>Every file device becomes a {@link CachedMemoryDevice} of the same size: a volatile cache over
 * sparse stable chunks (a page cache that always hits), a seeded latency of
 * {@link #FILE_LATENCY_NANOS} plus whatever the {@code latency:<name>} fault adds, and the
 * {@code io:<name>} fault site. A {@code direct: true} file keeps 512-byte logical blocks (the
 * simulated device has no file system block size). Memory devices become write-through devices of
 * the same kind with their configured latency, so a restart keeps them as a ram disk survives a
 * reload; null devices stay as configured. The media live as long as the run, so a crash can
 * drop what was not flushed and build the stack again over what was.
 *
 * <p>A remote ({@code nbd:}) device is the real {@link RemoteDevice}, connected through in-process
 * pipes to a {@link SimNbdServer} of the configured {@code size} (which must be given), with the
 * server's seeded drops, crashes that lose unflushed writes, refused reconnects and delayed replies.
 * The servers live as long as the run too: a crash of the stack restarts the client, not the server.
 *
 * <p>The reference model's sector classes come from the top table of each driven device: a
 * {@code zero} target reads zeros; an {@code error} target and a {@code flakey} target that drops
 * or corrupts writes are not compared. (A zero or drop target below another mapped device is not
 * seen; such a stack needs its own workload.)
 */
public final class ConfigStack implements DrivenStack {

    /** The completion latency of a simulated file device, before faults. */
    public static final long FILE_LATENCY_NANOS = 50_000;

    /**
     * A device the workload drives.
     *
     * @param device the device or mapped device name
     * @param readOnly whether the workload may only read it (a read-only export)
     */
    public record Drive(String device, boolean readOnly) {
    }

    private final Kernel kernel;
    private final StackConfig config;
    private final List<Drive> drives;
    private final Map<String, CachedMemoryDevice.Media> media = new HashMap<>();
    private final Map<String, SimNbdServer> servers = new HashMap<>();
    private final boolean lyingServers;
    private Stack stack;
    private List<BlockDevice> devices;
    private List<long[]> classes;

    private ConfigStack(Kernel kernel, StackConfig config, List<Drive> drives, boolean lyingServers) {
        this.lyingServers = lyingServers;
        if (drives.isEmpty()) {
            throw new IllegalArgumentException(config.source() + ": no device to drive");
        }
        this.kernel = kernel;
        this.config = config;
        this.drives = List.copyOf(drives);
    }

    /** A builder of the stack of {@code config} driving {@code drives}, one fresh stack per run. */
    public static Workload.DrivenStackBuilder builder(StackConfig config, List<Drive> drives) {
        return builder(config, drives, false);
    }

    /**
     * As {@link #builder(StackConfig, List)}; with {@code lyingServers} every simulated NBD server
     * acknowledges FLUSH and FUA without making writes stable (a broken server, for the test that
     * shows the checker catches what that loses).
     */
    public static Workload.DrivenStackBuilder builder(StackConfig config, List<Drive> drives, boolean lyingServers) {
        List<Drive> copy = List.copyOf(drives);
        return kernel -> {
            ConfigStack s = new ConfigStack(kernel, config, copy, lyingServers);
            s.build();
            return s;
        };
    }

    /** Builds the stack over the media (new media the first time) and finds the driven devices. */
    private void build() {
        try {
            stack = Stack.build(kernel, config, this::standIn);
        } catch (ConfigException | IOException e) {
            throw new IllegalStateException(e.getMessage(), e);
        }
        List<BlockDevice> found = new ArrayList<>();
        List<long[]> sectorClasses = new ArrayList<>();
        for (Drive d : drives) {
            BlockDevice dev = stack.device(d.device());
            if (dev == null) {
                throw new IllegalArgumentException("'" + d.device() + "' is not a device of " + config.source());
            }
            found.add(dev);
            sectorClasses.add(classesOf(dev));
        }
        devices = List.copyOf(found);
        classes = sectorClasses;
    }

    /**
     * The simulated device for a file or memory device. A file's stand-in takes a READ's data when
     * the READ completes: the latest moment a disk may, and the moment a READ that serve holds by
     * reference takes it (its payload leaves the file at the send, before it completes), so a
     * layer that lets a range change under a READ in flight is caught.
     */
    private BlockDevice standIn(Kernel k, StackConfig.DeviceSpec spec) {
        return switch (spec) {
            case StackConfig.FileSpec f -> fileStandIn(k, f);
            case StackConfig.MemorySpec m -> new CachedMemoryDevice(k, media(m.name(), m.sizeBytes(), true),
                    m.latencyNanos(), MemoryDevice.DEFAULT_QUEUE_DEPTH, Bio.SECTOR_SIZE);
            case StackConfig.NullSpec n -> null;
            case StackConfig.RemoteSpec r -> remote(k, r);
        };
    }

    /**
     * A remote device connected to the simulated NBD server of its name (made the first time, of
     * the configured size, and kept for the run like the media: a restart of the stack is a restart
     * of the client, not of the server).
     */
    private RemoteDevice remote(Kernel k, StackConfig.RemoteSpec r) {
        if (r.sizeBytes() == 0) {
            throw new IllegalArgumentException("devices." + r.name() + ": a remote device needs 'size' under check"
                    + " (the simulated server exports that size)");
        }
        NbdUri uri = NbdUri.parse(r.uri());
        SimNbdServer server = servers.computeIfAbsent(r.name(),
                n -> new SimNbdServer(k, n, uri.exportName(), r.sizeBytes(), lyingServers));
        RemoteDevice.Options options = RemoteDevice.Options.of(uri).withTransport(server.transport())
                .withConnections(r.connections()).withTimeoutNanos(r.timeoutNanos())
                .withLog(line -> k.tracer().event(Task.currentOrNull(), "remote-log", line));
        // Connecting is set-up, also when a restart after a crash connects again mid-run: a refused
        // connect there would fail the whole rebuild, which serve cannot survive either.
        boolean outside = !SimFaults.inSetup(k);
        if (outside) {
            SimFaults.setupBegins(k);
        }
        try {
            return RemoteDevice.open(k, r.name(), options);
        } catch (IOException e) {
            throw new IllegalStateException("devices." + r.name() + ": " + e.getMessage(), e);
        } finally {
            if (outside) {
                SimFaults.setupEnds(k);
            }
        }
    }

    private CachedMemoryDevice fileStandIn(Kernel k, StackConfig.FileSpec f) {
        CachedMemoryDevice dev = new CachedMemoryDevice(k, media(f.name(), f.sizeBytes(), false), FILE_LATENCY_NANOS,
                f.queueDepth(), Bio.SECTOR_SIZE);
        dev.setReadsAtCompletion(true);
        return dev;
    }

    private CachedMemoryDevice.Media media(String name, long sizeBytes, boolean writeThrough) {
        return media.computeIfAbsent(name, n -> new CachedMemoryDevice.Media(n, sizeBytes, writeThrough));
    }

    /**
     * The ranges of the top table that are not plain data, as triples {@code start, end, class}
     * flattened into one array; empty for a bottom device.
     */
    private static long[] classesOf(BlockDevice dev) {
        if (!(dev instanceof MappedDevice md)) {
            return new long[0];
        }
        List<Long> out = new ArrayList<>();
        for (Target t : md.table().targets()) {
            SectorClass c = classOf(t);
            if (c != SectorClass.DATA) {
                out.add(t.begin());
                out.add(t.begin() + t.length());
                out.add((long) c.ordinal());
            }
        }
        return out.stream().mapToLong(Long::longValue).toArray();
    }

    private static SectorClass classOf(Target t) {
        return switch (t.type()) {
            case "zero" -> SectorClass.ZERO;
            case "error" -> SectorClass.UNCHECKED;
            case "flakey" -> t.statusTable().contains("drop_writes") || t.statusTable().contains("corrupt_bio_byte")
                    ? SectorClass.UNCHECKED : SectorClass.DATA;
            default -> SectorClass.DATA;
        };
    }

    @Override
    public List<BlockDevice> devices() {
        return devices;
    }

    @Override
    public boolean readOnly(int index) {
        return drives.get(index).readOnly();
    }

    @Override
    public SectorClass sectorClass(int index, long sector) {
        long[] ranges = classes.get(index);
        for (int i = 0; i < ranges.length; i += 3) {
            if (sector >= ranges[i] && sector < ranges[i + 1]) {
                return SectorClass.values()[(int) ranges[i + 2]];
            }
        }
        return SectorClass.DATA;
    }

    /**
     * The mapped devices a reload may pick: all but those with a {@code snapshot} target, whose
     * table cannot be loaded a second time over the same COW device while the first is live
     * (dm-snapshot's handover of exceptions from the old table to the new is not implemented: the
     * second constructor refuses a COW device in use).
     */
    private List<MappedDevice> reloadable() {
        List<MappedDevice> out = new ArrayList<>();
        for (MappedDevice md : stack.mappedDevices()) {
            if (md.table().targets().stream().noneMatch(t -> t.type().equals("snapshot"))) {
                out.add(md);
            }
        }
        return out;
    }

    @Override
    public int reloadCandidates() {
        return reloadable().size();
    }

    /** Parses the device's configured table again, loads it, suspends and resumes (dmsetup reload + resume). */
    @Override
    public String reload(int candidate) {
        MappedDevice md = reloadable().get(candidate);
        StackConfig.MappedSpec spec = config.mapped().stream().filter(m -> m.name().equals(md.name())).findFirst()
                .orElseThrow(() -> new IllegalStateException("mapped device " + md.name() + " is not in " + config.source()));
        Table table;
        try {
            table = Table.parse(kernel, md.name(), spec.table(), stack::device);
        } catch (TableException e) {
            throw new IllegalStateException("reload of " + md.name() + ": its own table does not parse again: "
                    + e.getMessage(), e);
        }
        md.loadTable(table);
        md.suspend();
        md.resume();
        return md.name();
    }

    @Override
    public boolean isThin(int index) {
        return thinTarget(index) != null;
    }

    /** The thin target of a driven device whose table is one thin line, or null. */
    private ThinTarget thinTarget(int index) {
        if (devices.get(index) instanceof MappedDevice md && md.table().targetCount() == 1
                && md.table().target(0) instanceof ThinTarget t) {
            return t;
        }
        return null;
    }

    @Override
    public long thinId(int index) {
        return Long.parseLong(thinWords(index)[1]);
    }

    private String[] thinWords(int index) {
        ThinTarget t = thinTarget(index);
        if (t == null) {
            throw new IllegalArgumentException(devices.get(index).name() + " is not a thin device");
        }
        return t.statusTable().split(" ");
    }

    @Override
    public void thinMessage(int index, String... words) {
        String poolName = thinWords(index)[0];
        if (!(stack.device(poolName) instanceof MappedDevice pool)) {
            throw new IllegalStateException("thin pool device " + poolName + " is not a mapped device");
        }
        pool.message(0, words);
    }

    /** Remote devices may: their simulated servers crash and lose what they had not flushed. */
    @Override
    public boolean mayLoseUnflushed() {
        return !servers.isEmpty();
    }

    @Override
    public boolean canRestart() {
        return true;
    }

    /**
     * Cuts the power of every medium, closes the stack (whatever it writes on the way down is
     * lost), restores the power and builds the stack again; then checks every thin pool's reopened
     * metadata.
     */
    @Override
    public List<String> crashAndRestart() {
        media.values().forEach(CachedMemoryDevice.Media::cutPower);
        try {
            stack.close();
        } finally {
            media.values().forEach(CachedMemoryDevice.Media::restorePower);
        }
        build();
        List<String> problems = new ArrayList<>();
        for (MappedDevice md : stack.mappedDevices()) {
            for (Target t : md.table().targets()) {
                if (t instanceof ThinPoolTarget pool) {
                    for (String p : pool.pool().check()) {
                        problems.add("thin-pool " + md.name() + ": " + p);
                    }
                }
            }
        }
        return problems;
    }

    /** The stack of this run (tests look inside). */
    public Stack stack() {
        return stack;
    }

    /** The media of the simulated devices by name (tests look inside). */
    public Map<String, CachedMemoryDevice.Media> media() {
        return Map.copyOf(media);
    }
}
