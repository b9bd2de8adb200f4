package io.blkstack.dm.mirror;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioList;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.Submit;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Mempool;
import io.blkstack.mem.Page;
import io.blkstack.wq.Work;
import io.blkstack.wq.Workqueue;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.ObjIntConsumer;

/**
 * The mirror's resync (dm-raid1's recovery): {@code message rebuild <leg>} or {@code recover}
 * copies the whole target from a healthy leg onto a leg, and the write fence that keeps the copy
 * from overwriting newer data with older.
 *
 * <p>The copy runs on the target's {@code MEM_RECLAIM} workqueue {@code kmirror-rebuild}, chunk by
 * chunk through {@link MirrorTarget#REBUILD_PAGES} pages of the target's own page pool, each bio
 * waited for before the next (one unit in flight from each pool: rule 1 of DESIGN.md section 1).
 * Writes keep reaching the recovering leg. For each chunk the copy raises a fence: new writes
 * overlapping the chunk are held here (not failed, not busy-retried) and issued by the copy when
 * the chunk is done, never from a completion (rule 2); writes already in flight are drained first.
 * The drain uses two epochs: every admitted write counts in the epoch current when it was
 * admitted, raising a fence flips the epoch, and the copy waits until the old epoch's count is
 * zero. When the copy finishes the leg is healthy again and the copied regions are in sync.
 */
final class MirrorResync {

    /** Returned by {@link #admitWrite} for a write the fence holds. */
    static final int HELD = -1;

    private final String name;
    private final long lengthSectors;
    private final MirrorLegs legs;
    private final RegionLog log;
    private final BioSet bioSet;
    private final Mempool<Page> pagePool;
    private final Workqueue queue;
    private final ObjIntConsumer<Bio> issueHeldWrite;
    private final SpinLock lock;
    private final WaitQueue drained;
    private final AtomicIntegerArray epochWrites = new AtomicIntegerArray(2);
    private final AtomicLong rebuildsDone = new AtomicLong();
    private final Work work;

    // Guarded by lock.
    private final BioList held = new BioList();
    private int epoch;
    private long fenceStart = -1;
    private long fenceEnd = -1;
    private int rebuildLeg = -1;

    /**
     * A resync over the target's legs and log; the copy allocates from {@code bioSet} and
     * {@code pagePool} and runs on {@code queue}; {@code issueHeldWrite} sends a write the fence
     * held to the legs, with its epoch; {@code lock} is the target's lock, which guards the fence.
     */
    MirrorResync(String name, long lengthSectors, MirrorLegs legs, RegionLog log, BioSet bioSet,
            Mempool<Page> pagePool, Workqueue queue, SpinLock lock, ObjIntConsumer<Bio> issueHeldWrite) {
        this.name = name;
        this.lengthSectors = lengthSectors;
        this.legs = legs;
        this.log = log;
        this.bioSet = bioSet;
        this.pagePool = pagePool;
        this.queue = queue;
        this.lock = lock;
        this.issueHeldWrite = issueHeldWrite;
        this.drained = new WaitQueue("mirror " + name + " writes drained");
        this.work = new Work("kmirror rebuild " + name, this::run);
    }

    // ---- the write path's side ---------------------------------------------------------------

    /**
     * Admits a write to {@code [start, end)}: {@link #HELD} if it overlaps the fence (the resync
     * now owns {@code clone} and issues it later), else the epoch it counts in until
     * {@link #writeDone}.
     */
    int admitWrite(Bio clone, long start, long end) {
        lock.lock();
        if (start < fenceEnd && fenceStart < end) {
            held.add(clone); // the resync issues it once the chunk is copied
            lock.unlock();
            return HELD;
        }
        int admitted = epoch;
        epochWrites.incrementAndGet(admitted);
        lock.unlock();
        return admitted;
    }

    /** A write admitted in {@code writeEpoch} ended (atomic context: wakes the copy, never blocks). */
    void writeDone(int writeEpoch) {
        if (epochWrites.decrementAndGet(writeEpoch) == 0) {
            drained.wakeAll();
        }
    }

    // ---- control -----------------------------------------------------------------------------

    /**
     * {@code rebuild <leg>} copies a healthy leg onto the leg; {@code recover} rebuilds the first
     * failed leg (nothing if none). The copy runs on the rebuild workqueue; the reply is empty.
     */
    String message(String[] args) {
        int leg;
        if (args.length == 1 && args[0].equals("recover")) {
            leg = legs.firstFailed();
            if (leg < 0) {
                return "";
            }
        } else if (args.length == 2 && args[0].equals("rebuild")) {
            try {
                leg = Integer.parseInt(args[1]);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("mirror: rebuild leg '" + args[1] + "' is not a number");
            }
            if (leg < 0 || leg >= legs.count()) {
                throw new IllegalArgumentException("mirror: rebuild leg " + leg + " not in 0.." + (legs.count() - 1));
            }
        } else {
            throw new IllegalArgumentException("mirror: unknown message '" + String.join(" ", args)
                    + "' (rebuild <leg> | recover)");
        }
        start(leg);
        return "";
    }

