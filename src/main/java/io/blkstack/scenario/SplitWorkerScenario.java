package io.blkstack.scenario;

import io.blkstack.block.MemoryDevice;
import io.blkstack.bufio.BufferCache;
import io.blkstack.dm.thin.Pool;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.dm.thin.metadata.AllocationGroups;
import io.blkstack.dm.thin.metadata.ThinMetadata;
import io.blkstack.wq.WorkerPool;
import java.util.List;
import java.util.function.Consumer;

/**
 * Seed 004, {@code split-worker}: two B-trees that split often (small nodes), each under its own
 * lock, sharing one set of {@link AllocationGroups} as their split runner and so one {@code alloc}
 * {@code MEM_RECLAIM} workqueue (XFS: the block-map B-trees of two inodes sharing the AGs and
 * {@code xfs_alloc_wq}). The write path's tree is the thin pool's metadata {@code md} on
 * {@code meta0}, whose data space the groups cut in two; the second group is full (every block in
 * use), so only group 0 can back an allocation. The completion path's tree is a second
 * {@link ThinMetadata} on {@code meta1}, the other "inode", whose blocks were allocated earlier
 * (the unwritten extents) and are now being mapped (the conversion). No workqueue worker can be
 * created (the fault site {@code worker-create} always fails), so the {@code alloc} queue's items
 * run only on its rescuer, one at a time, after a mayday.
 *
 * <p>Two tasks: {@code provision} is the write path (it locks group 0 and reserves space, then
 * allocates data blocks and maps them in {@code md}, each of which may split); {@code convert} is
 * the completion path (it maps its blocks in the second tree, holding no group and no reservation,
 * which may split). Memory is exhausted, and the write path commits after each round, so metadata
 * writes use the buffer cache's bio reserves.
 *
 * <p>Legacy ({@code split-offload=legacy}): every split goes to the rescuer. When the completion
 * path's split runs first, it brought no reservation, so on the rescuer it must lock a group: group
 * 1 is full and group 0 is held by the write path, whose own split is queued on the same rescuer
 * behind it. The ABBA of the seed between the rescuer's serial queue and the allocation-group lock.
 * Fixed ({@code reserved-only}): only the write path's splits, backed by its reservation, are
 * offloaded; the completion path splits inline and never needs a group lock.
 *
 * <p>The hard shape ({@code split-worker-hard}) gives the {@code alloc} queue
 * {@link #HARD_ALLOC_MAX_ACTIVE} active items, as XFS's queue has many, and lets worker creation
 * succeed sometimes: on workers the two splits run side by side and the write path's split does
 * not wait behind the completion path's, so the deadlock needs worker creation to fail while the
 * completion path's split waits for the group and the write path splits in the same round, when
 * only the rescuer, one item at a time, runs them. With the seed's serial queue (one active item)
 * no choice of free pages, rounds or failure probability made it a search: the ABBA formed on the
 * queue itself whenever both paths split.
 */
final class SplitWorkerScenario implements Scenario {

    static final String META = "meta0";
    /** The completion path's metadata device (the second tree). */
    static final String CONVERT_META = "meta1";
    static final long META_BYTES = 4L << 20;
    static final long GROUP_BLOCKS = 64;
    static final long DATA_BLOCKS = 2 * GROUP_BLOCKS;
    static final long DATA_BLOCK_SECTORS = 128;
    static final int NODE_CAPACITY = 5;
    /** Thin device ids of the two paths. */
    static final int WRITE_DEV = 0;
    static final int CONVERT_DEV = 1;
    /** The hard shape: pages left in the arena after exhausting it (the seed shape: none). */
    static final int HARD_SPARE_PAGES = 32;
    /** The hard shape's probability that creating a worker fails (the seed shape: always). */
    static final String HARD_WORKER_CREATE_FAILURE = "0.7";
    /**
     * The hard shape's {@code alloc} queue runs this many splits at once on workers (the seed
     * shape: one, so that the queue itself is serial and the ABBA forms whenever both paths split).
     */
    static final int HARD_ALLOC_MAX_ACTIVE = 4;

