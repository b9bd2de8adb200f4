package io.blkstack.scenario;

import io.blkstack.bio.BioVec;
import io.blkstack.block.MemoryDevice;
import io.blkstack.bufio.BufferCache;
import io.blkstack.dm.thin.Pool;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Mutex;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Mempool;
import io.blkstack.dm.thin.metadata.ThinMetadata;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import java.util.function.Predicate;

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
    /** The thin device the forced commit dirties, apart from the workers' devices. */
    static final int HARNESS_DEVICE = TASKS;
    /** Mappings the forced commit writes: more nodes than the vec reserve. */
    static final int HARNESS_MAPPINGS = 12;
    /** Bound on each wait of the forcing harness; generous, it only turns a broken harness into an error. */
    static final long HARNESS_WAIT_NANOS = 30_000_000_000L;
    /** The hard shape: pages left in the arena after exhausting it, and mappings per round (the seed shape: 0 and 6). */
    static final int HARD_SPARE_PAGES = 14;
    static final int HARD_PER_ROUND = 3;

    private final boolean hard;

    /** The seed shape, or with {@code hard} the shape whose deadlock needs a specific interleaving. */
    BufioShrinkerScenario(boolean hard) {
        this.hard = hard;
    }

    @Override
    public String name() {
        return hard ? "bufio-shrinker-hard" : "bufio-shrinker";
    }

    @Override
    public String seed() {
        return "003";
    }

    @Override
    public String description() {
        if (hard) {
            return "as bufio-shrinker with " + HARD_SPARE_PAGES + " free pages and " + HARD_PER_ROUND + " mappings per commit";
        }
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
        int perRound = engine == Engine.SIM ? (hard ? HARD_PER_ROUND : 6) : 10;
        int sparePages = hard ? HARD_SPARE_PAGES : 0;
        // On real threads the knot needs kswapd to reach the shrinker while a commit holds the
        // cache's mutex and cannot get a vec array: hoping for it lost about one run in five, so
        // the threads workload forces that interleaving first (see forceCommitUnderReclaim).
        return kernel -> run(kernel, probe, rounds, perRound, sparePages, engine == Engine.THREADS);
    }

    /** Builds the cache and the metadata, exhausts memory, runs the metadata tasks, checks and tears down. */
    private static void run(Kernel kernel, Probe probe, int rounds, int perRound, int sparePages, boolean forceInterleaving) {
        MemoryDevice meta = new MemoryDevice(kernel, META, META_BYTES, 50_000);
        BufferCache cache = new BufferCache(meta, Pool.METADATA_BLOCK_SIZE,
                new BufferCache.Config(4, 16, Long.MAX_VALUE, 0));
        ThinMetadata md = ThinMetadata.format(cache, DATA_BLOCKS, DATA_BLOCK_SECTORS, NODE_CAPACITY);
        for (int t = 0; t < TASKS; t++) {
            md.createThin(t);
        }
        if (forceInterleaving) {
            md.createThin(HARNESS_DEVICE);
        }
        md.commit();
        MemoryPressure pressure = MemoryPressure.exhaust(kernel, sparePages, 0);
        probe.watch("bufio write-back vec reserve", cache.bioSet().vecPool());
        probe.watch("bufio write-back bio reserve", cache.bioSet().bioPool());
        probe.start(kernel);
        if (forceInterleaving) {
            forceCommitUnderReclaim(kernel, md, cache, pressure);
        }
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

    /**
     * Tries to put a commit into the seed's state on purpose, under either policy. The harness
     * dirties metadata and takes the cache's mutex while kswapd sleeps ({@link #dirtyUnderMutex}),
     * starts a commit, which queues on that mutex, takes every vec array the cache's bio set can
     * give and the pages reclaim freed meanwhile, which wakes kswapd. Legacy: kswapd, with the
     * reclaim mutex held, queues on the cache's mutex ({@link Task#awaitWait}); the harness lets the
     * mutex go. If the commit gets it first (it queued first), its first write finds no vec array
     * and no page, enters direct reclaim and waits for the reclaim mutex: the seed's knot; giving
     * the arrays back then no longer helps. If kswapd wins the mutex anyway (it may have been
     * waking already when the harness saw it asleep), it writes the metadata back and the commit
     * finishes: the harness then gives up and the workers' rounds race as before, so the harness
     * itself never stalls. Fixed: kswapd's scan only try-locks and returns, and the commit
     * finishes once the arrays come back. Every wait here is on a kernel event, and bounded.
     */
    private static void forceCommitUnderReclaim(Kernel kernel, ThinMetadata md, BufferCache cache,
            MemoryPressure pressure) {
        Mutex cacheMutex = cache.mutex();
        dirtyUnderMutex(kernel, md, cache);
        boolean legacy = kernel.policies().isLegacy(PolicySwitch.BUFIO_SHRINKER);
        Mutex reclaim = kernel.pages().reclaimMutex();
        Mempool<BioVec[]> vecs = cache.bioSet().vecPool();
        List<BioVec[]> held = new ArrayList<>();
        Completion released = new Completion("harness release of the commit");
        Task committer;
        try {
            committer = kernel.spawn("thin-md-commit", TaskKind.WORKER, () -> {
                md.commit();
                released.await();
            });
            expectWait(committer, w -> w == cacheMutex, "the commit never queued on the cache's mutex");
            // No metadata I/O is in flight while the harness holds the mutex, so this takes them all.
            for (BioVec[] v = vecs.alloc(Gfp.NOWAIT); v != null; v = vecs.alloc(Gfp.NOWAIT)) {
                held.add(v);
            }
            pressure.takeFreePages();
            if (legacy) {
                expectWait(kernel.pages().reclaimTask(), w -> w == cacheMutex,
                        "kswapd never queued on the cache's mutex");
                // The shrinkers kswapd ran before the cache's (the slabs') may have freed pages.
                pressure.takeFreePages();
            }
        } finally {
            cacheMutex.unlock();
        }
        if (legacy) {
            expectWait(committer, w -> w == reclaim || w == vecs || w == released,
                    "the commit neither waited for reclaim or a vec array nor finished");
        }
        held.forEach(vecs::free);
        released.complete();
        kernel.scheduler().join(committer);
    }

    /**
     * Leaves the calling task holding the cache's mutex with dirty metadata in the cache and
     * kswapd asleep (so it cannot queue on the mutex ahead of the commit): inserts a mapping on
     * the harness device, takes the mutex, and if reclaim cleaned the cache first or is still at
     * work, lets the mutex go, waits for kswapd to sleep and tries again.
     */
    private static void dirtyUnderMutex(Kernel kernel, ThinMetadata md, BufferCache cache) {
        Task kswapd = kernel.pages().reclaimTask();
        for (int i = 0; i < HARNESS_MAPPINGS; i++) {
            long data = md.allocDataBlock(0, DATA_BLOCKS);
            if (data < 0) {
                throw new IllegalStateException("harness: no free data block for vblock " + i);
            }
            md.insertMapping(HARNESS_DEVICE, i, data);
            cache.mutex().lock();
            if (cache.dirtyCount() > 0 && kswapd.waitIsIdle()) {
                return;
            }
            cache.mutex().unlock();
            expectWait(kswapd, w -> kswapd.waitIsIdle(), "kswapd never went back to sleep");
        }
        throw new IllegalStateException("harness: reclaim was at work after each of " + HARNESS_MAPPINGS + " insertions");
    }

    /** Waits until {@code task} begins a wait that {@code matching} accepts; throws with {@code failure} after the bound. */
    private static void expectWait(Task task, Predicate<Object> matching, String failure) {
        if (task.awaitWait(matching, HARNESS_WAIT_NANOS) == null) {
            throw new IllegalStateException("harness: " + failure + " within " + HARNESS_WAIT_NANOS / 1_000_000_000L
                    + " s");
        }
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
