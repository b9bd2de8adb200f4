package io.blkstack.scenario;

import io.blkstack.block.MemoryDevice;
import io.blkstack.bufio.BufferCache;
import io.blkstack.dm.thin.Pool;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.thin.ThinMetadata;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/**
 * Seed 003, {@code bufio-shrinker}: thin-pool metadata ({@link ThinMetadata}) in a
 * {@link BufferCache} on a memory device, with memory exhausted so that the background reclaim
 * task ({@code kswapd}) keeps calling the cache's shrinker. Two metadata tasks insert mappings
 * (dirtying B-tree nodes) and commit; a commit writes every dirty node under the cache's mutex, and
 * once the bio set's small reserve of vec arrays is in flight the next write's allocation enters
 * direct reclaim, which is serialised by the page allocator's {@code reclaim} mutex.
 *
 * <p>Legacy ({@code bufio-shrinker=legacy}, the design before the seed's fix): the shrinker, run by
 * {@code kswapd} with the reclaim mutex held, takes the cache's mutex to write back and wait
 * inline. If a commit holds it, kswapd waits for the commit's write-back while the commit's next
 * write waits for reclaim: an ABBA knot of the {@code reclaim} mutex and the cache's mutex. Fixed:
 * the shrinker only try-locks, frees clean buffers and kicks the cache's {@code MEM_RECLAIM}
 * workqueue for the dirty rest, so reclaim never waits on the cache's I/O.
 */
final class BufioShrinkerScenario implements Scenario {

    static final String META = "meta0";
    static final long META_BYTES = 4L << 20;
    static final long DATA_BLOCKS = 4096;
    static final long DATA_BLOCK_SECTORS = 128;
    /** Small nodes: many nodes dirtied and written per commit. */
    static final int NODE_CAPACITY = 5;
    static final int TASKS = 2;

    @Override
    public String name() {
        return "bufio-shrinker";
    }

    @Override
    public String seed() {
        return "003";
    }

    @Override
    public String description() {
        return "thin metadata in bufio, memory exhausted: kswapd runs the bufio shrinker while commits write dirty"
                + " nodes back";
    }

    @Override
    public Policies legacyPolicies() {
        return Policies.defaults().with(PolicySwitch.BUFIO_SHRINKER, "legacy");
    }

    @Override
    public List<Variant> fixedVariants() {
        return List.of(new Variant("fixed", Policies.defaults(), false, false,
                "bufio-shrinker=workqueue: scan try-locks, frees clean buffers, kicks the MEM_RECLAIM workqueue"));
    }

    @Override
    public long memoryBytes() {
        return 512 * 1024;
    }

    @Override
    public String faults() {
        return "latency:" + META + "=0.5/200us";
    }

    @Override
    public String seedResource() {
        return "mutex reclaim";
    }

    @Override
    public Consumer<Kernel> workload(Engine engine, Probe probe) {
        int rounds = engine == Engine.SIM ? 2 : 10;
        int perRound = engine == Engine.SIM ? 6 : 10;
        return kernel -> run(kernel, probe, rounds, perRound);
    }

    /** Builds the cache and the metadata, exhausts memory, runs the metadata tasks, checks and tears down. */
    private static void run(Kernel kernel, Probe probe, int rounds, int perRound) {
        MemoryDevice meta = new MemoryDevice(kernel, META, META_BYTES, 50_000);
        BufferCache cache = new BufferCache(meta, Pool.METADATA_BLOCK_SIZE,
                new BufferCache.Config(4, 16, Long.MAX_VALUE, 0));
        ThinMetadata md = ThinMetadata.format(cache, DATA_BLOCKS, DATA_BLOCK_SECTORS, NODE_CAPACITY);
        for (int t = 0; t < TASKS; t++) {
            md.createThin(t);
        }
        md.commit();
        MemoryPressure pressure = MemoryPressure.exhaust(kernel, 0);
        probe.watch("bufio write-back vec reserve", cache.bioSet().vecPool());
        probe.watch("bufio write-back bio reserve", cache.bioSet().bioPool());
        probe.start(kernel);
        List<Task> workers = new ArrayList<>();
        for (int t = 0; t < TASKS; t++) {
            int dev = t;
            workers.add(kernel.spawn("thin-md" + t, TaskKind.WORKER, () -> provision(md, dev, rounds, perRound, probe)));
        }
        for (Task w : workers) {
            kernel.scheduler().join(w);
        }
        probe.stop();
        pressure.release();
        List<String> problems = md.check();
        if (!problems.isEmpty()) {
            throw new IllegalStateException("thin metadata check after the run: " + problems);
        }
        cache.close();
    }

    /** One task: maps blocks of its thin device round by round, commits each round and checks the mappings. */
    private static void provision(ThinMetadata md, int dev, int rounds, int perRound, Probe probe) {
        List<long[]> mapped = new ArrayList<>();
        for (int r = 0; r < rounds; r++) {
            for (int i = 0; i < perRound; i++) {
                long vblock = (long) r * perRound + i;
                long data = md.allocDataBlock(0, DATA_BLOCKS);
                if (data < 0) {
                    throw new IllegalStateException("thin-md" + dev + ": no free data block for vblock " + vblock);
                }
                md.insertMapping(dev, vblock, data);
                mapped.add(new long[] {vblock, data});
            }
            md.commit();
            probe.ioDone();
        }
        for (long[] m : mapped) {
            long got = md.lookup(dev, m[0]);
            if (got != m[1]) {
                throw new IllegalStateException("thin device " + dev + " vblock " + m[0] + " maps to " + got + ", expected "
                        + m[1]);
            }
        }
    }
}
