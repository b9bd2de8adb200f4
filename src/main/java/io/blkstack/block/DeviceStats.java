package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.LongAdder;
import org.HdrHistogram.ConcurrentHistogram;
import org.HdrHistogram.Histogram;

/**
 * The I/O statistics of one device (as {@code dmstats} and nbdkit's stats filter keep them):
 * completed bios and sectors per operation, errors by status, bios in flight, and a latency
 * histogram per class of operation (read, write, other).
 *
 * <p><b>The one place every device shares.</b> The submit loop starts the accounting when it
 * hands a bio to its device for the first time ({@link Submit}), and {@link Bio#endio} ends it
 * when the bio's completion is no longer owed, before its callback runs. A bio is counted on the
 * device it was first submitted to: the remainder of a split goes back through the loop to the
 * same device and is not counted again, and what a mapped device sends down are clones, which
 * lower devices count as their own.
 *
 * <p><b>On the data path.</b> Counting is {@link LongAdder} adds and one wait-free
 * {@link ConcurrentHistogram#recordValue}: no lock, no allocation. Everything here is created with
 * the device. Readers ({@link #snapshot}) copy the histograms on their own thread; a copy waits at
 * most for a recording already under way, never the other way round, so a slow scrape cannot
 * stall I/O.
 */
public final class DeviceStats {

    /** Latencies are kept to this resolution (1 µs). */
    public static final long LATENCY_NANOS_LOWEST = 1_000;
    /** Latencies above this (one minute) are recorded as this. */
    public static final long LATENCY_NANOS_HIGHEST = 60_000_000_000L;
    /** Significant decimal digits of each recorded latency (1 % precision). */
    public static final int LATENCY_DIGITS = 2;

    /** The latency classes: reads, writes, and everything else (flush, discard, write-zeroes). */
    public enum LatencyClass {
        READ, WRITE, OTHER;

        /** The class of {@code op}. */
        static LatencyClass of(BioOp op) {
            return switch (op) {
                case READ -> READ;
                case WRITE -> WRITE;
                default -> OTHER;
            };
        }
    }

    private static final List<BioOp> OPS = List.of(BioOp.values());
    private static final List<BioStatus> STATUSES = List.of(BioStatus.values());
    private static final List<LatencyClass> CLASSES = List.of(LatencyClass.values());

    private final String name;
    private final LongAdder[] ios = adders(OPS.size());
    private final LongAdder[] sectors = adders(OPS.size());
    private final LongAdder[] errors = adders(STATUSES.size());
    private final LongAdder started = new LongAdder();
    private final LongAdder completed = new LongAdder();
    private final LongAdder[] latencyNanosSum = adders(CLASSES.size());
    private final ConcurrentHistogram[] latency = new ConcurrentHistogram[CLASSES.size()];

    /**
     * Statistics of the device {@code name}, all at zero; without {@code latencyHistograms} a
     * snapshot's histograms stay empty (the latency sums are still kept).
     */
    public DeviceStats(String name, boolean latencyHistograms) {
        this.name = name;
        for (int i = 0; latencyHistograms && i < latency.length; i++) {
            latency[i] = newHistogram();
        }
    }

    private static ConcurrentHistogram newHistogram() {
        return new ConcurrentHistogram(LATENCY_NANOS_LOWEST, LATENCY_NANOS_HIGHEST, LATENCY_DIGITS);
    }

    private static LongAdder[] adders(int n) {
        LongAdder[] a = new LongAdder[n];
        for (int i = 0; i < n; i++) {
            a[i] = new LongAdder();
        }
        return a;
    }

    /** The device these statistics count. */
    public String name() {
        return name;
    }

    /** One bio handed to the device: in flight from now until {@link #done}. */
    void start() {
        started.increment();
    }

    /**
     * One bio completed: {@code sectorCount} sectors of {@code op}, with {@code status}, after
     * {@code latencyNanos}.
     */
    public void done(BioOp op, int sectorCount, BioStatus status, long latencyNanos) {
        int o = op.ordinal();
        ios[o].increment();
        if (sectorCount > 0) {
            sectors[o].add(sectorCount);
        }
        if (status != BioStatus.OK) {
            errors[status.ordinal()].increment();
        }
        int c = LatencyClass.of(op).ordinal();
        long nanos = Math.min(Math.max(latencyNanos, 0), LATENCY_NANOS_HIGHEST);
        latencyNanosSum[c].add(nanos);
        if (latency[c] != null) {
            latency[c].recordValue(nanos);
        }
        completed.increment();
    }

    /** A consistent-enough copy for a reader: counters read once each, histograms copied. */
    public Snapshot snapshot() {
        long[] opIos = new long[OPS.size()];
        long[] opSectors = new long[OPS.size()];
        for (int i = 0; i < OPS.size(); i++) {
            opIos[i] = ios[i].sum();
            opSectors[i] = sectors[i].sum();
        }
        long[] statusErrors = new long[STATUSES.size()];
        for (int i = 0; i < STATUSES.size(); i++) {
            statusErrors[i] = errors[i].sum();
        }
        List<Latency> latencies = new ArrayList<>(CLASSES.size());
        for (LatencyClass c : CLASSES) {
            ConcurrentHistogram h = latency[c.ordinal()];
            latencies.add(new Latency(c, h != null ? h.copy() : newHistogram(), latencyNanosSum[c.ordinal()].sum()));
        }
        // Completed is read before started, so a bio that completes in between cannot make it negative.
        long done = completed.sum();
        long inFlight = Math.max(0, started.sum() - done);
        return new Snapshot(name, opIos, opSectors, statusErrors, inFlight, latencies);
    }

    /** One latency class: its histogram (nanoseconds) and the exact sum of what it recorded. */
    public record Latency(LatencyClass latencyClass, Histogram histogram, long sumNanos) {

        /** The number of bios (or requests) recorded. */
        public long count() {
            return histogram.getTotalCount();
        }

        /** The latency below which {@code percentile} % of the bios completed, in nanoseconds (0 if none). */
        public long percentileNanos(double percentile) {
            return histogram.getTotalCount() == 0 ? 0 : histogram.getValueAtPercentile(percentile);
        }

        /** How many bios took at most {@code nanos} (to the histogram's 1 % precision). */
        public long countAtOrBelow(long nanos) {
            return histogram.getCountBetweenValues(0, Math.min(nanos, LATENCY_NANOS_HIGHEST));
        }

        /** The largest latency recorded, in nanoseconds (0 if none). */
        public long maxNanos() {
            return histogram.getTotalCount() == 0 ? 0 : histogram.getMaxValue();
        }
    }

    /** What {@link #snapshot} returns; arrays are indexed by {@link BioOp} and {@link BioStatus} ordinals. */
    public record Snapshot(String name, long[] ios, long[] sectors, long[] errors, long inFlight,
            List<Latency> latencies) {

        /** Completed bios of {@code op}. */
        public long ios(BioOp op) {
            return ios[op.ordinal()];
        }

        /** Sectors of completed bios of {@code op}. */
        public long sectors(BioOp op) {
            return sectors[op.ordinal()];
        }

        /** Bios of any operation that completed with {@code status}. */
        public long errors(BioStatus status) {
            return errors[status.ordinal()];
        }

        /** The latency of one class. */
        public Latency latency(LatencyClass c) {
            return latencies.get(c.ordinal());
        }
    }
}
