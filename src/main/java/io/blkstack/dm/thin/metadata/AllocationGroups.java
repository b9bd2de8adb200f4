package io.blkstack.dm.thin.metadata;

import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Mutex;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskSlot;
import io.blkstack.wq.Work;
import io.blkstack.wq.Workqueue;
import java.util.function.LongSupplier;

/**
 * The data device of a thin pool cut into allocation groups (XFS's AGs), each with its own
 * {@link Mutex} and free-space accounting, so provisioning writes in different groups do not
 * serialise on one lock. A provisioning task locks a group, reserves space in it, allocates data
 * blocks from the reservation and then inserts mappings, which may split B-tree nodes.
 *
 * <p>Seed {@code 004_*}: splits may be offloaded to the {@code alloc} {@code MEM_RECLAIM}
 * workqueue. Under memory pressure that queue runs on its single rescuer, one item at a time. An
 * offloaded split that must itself lock a group (because its caller brought no reservation) can
 * wait for a group held by a task whose own split is queued behind it on the rescuer: an ABBA
 * deadlock (rule 4 of DESIGN.md section 1). {@code split-offload=legacy} always offloads; the
 * fixed {@code reserved-only} policy offloads only when the calling task holds a group with enough
 * reserved space (so the worker never needs a group lock), and otherwise splits inline.
 *
 * <p>The groups are the split runner of any number of trees ({@link BTree#setSplitRunner}): like
 * the block-map B-trees of several XFS inodes, trees of different thin metadata, each under its own
 * lock, share the groups and the one {@code alloc} queue, so their splits can be queued together.
 */
public final class AllocationGroups implements BTree.SplitRunner, AutoCloseable {

    /** Blocks a split may need from a reservation (the new node). */
    public static final int SPLIT_RESERVE_BLOCKS = 1;

    private static final TaskSlot<Hold> HELD = TaskSlot.create("thin allocation group held");

    private final Kernel kernel;
    private final ThinMetadata metadata;
    private final Group[] groups;
    private final boolean legacy;
    private final Workqueue allocWq;

    /** One group: a range of data blocks, its lock, and its free and reserved counts (guarded by the lock). */
    public final class Group {
        final int index;
        final long first;
        final long end;
        final Mutex lock;
        long free;
        long reserved;

        Group(int index, long first, long end) {
            this.index = index;
            this.first = first;
            this.end = end;
            this.lock = new Mutex("thin ag " + index);
        }

        public int index() {
            return index;
        }

        /** Free blocks not reserved; read without the lock it is a hint. */
        public long available() {
            return free - reserved;
        }

        public Mutex mutex() {
            return lock;
        }
    }

    /** A locked group with space reserved by the holding task; close unlocks and returns unused space. */
    public final class Hold implements AutoCloseable {
        private final Group group;
        private long reserved;
        private final Task owner;
        private final Hold outer;
        private boolean closed;

        private Hold(Group group, long reserved) {
            this.group = group;
            this.reserved = reserved;
            this.owner = Task.current();
            this.outer = owner.get(HELD);
            owner.set(HELD, this);
        }

        public Group group() {
            return group;
        }

        /** Blocks still reserved. */
        public long reserved() {
            return reserved;
        }

        /** Allocates one data block from the reservation (reference count 1). */
        public long allocate() {
            if (reserved <= 0) {
                throw new IllegalStateException("allocation from group " + group.index + " with no reservation left");
            }
            // Consume the reservation first: the reference-count update below may split a node,
            // and only what is still reserved then may back an offloaded split.
            reserved--;
            group.reserved--;
            group.free--;
            long block = metadata.allocDataBlock(group.first, group.end);
            if (block < 0) {
                throw new IllegalStateException("group " + group.index + " counted free space but has no free block");
            }
            return block;
        }

        /** Unlocks the group and returns the unused reservation; a second close does nothing. */
        @Override
        public void close() {
            if (closed) {
                return;
            }
            closed = true;
            group.reserved -= reserved;
            reserved = 0;
            owner.set(HELD, outer);
            group.lock.unlock();
        }
    }

    /** Groups of {@code groupBlocks} data blocks over the pool's data space; counts free space from the metadata. */
    public AllocationGroups(Kernel kernel, ThinMetadata metadata, long groupBlocks) {
        this(kernel, metadata, groupBlocks, 1);
    }