    private final boolean hard;

    /** The seed shape, or with {@code hard} the shape whose deadlock needs a specific interleaving. */
    SplitWorkerScenario(boolean hard) {
        this.hard = hard;
    }

    @Override
    public String name() {
        return hard ? "split-worker-hard" : "split-worker";
    }

    @Override
    public String seed() {
        return "004";
    }

    @Override
    public String description() {
        if (hard) {
            return "as split-worker with " + HARD_SPARE_PAGES + " free pages, an alloc queue of " + HARD_ALLOC_MAX_ACTIVE
                    + " active items on workers and worker creation failing with probability " + HARD_WORKER_CREATE_FAILURE
                    + ": only the rescuer is serial";
        }
        return "thin B-tree splits offloaded to the alloc queue's rescuer (no workers can be created): a write path"
                + " holding an allocation group and a completion path both split";
    }

    @Override
    public Policies legacyPolicies() {
        return Policies.defaults().with(PolicySwitch.SPLIT_OFFLOAD, "legacy");
    }

    @Override
    public List<Variant> fixedVariants() {
        return List.of(new Variant("fixed", Policies.defaults(), false, false,
                "split-offload=reserved-only: offload only with a held group's reservation, else split inline"));
    }

    @Override
    public long memoryBytes() {
        return 512 * 1024;
    }

    @Override
    public String faults() {
        return WorkerPool.FAULT_SITE + "=" + (hard ? HARD_WORKER_CREATE_FAILURE : "1") + ",latency:" + META
                + "=0.5/200us,latency:" + CONVERT_META + "=0.5/200us";
    }

    /** Real threads get the same fault: no worker can be created. */
    @Override
    public Faults threadsFaults() {
        return new Faults() {
            @Override
            public boolean shouldFail(String site) {
                return site.equals(WorkerPool.FAULT_SITE);
            }

            @Override
            public long extraLatencyNanos(String site) {
                return 0;
            }
        };
    }

    @Override
    public String seedResource() {
        return "thin ag 0";
    }

    @Override
    public Consumer<Kernel> workload(Engine engine, Probe probe) {
        int rounds = engine == Engine.SIM ? 2 : 6;
        int perRound = engine == Engine.SIM ? 4 : 5;
        int conversions = engine == Engine.SIM ? 12 : 40;
        int sparePages = hard ? HARD_SPARE_PAGES : 0;
        int allocMaxActive = hard ? HARD_ALLOC_MAX_ACTIVE : 1;
        return kernel -> run(kernel, probe, rounds, perRound, conversions, sparePages, allocMaxActive);
    }

