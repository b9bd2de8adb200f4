package io.blkstack.scenario;

import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Timer;
import io.blkstack.mem.Mempool;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Samples a workload's reserve levels and completed I/O on a kernel timer, for the report's plots.
 *
 * <p>Bounded: at most {@link #SAMPLES_MAX} samples in arrays allocated when the probe is made; the
 * timer stops re-arming when they are full, so a deadlocked run is not kept "alive" by the probe
 * (the checker would otherwise see a timer firing forever). The timer callback only reads levels
 * and writes into the arrays: it never blocks and never allocates from a pool (rule 2 of
 * DESIGN.md section 1). {@link #none()} does nothing, for campaigns.
 */
public final class Probe {

    /** Samples kept per run. */
    public static final int SAMPLES_MAX = 200;
    /** How often the sampling period may double to cover a long run. */
    public static final int DOUBLINGS_MAX = 6;
    /** Pools watched at most. */
    public static final int POOLS_MAX = 4;


    private final long periodNanos;
    private final long[] times = new long[SAMPLES_MAX];
    private final int[][] levels = new int[POOLS_MAX][SAMPLES_MAX];
    private final long[] completed = new long[SAMPLES_MAX];
    private final List<String> poolNames = new ArrayList<>();
    private final List<Mempool<?>> pools = new ArrayList<>();
    private final AtomicInteger count = new AtomicInteger();
    private final AtomicLong ioCompleted = new AtomicLong();
    private volatile boolean stopped = true;
    private volatile Timer timer;
    private Kernel kernel;
    private long startNanos;
    private int doublings;

    /** A probe sampling every {@code periodNanos} (0: disabled). */
    public Probe(long periodNanos) {
        if (periodNanos < 0) {
            throw new IllegalArgumentException("probe period must not be negative: " + periodNanos + " ns");
        }
        this.periodNanos = periodNanos;
    }

    /** A probe that records nothing (a new one each time: a probe holds its run's samples). */
    public static Probe none() {
        return new Probe(0);
    }

    /** Adds a pool whose reserve level is sampled; call before {@link #start}. */
    public void watch(String label, Mempool<?> pool) {
        if (periodNanos == 0) {
            return;
        }
        if (pools.size() == POOLS_MAX) {
            throw new IllegalStateException("probe watches at most " + POOLS_MAX + " pools; " + label + " is one more");
        }
        poolNames.add(label);
        pools.add(pool);
    }

    /** Counts one completed workload I/O (callable from completion context). */
    public void ioDone() {
        ioCompleted.incrementAndGet();
    }

    /** Workload I/Os completed so far (counted even when sampling is disabled). */
    public long completedIo() {
        return ioCompleted.get();
    }

    /** Starts sampling on {@code kernel}'s timers. */
    public void start(Kernel k) {
        if (periodNanos == 0) {
            return;
        }
        this.kernel = k;
        this.startNanos = k.scheduler().nanoTime();
        count.set(0);
        doublings = 0;
        stopped = false;
        sample();
    }

    /** Stops sampling (before the kernel closes). */
    public void stop() {
        if (periodNanos != 0 && !stopped) {
            record(); // the end state, so a run shorter than one period still shows its I/O
        }
        stopped = true;
        Timer t = timer;
        if (t != null) {
            t.cancel();
        }
    }

    /**
     * The timer callback: records one sample and re-arms. When the arrays are full it keeps every
     * other sample and doubles the period, so a long run is still covered from start to end; after
     * {@link #DOUBLINGS_MAX} doublings it stops re-arming, so it cannot keep a deadlocked run alive.
     */
    private void sample() {
        if (stopped) {
            return;
        }
        if (!record()) {
            return;
        }
        if ((count.get() < SAMPLES_MAX || doublings < DOUBLINGS_MAX) && !stopped) {
            timer = kernel.scheduler().addTimer(periodNanos << doublings, "scenario probe", this::sample);
        }
    }

    /** Records one sample now; false when the arrays are full and may not be thinned again. */
    private boolean record() {
        int i = count.get();
        if (i >= SAMPLES_MAX) {
            if (doublings == DOUBLINGS_MAX) {
                return false;
            }
            i = decimate();
        }
        times[i] = kernel.scheduler().nanoTime() - startNanos;
        for (int p = 0; p < pools.size(); p++) {
            levels[p][i] = pools.get(p).reserveLevel();
        }
        completed[i] = ioCompleted.get();
        count.set(i + 1);
        return true;
    }

    /** Keeps the even-numbered samples, doubles the period; returns the next free index. */
    private int decimate() {
        int kept = SAMPLES_MAX / 2;
        for (int j = 0; j < kept; j++) {
            times[j] = times[2 * j];
            completed[j] = completed[2 * j];
            for (int p = 0; p < pools.size(); p++) {
                levels[p][j] = levels[p][2 * j];
            }
        }
        doublings++;
        return kept;
    }

    /** The recorded series: time in ms, each pool's reserve level, and the completed I/O count. */
    public Series series() {
        int n = count.get();
        double[] t = new double[n];
        double[] done = new double[n];
        List<double[]> lv = new ArrayList<>();
        for (int p = 0; p < pools.size(); p++) {
            lv.add(new double[n]);
        }
        for (int i = 0; i < n; i++) {
            t[i] = times[i] / 1e6;
            done[i] = completed[i];
            for (int p = 0; p < pools.size(); p++) {
                lv.get(p)[i] = levels[p][i];
            }
        }
        return new Series(t, List.copyOf(poolNames), List.copyOf(lv), done);
    }

    /** Sampled values of one run. */
    public record Series(double[] timesMs, List<String> poolNames, List<double[]> reserveLevels, double[] completedIo) {

        /** Whether nothing was sampled. */
        public boolean isEmpty() {
            return timesMs.length == 0;
        }
    }
}