    /** Marks {@code leg} recovering and queues its copy; refuses a second rebuild or one with no source. */
    private void start(int leg) {
        lock.lock();
        try {
            if (rebuildLeg >= 0) {
                throw new IllegalArgumentException("mirror: leg " + rebuildLeg + " is already being rebuilt");
            }
            if (legs.firstHealthyExcept(leg) < 0) {
                throw new IllegalArgumentException("mirror: no healthy leg to rebuild leg " + leg + " from");
            }
            rebuildLeg = leg;
            legs.markRecovering(leg);
        } finally {
            lock.unlock();
        }
        log.markOutOfSync(0, lengthSectors);
        queue.queue(work);
    }

    /** Whether a rebuild is running or queued. */
    boolean isRunning() {
        lock.lock();
        try {
            return rebuildLeg >= 0;
        } finally {
            lock.unlock();
        }
    }

    /** Rebuilds completed since creation. */
    long rebuildsDone() {
        return rebuildsDone.get();
    }

    // ---- the copy ----------------------------------------------------------------------------

    /**
     * The rebuild work: copies the target chunk by chunk onto the recovering leg, flushes the leg,
     * then marks it healthy. It starts with a flush whose result is dropped: it takes the leg's
     * stale write-back error (writes the leg lost before it failed, which a remote device reports
     * once, at its next flush), which the copy repairs, so that the first user flush after the
     * rebuild does not fail the leg again for a loss that is no longer there.
     */
    private void run() {
        int leg = rebuildLeg;
        Page[] pages = new Page[MirrorTarget.REBUILD_PAGES];
        boolean ok = true;
        try {
            flushLeg(leg);
            for (int i = 0; i < pages.length; i++) {
                pages[i] = pagePool.alloc(Gfp.NOIO);
            }
            long chunk = (long) pages.length * Page.SIZE / Bio.SECTOR_SIZE;
            for (long pos = 0; pos < lengthSectors && ok; pos += chunk) {
                long n = Math.min(chunk, lengthSectors - pos);
                raiseFence(pos, pos + n);
                ok = copyChunk(leg, pos, (int) n, pages);
                lowerFence();
                if (ok && !legs.anyOtherDown(leg)) {
                    log.markInSync(pos, pos + n);
                }
            }
            if (ok && flushLeg(leg).isError()) {
                legs.markFailed(leg);
                ok = false;
            }
        } finally {
            for (Page p : pages) {
                if (p != null) {
                    pagePool.free(p);
                }
            }
            lock.lock();
            if (ok && legs.markHealthyIfRecovering(leg)) {
                rebuildsDone.incrementAndGet();
            }
            rebuildLeg = -1;
            lock.unlock();
        }
    }

    /** Holds new writes to {@code [start, end)} and waits until every write admitted before is done. */
    private void raiseFence(long start, long end) {
        lock.lock();
        fenceStart = start;
        fenceEnd = end;
        int old = epoch;
        epoch ^= 1;
        lock.unlock();
        drained.waitEvent(() -> epochWrites.get(old) == 0, "mirror rebuild: writes before the fence");
    }

    /** Releases the fence and issues the writes it held (from this work, never from a completion). */
    private void lowerFence() {
        lock.lock();
        fenceStart = -1;
        fenceEnd = -1;
        BioList release = new BioList();
        release.merge(held);
        lock.unlock();
        for (Bio clone = release.pop(); clone != null; clone = release.pop()) {
            lock.lock();
            int admitted = epoch;
            epochWrites.incrementAndGet(admitted);
            lock.unlock();
            issueHeldWrite.accept(clone, admitted);
        }
    }

    /** Reads the chunk from a healthy leg (trying the next on error) and writes it to {@code leg}. */
    private boolean copyChunk(int leg, long pos, int sectors, Page[] pages) {
        while (true) {
            int source = legs.firstHealthyExcept(leg);
            if (source < 0 || !legs.isRecovering(leg)) {
                return false;
            }
            BioStatus read = copyIo(source, BioOp.READ, pos, sectors, pages);
            if (read.isError()) {
                legs.markFailed(source);
                continue;
            }
            BioStatus write = copyIo(leg, BioOp.WRITE, pos, sectors, pages);
            if (write.isError()) {
                legs.markFailed(leg);
                return false;
            }
            return true;
        }
    }

    /** A synchronous flush of {@code leg}'s device. */
    private BioStatus flushLeg(int leg) {
        Bio bio = bioSet.alloc(Gfp.NOIO, 0).init(legs.device(leg), BioOp.FLUSH, 0, 0);
        BioStatus status = Submit.submitAndWaitStatus(bio);
        bio.put();
        return status;
    }

    /** One synchronous bio of the copy over the rebuild pages. */
    private BioStatus copyIo(int leg, BioOp op, long pos, int sectors, Page[] pages) {
        int bytes = sectors * Bio.SECTOR_SIZE;
        int count = (bytes + Page.SIZE - 1) / Page.SIZE;
        Bio bio = bioSet.alloc(Gfp.NOIO, count);
        bio.init(legs.device(leg), op, 0, legs.offset(leg) + pos);
        for (int i = 0; i < count; i++) {
            bio.addPage(pages[i], Math.min(Page.SIZE, bytes - i * Page.SIZE), 0);
        }
        BioStatus status = Submit.submitAndWaitStatus(bio);
        bio.put();
        return status;
    }

    @Override
    public String toString() {
        return "mirror resync " + name;
    }
}
