package io.blkstack.sim;

import java.util.List;

/**
 * How the simulator picks the next task among those that can run. One instance serves one run;
 * every choice draws from the run's {@link SimRandom}.
 */
interface Strategy {

    /** A task was created. */
    void onSpawn(SimTask task);

    /** Picks one of {@code runnable} (at least two, sorted by task id) at decision number {@code decision}. */
    SimTask choose(List<SimTask> runnable, long decision);

    /** A task yielded or woke from a retry timeout: it must not starve the task it waits for. */
    void onDemote(SimTask task);
}
