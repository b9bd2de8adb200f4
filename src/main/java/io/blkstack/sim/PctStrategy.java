package io.blkstack.sim;

import java.util.Arrays;
import java.util.List;

/**
 * Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010) with depth {@code d}: every
 * task gets a random priority above {@code d}, the highest-priority runnable task always runs, and
 * at {@code d - 1} decisions chosen uniformly over the expected number of decisions the running
 * task drops to priority {@code 1..d-1}. A bug of depth {@code d} is found with probability at
 * least {@code 1 / (n * k^(d-1))} per run.
 *
 * <p>Only decisions with more than one runnable task count. A task that yields or retries after a
 * timeout is demoted below every other task: with strict priorities it would otherwise spin
 * forever ahead of the task it waits for.
 */
final class PctStrategy implements Strategy {

    private final SimRandom random;
    private final int depth;
    private final long[] changePoints;
    private int nextChange;
    private long demotedPriority;

    /** One run's PCT with {@code depth} and decision bound {@code stepBound} (learned from earlier runs). */
    PctStrategy(SimRandom random, int depth, long stepBound) {
        if (depth < 1) {
            throw new IllegalArgumentException("PCT depth must be at least 1: " + depth);
        }
        this.random = random;
        this.depth = depth;
        long bound = Math.max(1, stepBound);
        this.changePoints = new long[depth - 1];
        for (int i = 0; i < changePoints.length; i++) {
            changePoints[i] = 1 + random.nextLong(bound);
        }
        Arrays.sort(changePoints);
    }

    @Override
    public void onSpawn(SimTask task) {
        // Initial priorities lie above depth; the draw's low bits make ties rare, ids break them.
        task.priority = depth + 1 + random.nextLong(1L << 40);
    }

    @Override
    public SimTask choose(List<SimTask> runnable, long decision) {
        SimTask best = highest(runnable);
        while (nextChange < changePoints.length && changePoints[nextChange] <= decision) {
            best.priority = depth - 1 - nextChange;
            nextChange++;
            best = highest(runnable);
        }
        return best;
    }

    @Override
    public void onDemote(SimTask task) {
        task.priority = --demotedPriority;
    }

    private static SimTask highest(List<SimTask> runnable) {
        SimTask best = runnable.get(0);
        for (int i = 1; i < runnable.size(); i++) {
            SimTask t = runnable.get(i);
            if (t.priority > best.priority) {
                best = t;
            }
        }
        return best;
    }
}
