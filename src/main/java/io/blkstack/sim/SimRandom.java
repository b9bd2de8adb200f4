package io.blkstack.sim;

import java.util.SplittableRandom;

/**
 * The one seeded random stream of a simulated run. Every choice the simulator makes (which task
 * runs next, which fault fires, how long a simulated device takes) draws from here, in the order
 * the run makes them, so a seed plus a configuration replays the same run.
 *
 * <p>Only the task holding the simulator's token draws, so the stream needs no locking.
 */
public final class SimRandom {

    private final long seed;
    private final SplittableRandom random;
    private long draws;

    public SimRandom(long seed) {
        this.seed = seed;
        this.random = new SplittableRandom(seed);
    }

    /** The seed the stream started from. */
    public long seed() {
        return seed;
    }

    /** A uniform int in {@code [0, bound)}. */
    public int nextInt(int bound) {
        if (bound <= 0) {
            throw new IllegalArgumentException("bound must be positive: " + bound);
        }
        draws++;
        return random.nextInt(bound);
    }

    /** A uniform long in {@code [0, bound)}. */
    public long nextLong(long bound) {
        if (bound <= 0) {
            throw new IllegalArgumentException("bound must be positive: " + bound);
        }
        draws++;
        return random.nextLong(bound);
    }

    /** A uniform long over the whole range. */
    public long nextLong() {
        draws++;
        return random.nextLong();
    }

    /** A uniform double in {@code [0, 1)}. */
    public double nextDouble() {
        draws++;
        return random.nextDouble();
    }

    /** True with probability {@code p}; draws nothing for p of 0 or 1. */
    public boolean chance(double p) {
        if (p <= 0) {
            return false;
        }
        if (p >= 1) {
            return true;
        }
        return nextDouble() < p;
    }

    /** A latency uniform in {@code [minNanos, maxNanos]}, for simulated devices. */
    public long latencyNanos(long minNanos, long maxNanos) {
        if (minNanos < 0 || maxNanos < minNanos) {
            throw new IllegalArgumentException("latency range must satisfy 0 <= min <= max: " + minNanos + ".." + maxNanos);
        }
        return minNanos == maxNanos ? minNanos : minNanos + nextLong(maxNanos - minNanos + 1);
    }

    /** The seed of schedule {@code index} of a campaign started from {@code masterSeed}. */
    public static long deriveSeed(long masterSeed, long index) {
        long z = masterSeed + (index + 1) * 0x9E3779B97F4A7C15L;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }
}