    /**
     * Builds the pool metadata with its groups (group 1 full) and the second tree, both splitting
     * through the groups; runs both paths, checks both trees and tears down.
     */
    private static void run(Kernel kernel, Probe probe, int rounds, int perRound, int conversions, int sparePages,
            int allocMaxActive) {
        MemoryDevice meta = new MemoryDevice(kernel, META, META_BYTES, 50_000);
        BufferCache cache = new BufferCache(meta, Pool.METADATA_BLOCK_SIZE, new BufferCache.Config(4, 16, Long.MAX_VALUE, 0));
        ThinMetadata md = ThinMetadata.format(cache, DATA_BLOCKS, DATA_BLOCK_SECTORS, NODE_CAPACITY);
        md.createThin(WRITE_DEV);
        // Fill group 1 (blocks GROUP_BLOCKS..DATA_BLOCKS) so only group 0 has space.
        long filler = 2;
        md.createThin(filler);
        for (long b = GROUP_BLOCKS; b < DATA_BLOCKS; b++) {
            long got = md.allocDataBlock(GROUP_BLOCKS, DATA_BLOCKS);
            md.insertMapping(filler, b - GROUP_BLOCKS, got);
        }
        md.commit();
        // The completion path's tree, on its own metadata device under its own lock: its blocks
        // are allocated up front (the "unwritten extents") and mapped later (the conversion).
        MemoryDevice convertMeta = new MemoryDevice(kernel, CONVERT_META, META_BYTES, 50_000);
        BufferCache convertCache = new BufferCache(convertMeta, Pool.METADATA_BLOCK_SIZE,
                new BufferCache.Config(4, 16, Long.MAX_VALUE, 0));
        ThinMetadata convertMd = ThinMetadata.format(convertCache, conversions, DATA_BLOCK_SECTORS, NODE_CAPACITY);
        convertMd.createThin(CONVERT_DEV);
        long[] converted = new long[conversions];
        for (int i = 0; i < conversions; i++) {
            converted[i] = convertMd.allocDataBlock(0, conversions);
        }
        convertMd.commit();
        AllocationGroups groups = new AllocationGroups(kernel, md, GROUP_BLOCKS, allocMaxActive);
        md.tree().setSplitRunner(groups);
        convertMd.tree().setSplitRunner(groups);
        if (groups.group(1).available() != 0) {
            throw new IllegalStateException("group 1 should be full, has " + groups.group(1).available() + " available");
        }
        // Severe memory shortage: the arena is taken down to its floor (worker creation fails on its
        // own under it; the fault makes that certain), and metadata writes lean on the reserves.
        MemoryPressure pressure = MemoryPressure.exhaust(kernel, sparePages, 0);
        probe.start(kernel);
        long[] written = new long[rounds * perRound];
        Task writer = kernel.spawn("provision", TaskKind.WORKER, () -> provision(md, groups, written, rounds, perRound, probe));
        Task converter = kernel.spawn("convert", TaskKind.WORKER, () -> convert(convertMd, converted, probe));
        kernel.scheduler().join(writer);
        kernel.scheduler().join(converter);
        probe.stop();
        pressure.release();
        md.tree().setSplitRunner(null);
        convertMd.tree().setSplitRunner(null);
        groups.close();
        verify(md, WRITE_DEV, written);
        verify(convertMd, CONVERT_DEV, converted);
        for (ThinMetadata m : List.of(md, convertMd)) {
            m.commit();
            List<String> problems = m.check();
            if (!problems.isEmpty()) {
                throw new IllegalStateException("thin metadata check after the run: " + problems);
            }
        }
        convertCache.close();
        cache.close();
    }

    /** The write path: per round, locks a group with space reserved, allocates and maps blocks, unlocks. */
    private static void provision(ThinMetadata md, AllocationGroups groups, long[] written, int rounds, int perRound,
            Probe probe) {
        for (int r = 0; r < rounds; r++) {
            // One block per mapping plus the reservation that backs offloaded splits.
            try (AllocationGroups.Hold hold = groups.reserve(perRound + AllocationGroups.SPLIT_RESERVE_BLOCKS, 0)) {
                if (hold == null) {
                    throw new IllegalStateException("provision: out of data space in round " + r);
                }
                for (int i = 0; i < perRound; i++) {
                    int v = r * perRound + i;
                    written[v] = hold.allocate();
                    md.insertMapping(WRITE_DEV, v, written[v]);
                    probe.ioDone();
                }
            }
            md.commit();
        }
    }

    /** The completion path: maps the blocks allocated up front in its own tree, one by one, holding no group. */
    private static void convert(ThinMetadata md, long[] blocks, Probe probe) {
        for (int v = 0; v < blocks.length; v++) {
            md.insertMapping(CONVERT_DEV, v, blocks[v]);
            probe.ioDone();
        }
    }

    /** Checks that every virtual block of {@code dev} maps to the block recorded for it. */
    private static void verify(ThinMetadata md, int dev, long[] blocks) {
        for (int v = 0; v < blocks.length; v++) {
            long got = md.lookup(dev, v);
            if (got != blocks[v]) {
                throw new IllegalStateException("thin device " + dev + " vblock " + v + " maps to " + got + ", expected "
                        + blocks[v]);
            }
        }
    }
}
