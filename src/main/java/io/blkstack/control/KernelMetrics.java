package io.blkstack.control;

import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.DeviceStats;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.Target;
import io.blkstack.dm.mirror.MirrorTarget;
import io.blkstack.dm.snapshot.SnapshotTarget;
import io.blkstack.dm.thin.Pool;
import io.blkstack.dm.thin.ThinPoolTarget;
import io.blkstack.dm.thin.metadata.ThinMetadata;
import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Mempool;
import io.blkstack.mem.PageAllocator;
import io.blkstack.nbd.Export;
import io.blkstack.nbd.ExportStats;
import io.blkstack.nbd.NbdServer;
import io.prometheus.metrics.model.registry.MultiCollector;
import io.prometheus.metrics.model.snapshots.ClassicHistogramBuckets;
import io.prometheus.metrics.model.snapshots.CounterSnapshot;
import io.prometheus.metrics.model.snapshots.CounterSnapshot.CounterDataPointSnapshot;
import io.prometheus.metrics.model.snapshots.GaugeSnapshot;
import io.prometheus.metrics.model.snapshots.GaugeSnapshot.GaugeDataPointSnapshot;
import io.prometheus.metrics.model.snapshots.HistogramSnapshot;
import io.prometheus.metrics.model.snapshots.HistogramSnapshot.HistogramDataPointSnapshot;
import io.prometheus.metrics.model.snapshots.Labels;
import io.prometheus.metrics.model.snapshots.MetricSnapshot;
import io.prometheus.metrics.model.snapshots.MetricSnapshots;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * What {@code /metrics} shows of one kernel, read at scrape time (a Prometheus
 * {@link MultiCollector}): each device's {@link DeviceStats}, each export's {@link ExportStats}, the page arena, every mempool, the
 * NBD server's connections, and every kernel counter ({@link Kernel#counters}: rescuer punts,
 * maydays, rescuer runs, shrinker scans, hung-task warnings, ...) as a counter named after it,
 * so a counter added anywhere in the kernel is exported without touching this class.
 *
 * <p><b>Never in the data path's way.</b> A scrape reads adders, atomics and fields, copies the
 * devices' histograms (wait-free for the writers) and walks the kernel's copy-on-write component
 * list. The only locks it takes are spin locks held for a few field reads (the NBD server's for
 * the connection counts, each snapshot's for its status), which nothing holds across I/O; a thin
 * pool's metadata lock, which is held across metadata I/O, is not taken. It runs on the metrics
 * server's own thread, attached to the kernel for that.
 */
final class KernelMetrics implements MultiCollector {

    /** Every exported name starts with this. */
    static final String PREFIX = "blkstack_";
    /** Upper bounds of the latency histograms' buckets, in seconds (+Inf is added). */
    static final List<Double> LATENCY_BUCKETS_SECONDS = List.of(
        50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0);
    /** Kernel counters made at zero up front, so that they are exported before they first count. */
    static final List<String> KNOWN_COUNTERS = List.of("bioset.rescuer-punts", "wq.maydays", "wq.rescuer-runs",
            "pages.shrinker-scans", "watchdog.hung-tasks", "mempool.reserve-used", "mempool.waits",
            "pages.direct-reclaims", "pages.alloc-failures");
    private static final Pattern NOT_NAME = Pattern.compile("[^a-zA-Z0-9_]");
    private static final double NANOS_PER_SECOND = 1e9;
    /** How {@link Mempool#name} starts; the label is the pool's own name. */
    private static final String MEMPOOL_PREFIX = "mempool ";

    private final Kernel kernel;

    KernelMetrics(Kernel kernel) {
        this.kernel = kernel;
        for (String name : KNOWN_COUNTERS) {
            kernel.counters().get(name);
        }
    }

    @Override
    public MetricSnapshots collect() {
        try (Kernel.Attachment self = kernel.attach("metrics scrape")) {
            List<MetricSnapshot> out = new ArrayList<>();
            List<BlockDevice> devices = new ArrayList<>();
            List<Mempool<?>> pools = new ArrayList<>();
            List<NbdServer> servers = new ArrayList<>();
            for (Component c : kernel.components()) {
                switch (c) {
                    case BlockDevice d -> devices.add(d);
                    case Mempool<?> m -> pools.add(m);
                    case NbdServer s -> servers.add(s);
                    default -> {
                    }
                }
            }
            devices(devices, out);
            arena(kernel.pages(), out);
            mempools(pools, out);
            connections(servers, out);
            exports(servers, out);
            targets(devices, out);
            counters(out);
            return new MetricSnapshots(out);
        }
    }

    /** The prefixed name of each metric this class builds itself, so a kernel counter cannot clash with one. */
    private static final Set<String> OWN_NAMES = Set.of("device_ios", "device_sectors", "device_errors",
            "device_in_flight", "device_latency_seconds", "pages", "pages_free", "pages_used", "pages_watermark",
            "mempool_reserve", "mempool_reserve_min", "mempool_outstanding", "mempool_pool_waits",
            "nbd_connections", "nbd_export_clients", "thin_pool_data_blocks", "thin_pool_data_blocks_used",
            "thin_pool_metadata_blocks", "thin_pool_metadata_blocks_used", "thin_pool_mode", "snapshot_sectors",
            "snapshot_sectors_allocated", "snapshot_metadata_sectors", "snapshot_valid", "mirror_regions",
            "mirror_regions_in_sync", "mirror_legs_healthy", "export_requests", "export_bytes", "export_errors",
            "export_in_flight", "export_latency_seconds");

    private static void devices(List<BlockDevice> devices, List<MetricSnapshot> out) {
        CounterSnapshot.Builder ios = counter("device_ios", "Bios completed by the device, by operation.");
        CounterSnapshot.Builder sectors = counter("device_sectors", "512-byte sectors of completed bios, by operation.");
        CounterSnapshot.Builder errors = counter("device_errors", "Bios completed with an error, by status.");
        GaugeSnapshot.Builder inFlight = gauge("device_in_flight", "Bios handed to the device and not yet completed.");
        HistogramSnapshot.Builder latency = HistogramSnapshot.builder().name(PREFIX + "device_latency_seconds")
                .help("Time from a bio's first dispatch to the device until its completion, by class.");
        Set<String> seen = new HashSet<>();
        for (BlockDevice d : devices) {
            if (!seen.add(d.name())) {
                continue; // one series per name; a device replaced under the same name is shown once
            }
            DeviceStats.Snapshot s = d.stats().snapshot();
            for (BioOp op : BioOp.values()) {
                Labels labels = Labels.of("device", d.name(), "op", op.name().toLowerCase(Locale.ROOT));
                ios.dataPoint(CounterDataPointSnapshot.builder().labels(labels).value(s.ios(op)).build());
                sectors.dataPoint(CounterDataPointSnapshot.builder().labels(labels).value(s.sectors(op)).build());
            }
            for (BioStatus status : BioStatus.values()) {
                if (status.isError()) {
                    errors.dataPoint(CounterDataPointSnapshot.builder()
                            .labels(Labels.of("device", d.name(), "status", status.errnoName()))
                            .value(s.errors(status)).build());
                }
            }
            inFlight.dataPoint(GaugeDataPointSnapshot.builder().labels(Labels.of("device", d.name()))
                    .value(s.inFlight()).build());
            for (DeviceStats.LatencyClass c : DeviceStats.LatencyClass.values()) {
                latency.dataPoint(histogramPoint(s.latency(c),
                        Labels.of("device", d.name(), "class", c.name().toLowerCase(Locale.ROOT))));
            }
        }
        out.add(ios.build());
        out.add(sectors.build());
        out.add(errors.build());
        out.add(inFlight.build());
        out.add(latency.build());
    }

    /** One latency class as classic buckets (per-bucket counts, as the model wants them; the writer sums them). */
    private static HistogramDataPointSnapshot histogramPoint(DeviceStats.Latency l, Labels labels) {
        return histogramPoint(l::countAtOrBelow, l.count(), l.sumNanos(), labels);
    }

    private static HistogramDataPointSnapshot histogramPoint(java.util.function.LongUnaryOperator countAtOrBelow,
            long count, long sumNanos, Labels labels) {
        int n = LATENCY_BUCKETS_SECONDS.size();
        double[] bounds = new double[n + 1];
        long[] counts = new long[n + 1];
        long below = 0;
        for (int i = 0; i < n; i++) {
            bounds[i] = LATENCY_BUCKETS_SECONDS.get(i);
            long atOrBelow = countAtOrBelow.applyAsLong((long) (LATENCY_BUCKETS_SECONDS.get(i) * NANOS_PER_SECOND));
            counts[i] = atOrBelow - below;
            below = atOrBelow;
        }
        bounds[n] = Double.POSITIVE_INFINITY;
        counts[n] = count - below;
        return HistogramDataPointSnapshot.builder().labels(labels)
                .classicHistogramBuckets(ClassicHistogramBuckets.of(bounds, counts))
                .sum(sumNanos / NANOS_PER_SECOND).build();
    }

    /**
     * Each export's {@link ExportStats}, labelled {@code export} (and {@code device}, the device it
     * serves): requests and bytes by command, error replies by NBD error, in flight, latency.
     */
    private static void exports(List<NbdServer> servers, List<MetricSnapshot> out) {
        CounterSnapshot.Builder requests = counter("export_requests", "NBD requests answered, by command.");
        CounterSnapshot.Builder bytes = counter("export_bytes", "Bytes of NBD requests that succeeded, by command"
                + " (read: sent to the client; write: received and written; trim, write_zeroes: the range).");
        CounterSnapshot.Builder errors = counter("export_errors", "NBD requests answered with an error, by error.");
        GaugeSnapshot.Builder inFlight = gauge("export_in_flight", "NBD requests read and not yet answered.");
        HistogramSnapshot.Builder latency = HistogramSnapshot.builder().name(PREFIX + "export_latency_seconds")
                .help("Time from an NBD request's header read to its reply sent, by class.");
        Set<String> seen = new HashSet<>();
        for (NbdServer server : servers) {
            for (Export e : server.exports()) {
                ExportStats stats = server.exportStats(e.name());
                if (stats == null || !seen.add(e.name())) {
                    continue;
                }
                ExportStats.Snapshot s = stats.snapshot();
                String device = e.device().name();
                for (ExportStats.Command c : ExportStats.Command.values()) {
                    Labels labels = Labels.of("export", e.name(), "device", device, "command",
                            c.name().toLowerCase(Locale.ROOT));
                    requests.dataPoint(CounterDataPointSnapshot.builder().labels(labels).value(s.requests(c)).build());
                    bytes.dataPoint(CounterDataPointSnapshot.builder().labels(labels).value(s.bytes(c)).build());
                }
                for (ExportStats.Error error : ExportStats.Error.values()) {
                    errors.dataPoint(CounterDataPointSnapshot.builder()
                            .labels(Labels.of("export", e.name(), "device", device, "error", error.name()))
                            .value(s.errors(error)).build());
                }
                inFlight.dataPoint(point(Labels.of("export", e.name(), "device", device), s.inFlight()));
                for (DeviceStats.LatencyClass c : DeviceStats.LatencyClass.values()) {
                    latency.dataPoint(histogramPoint(s.latency(c), Labels.of("export", e.name(), "device", device,
                            "class", c.name().toLowerCase(Locale.ROOT))));
                }
            }
        }
        out.add(requests.build());
        out.add(bytes.build());
        out.add(errors.build());
        out.add(inFlight.build());
        out.add(latency.build());
    }

    private static void arena(PageAllocator pages, List<MetricSnapshot> out) {
        out.add(gauge("pages", "Pages of the page arena (4 KiB each).").dataPoint(point(Labels.EMPTY,
                pages.totalPages())).build());
        out.add(gauge("pages_free", "Free pages of the page arena.").dataPoint(point(Labels.EMPTY,
                pages.freePages())).build());
        out.add(gauge("pages_used", "Pages of the page arena handed out.").dataPoint(point(Labels.EMPTY,
                pages.allocatedPages())).build());
        out.add(gauge("pages_watermark", "The arena's watermarks in pages: below low the background reclaim runs,"
                + " at min only reserves and blocking allocations get pages.")
                .dataPoint(point(Labels.of("level", "min"), pages.minPages()))
                .dataPoint(point(Labels.of("level", "low"), pages.lowPages()))
                .dataPoint(point(Labels.of("level", "high"), pages.highPages())).build());
        out.add(gauge("pages_promised", "Free pages promised to a reservation (the NBD payload budget) and not yet"
                + " taken: no other allocation may take them.").dataPoint(point(Labels.EMPTY, pages.promisedPages()))
                .build());
        GaugeSnapshot.Builder ledger = gauge("pages_ledger", "The arena's ledger: pages each consumer is owed"
                + " (kind promise: kept free for it; kind record: taken at start) and of those held now.");
        Set<String> seen = new HashSet<>();
        for (io.blkstack.mem.Reservation r : pages.ledger()) {
            String owner = r.owner();
            for (int i = 2; !seen.add(owner); i++) {
                owner = r.owner() + "#" + i;
            }
            String kind = r.isPromise() ? "promise" : "record";
            ledger.dataPoint(point(Labels.of("owner", owner, "kind", kind, "state", "owed"), r.pages()));
            ledger.dataPoint(point(Labels.of("owner", owner, "kind", kind, "state", "held"), r.heldPages()));
        }
        out.add(ledger.build());
    }

    private static void mempools(List<Mempool<?>> pools, List<MetricSnapshot> out) {
        GaugeSnapshot.Builder reserve = gauge("mempool_reserve", "Elements in the mempool's reserve now.");
        GaugeSnapshot.Builder min = gauge("mempool_reserve_min", "The mempool's reserve size (min_nr).");
        GaugeSnapshot.Builder outstanding = gauge("mempool_outstanding", "Elements handed out and not yet freed.");
        CounterSnapshot.Builder waits = counter("mempool_pool_waits", "Times a caller slept waiting for an element.");
        Set<String> seen = new HashSet<>();
        for (Mempool<?> m : pools) {
            String pool = m.name().startsWith(MEMPOOL_PREFIX) ? m.name().substring(MEMPOOL_PREFIX.length()) : m.name();
            String name = pool;
            for (int i = 2; !seen.add(name); i++) {
                name = pool + "#" + i; // pools of one name (several devices' sets): each its own series
            }
            Labels labels = Labels.of("pool", name);
            reserve.dataPoint(point(labels, m.reserveLevel()));
            min.dataPoint(point(labels, m.minNr()));
            outstanding.dataPoint(point(labels, m.outstanding()));
            waits.dataPoint(CounterDataPointSnapshot.builder().labels(labels).value(m.waitCount()).build());
        }
        out.add(reserve.build());
        out.add(min.build());
        out.add(outstanding.build());
        out.add(waits.build());
    }

    private static void connections(List<NbdServer> servers, List<MetricSnapshot> out) {
        GaugeSnapshot.Builder clients = gauge("nbd_export_clients", "NBD connections serving each export.");
        Set<String> seen = new HashSet<>();
        int open = 0;
        for (NbdServer s : servers) {
            open += s.connectionCount();
            for (Export e : s.exports()) {
                if (seen.add(e.name())) {
                    clients.dataPoint(point(Labels.of("export", e.name(), "device", e.device().name()),
                            s.clientCount(e.name())));
                }
            }
        }
        out.add(gauge("nbd_connections", "Open NBD connections (served and being refused).")
                .dataPoint(point(Labels.EMPTY, open)).build());
        out.add(clients.build());
    }

    /**
     * What the targets of live tables show in their status lines, as numbers: thin pools' data and
     * metadata use and mode, snapshots' use, mirrors' sync. Thin pools are read without their
     * metadata lock (plain reads of in-memory counts, possibly a moment old); a snapshot's status
     * takes its short spin lock; a mirror's status reads atomics.
     */
    private static void targets(List<BlockDevice> devices, List<MetricSnapshot> out) {
        GaugeSnapshot.Builder dataBlocks = gauge("thin_pool_data_blocks", "Data blocks of the thin pool.");
        GaugeSnapshot.Builder dataUsed = gauge("thin_pool_data_blocks_used", "Data blocks of the thin pool in use.");
        GaugeSnapshot.Builder metaBlocks = gauge("thin_pool_metadata_blocks", "Metadata blocks of the thin pool.");
        GaugeSnapshot.Builder metaUsed = gauge("thin_pool_metadata_blocks_used", "Metadata blocks in use.");
        GaugeSnapshot.Builder mode = gauge("thin_pool_mode", "1 for the thin pool's mode (rw, ro, out_of_data_space).");
        GaugeSnapshot.Builder snapSectors = gauge("snapshot_sectors", "Sectors of the snapshot's COW device.");
        GaugeSnapshot.Builder snapUsed = gauge("snapshot_sectors_allocated", "COW sectors holding exceptions.");
        GaugeSnapshot.Builder snapMeta = gauge("snapshot_metadata_sectors", "COW sectors holding metadata.");
        GaugeSnapshot.Builder snapValid = gauge("snapshot_valid", "1 while the snapshot serves I/O, 0 once Invalid.");
        GaugeSnapshot.Builder regions = gauge("mirror_regions", "Regions of the mirror.");
        GaugeSnapshot.Builder inSync = gauge("mirror_regions_in_sync", "Regions no leg missed a write to.");
        GaugeSnapshot.Builder healthy = gauge("mirror_legs_healthy", "Legs of the mirror serving reads.");
        Set<String> seen = new HashSet<>();
        for (BlockDevice d : devices) {
            if (!(d instanceof MappedDevice m) || !seen.add(m.name())) {
                continue;
            }
            List<Target> targets = m.table().targets();
            for (int i = 0; i < targets.size(); i++) {
                Labels labels = Labels.of("device", m.name(), "target", Integer.toString(i));
                switch (targets.get(i)) {
                    case ThinPoolTarget t -> {
                        ThinMetadata meta = t.pool().metadata();
                        try {
                            dataBlocks.dataPoint(point(labels, meta.dataBlockCount()));
                            dataUsed.dataPoint(point(labels, meta.usedDataBlocks()));
                            metaBlocks.dataPoint(point(labels, meta.metadataBlockCount()));
                            metaUsed.dataPoint(point(labels, meta.usedMetadataBlocks()));
                        } catch (RuntimeException e) {
                            // a count read while the worker resizes it: this scrape goes without it
                        }
                        Pool.Mode now = t.pool().mode();
                        for (Pool.Mode each : Pool.Mode.values()) {
                            mode.dataPoint(point(Labels.of("device", m.name(), "target", Integer.toString(i), "mode",
                                    each.word()), each == now ? 1 : 0));
                        }
                    }
                    case SnapshotTarget t -> {
                        String status = t.snapshot().statusInfo();
                        snapValid.dataPoint(point(labels, status.equals("Invalid") ? 0 : 1));
                        String[] words = status.split("[ /]");
                        if (words.length == 3) {
                            snapUsed.dataPoint(point(labels, Long.parseLong(words[0])));
                            snapSectors.dataPoint(point(labels, Long.parseLong(words[1])));
                            snapMeta.dataPoint(point(labels, Long.parseLong(words[2])));
                        }
                    }
                    case MirrorTarget t -> {
                        // <#legs> <leg>... <in-sync>/<regions> 1 <A|D per leg> 1 core
                        String[] words = t.statusInfo().split(" ");
                        int legs = Integer.parseInt(words[0]);
                        String[] ratio = words[legs + 1].split("/");
                        inSync.dataPoint(point(labels, Long.parseLong(ratio[0])));
                        regions.dataPoint(point(labels, Long.parseLong(ratio[1])));
                        healthy.dataPoint(point(labels, words[legs + 3].chars().filter(c -> c == 'A').count()));
                    }
                    default -> {
                    }
                }
            }
        }
        for (GaugeSnapshot.Builder b : List.of(dataBlocks, dataUsed, metaBlocks, metaUsed, mode, snapSectors, snapUsed,
                snapMeta, snapValid, regions, inSync, healthy)) {
            out.add(b.build());
        }
    }

    /** Every kernel counter, as {@code blkstack_<name with . and - as _>_total}. */
    private void counters(List<MetricSnapshot> out) {
        for (Map.Entry<String, Long> e : kernel.counters().snapshot().entrySet()) {
            String name = counterName(e.getKey());
            if (OWN_NAMES.contains(name)) {
                continue;
            }
            out.add(counter(name, "Kernel counter " + e.getKey() + ".")
                    .dataPoint(CounterDataPointSnapshot.builder().value(e.getValue()).build()).build());
        }
    }

    /** The metric name (without prefix and {@code _total}) of kernel counter {@code name}. */
    static String counterName(String name) {
        String n = NOT_NAME.matcher(name.toLowerCase(Locale.ROOT)).replaceAll("_");
        return n.endsWith("_total") ? n.substring(0, n.length() - "_total".length()) : n;
    }

    private static CounterSnapshot.Builder counter(String name, String help) {
        return CounterSnapshot.builder().name(PREFIX + name).help(help);
    }

    private static GaugeSnapshot.Builder gauge(String name, String help) {
        return GaugeSnapshot.builder().name(PREFIX + name).help(help);
    }

    private static GaugeDataPointSnapshot point(Labels labels, double value) {
        return GaugeDataPointSnapshot.builder().labels(labels).value(value).build();
    }
}
