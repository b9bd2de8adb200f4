package io.blkstack.sim;

import java.util.List;

/** The random walk: every runnable task is equally likely at every decision. */
final class RandomStrategy implements Strategy {

    private final SimRandom random;

    RandomStrategy(SimRandom random) {
        this.random = random;
    }

    @Override
    public void onSpawn(SimTask task) {
    }

    @Override
    public SimTask choose(List<SimTask> runnable, long decision) {
        return runnable.get(random.nextInt(runnable.size()));
    }

    @Override
    public void onDemote(SimTask task) {
    }
}