    /**
     * As {@link #AllocationGroups(Kernel, ThinMetadata, long)}, with an {@code alloc} queue that
     * runs up to {@code allocMaxActive} splits at once on workers (its rescuer still runs one at a
     * time).
     */
    public AllocationGroups(Kernel kernel, ThinMetadata metadata, long groupBlocks, int allocMaxActive) {
        if (groupBlocks <= 0) {
            throw new IllegalArgumentException("allocation group of " + groupBlocks + " blocks");
        }
        this.kernel = kernel;
        this.metadata = metadata;
        long total = metadata.dataBlockCount();
        int count = (int) ((total + groupBlocks - 1) / groupBlocks);
        this.groups = new Group[count];
        for (int i = 0; i < count; i++) {
            Group g = new Group(i, i * groupBlocks, Math.min(total, (i + 1) * groupBlocks));
            for (long b = g.first; b < g.end; b++) {
                if (metadata.isDataBlockFree(b)) {
                    g.free++;
                }
            }
            groups[i] = g;
        }
        this.legacy = kernel.policies().isLegacy(PolicySwitch.SPLIT_OFFLOAD);
        this.allocWq = Workqueue.create(kernel, "alloc", Workqueue.MEM_RECLAIM, allocMaxActive);
    }

    public int groupCount() {
        return groups.length;
    }

    public Group group(int i) {
        return groups[i];
    }

    /** The group hold of the calling task, or null. */
    public static Hold currentHold() {
        return Task.current().get(HELD);
    }

    /**
     * Locks a group with at least {@code blocks} available and reserves them, preferring
     * {@code preferred}: first a pass of try-locks, then a pass that waits for each lock in group
     * order. Returns null if no group has the space (out of data space).
     */
    public Hold reserve(long blocks, int preferred) {
        if (blocks <= 0) {
            throw new IllegalArgumentException("reserve of " + blocks + " blocks");
        }
        for (int pass = 0; pass < 2; pass++) {
            for (int k = 0; k < groups.length; k++) {
                Group g = groups[(Math.floorMod(preferred, groups.length) + k) % groups.length];
                if (g.available() < blocks) {
                    continue;
                }
                if (pass == 0) {
                    if (!g.lock.tryLock()) {
                        continue;
                    }
                } else {
                    g.lock.lock();
                }
                if (g.free - g.reserved >= blocks) {
                    g.reserved += blocks;
                    return new Hold(g, blocks);
                }
                g.lock.unlock();
            }
        }
        return null;
    }

    /** Returns a freed data block's space to its group (after a discard). */
    public void blockFreed(long block) {
        Group g = groups[(int) (block / (groups[0].end - groups[0].first))];
        boolean mine = g.lock.isHeldByCurrentTask();
        if (!mine) {
            g.lock.lock();
        }
        try {
            g.free++;
        } finally {
            if (!mine) {
                g.lock.unlock();
            }
        }
    }

    /** Free data blocks over all groups (a hint without the locks). */
    public long freeBlocks() {
        long sum = 0;
        for (Group g : groups) {
            sum += g.free;
        }
        return sum;
    }

    /**
     * Runs a B-tree split: offloaded to the {@code alloc} workqueue under the legacy policy always,
     * under the fixed policy only when the caller holds a group with {@link #SPLIT_RESERVE_BLOCKS}
     * reserved; otherwise inline. An offloaded split whose caller brought no reservation locks a
     * group itself on the worker, which is the seed-004 dependency.
     */
    @Override
    public long run(LongSupplier split) {
        Hold held = currentHold();
        boolean offload = legacy || (held != null && held.reserved() >= SPLIT_RESERVE_BLOCKS);
        if (!offload) {
            kernel.counters().get("thin.split-inline").incrementAndGet();
            return split.getAsLong();
        }
        kernel.counters().get("thin.split-offloaded").incrementAndGet();
        long[] result = {-1};
        RuntimeException[] failure = {null};
        // Named after the caller, so a knot shows whose split is running and whose is queued.
        String what = "btree split of " + Task.current();
        Completion done = new Completion(what);
        boolean needsGroup = held == null;
        int preferred = held == null ? 0 : held.group().index();
        allocWq.queue(new Work(what, () -> {
            try {
                if (needsGroup) {
                    // The worker must find space of its own: it locks a group (and may wait for one).
                    try (Hold own = reserve(SPLIT_RESERVE_BLOCKS, preferred)) {
                        result[0] = split.getAsLong();
                    }
                } else {
                    result[0] = split.getAsLong();
                }
            } catch (RuntimeException e) {
                failure[0] = e;
            } finally {
                done.complete();
            }
        }));
        done.await();
        if (failure[0] != null) {
            throw failure[0];
        }
        return result[0];
    }

    /** Drains and closes the {@code alloc} workqueue. */
    @Override
    public void close() {
        allocWq.close();
    }
}
