package io.blkstack.dm.snapshot;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioList;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.dm.MapResult;
import io.blkstack.dm.TargetIo;
import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.Teardown;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.mem.Page;
import io.blkstack.wq.Work;
import io.blkstack.wq.Workqueue;

/**
 * One snapshot of an origin device (dm-snapshot's {@code dm_snapshot}): its exception store on the
 * COW device, its pending exceptions, its copy service and its workqueue ({@code ksnapd}). The
 * {@code snapshot} target maps through it, and the {@code snapshot-origin} target of the same
 * origin asks it before every write ({@link #originWrite}).
 *
 * <p><b>The cross-target dependency (seed 001).</b> An origin write to a chunk without an exception
 * must not reach the origin before the old chunk is copied to the COW device and committed. It
 * never waits for that inside {@code map}: the clone is queued on the chunk's pending exception
 * and {@code map} returns {@link MapResult#SUBMITTED}; the copy runs on the {@link CopyService};
 * when the commit is done the clone moves to this snapshot's retry list and the workqueue hands
 * it back to its target ({@link DeferredRemap}), which submits it from the worker. So no task
 * inside the submit loop ever sleeps on a bio queued behind it.
 *
 * <p><b>Locking.</b> One spin lock guards the store's table and allocator, the pending exceptions
 * and every list here; nothing sleeps under it. Lock order: this lock, then the copy service's
 * lock, then workqueue locks.
 *
 * <p><b>Snapshot reads of the origin</b> are tracked per chunk bucket while in flight; a committed
 * exception of a chunk with tracked reads holds its origin writes back until those reads ended, so
 * a read that went to the origin never sees data written after the snapshot.
 *
 * <p><b>Invalidation.</b> A full COW device or a failed copy or commit invalidates the snapshot:
 * its I/O fails, origin writes stop waiting for it, and a persistent store records it in the header.
 *
 * <p><b>Explanations.</b> The snapshot is registered with the kernel as a {@link Component} while
 * open, so the checker's wait-for knot lists its pending exceptions and the bios waiting on each
 * ({@link #describeState}): a clone queued there is held by the snapshot, not by the task that
 * allocated it.
 */
public final class Snapshot implements Component {

    /** Pending exceptions per snapshot. */
    public static final int PENDING_MAX = 16;
    /** Buckets of tracked origin reads. */
    static final int TRACK_BUCKETS = 64;
    /** Waiting clones the retry work hands back in one run before yielding. */
    static final int RETRY_BATCH_MAX = 16;

    private final Kernel kernel;
    private final String name;
    private final BlockDevice origin;
    private final BlockDevice cow;
    private final int chunkSectors;
    private final int chunkShift;
    private final SpinLock lock;
    private final WaitQueue idle;

    private ExceptionStore store;
    private CopyService copier;
    private Workqueue workqueue;
    private Work commitWork;
    private Work retryWork;
    private PendingException[] pending;
    private final PendingException[] commitBatch = new PendingException[PENDING_MAX];

    // Guarded by lock.
    private PendingException freeList;
    private PendingException commitHead;
    private int pendingInUse;
    private final BioList waitingForPending = new BioList();
    private final BioList retry = new BioList();
    private final int[] trackedReads = new int[TRACK_BUCKETS];
    private boolean invalidToPersist;
    private String invalidReason;
    private volatile boolean valid = true;
    private volatile boolean active;
    /** The kernel's origin table this snapshot is in; null until registered. */
    private OriginRegistry origins;
    private boolean describable;
    private boolean closed;

    private Snapshot(Kernel kernel, String name, BlockDevice origin, BlockDevice cow, int chunkSectors) {
        this.kernel = kernel;
        this.name = name;
        this.origin = origin;
        this.cow = cow;
        this.chunkSectors = chunkSectors;
        this.chunkShift = Integer.numberOfTrailingZeros(chunkSectors);
        this.lock = new SpinLock("snapshot " + name);
        this.idle = new WaitQueue("snapshot " + name + " idle");
    }

    /**
     * Opens a snapshot of {@code origin} on {@code cow} (reading a persistent store back, or starting
     * one) and registers it with the origin; it takes part in origin writes after {@link #activate}.
     * Waits for I/O; call from a control path.
     *
     * @throws IllegalArgumentException if the store cannot be opened or the COW device is in use
     */
    public static Snapshot open(Kernel kernel, String name, BlockDevice origin, BlockDevice cow, boolean persistent,
            int chunkSectors) {
        if (origin == cow) {
            throw new IllegalArgumentException("origin and COW device are both " + origin.name());
        }
        Snapshot s = new Snapshot(kernel, name, origin, cow, chunkSectors);
        try {
            s.build(persistent);
        } catch (RuntimeException e) {
            s.close();
            throw e;
        }
        return s;
    }

    private void build(boolean persistent) {
        long originChunks = (origin.capacitySectors() + chunkSectors - 1) >>> chunkShift;
        store = persistent ? new PersistentStore(kernel, name, cow, chunkSectors, originChunks)
                : new TransientStore(cow, chunkSectors);
        valid = store.validOnOpen();
        if (!valid) {
            invalidReason = "invalid on disk";
        }
        int chunkPages = (chunkSectors << Bio.SECTOR_SHIFT) / Page.SIZE;
        copier = new CopyService(kernel, name, chunkPages);
        workqueue = Workqueue.create(kernel, "ksnapd/" + name, Workqueue.MEM_RECLAIM, 1);
        commitWork = new Work("snapshot " + name + " commit", this::commitPending);
        retryWork = new Work("snapshot " + name + " retry", this::retryWaiting);
        pending = new PendingException[PENDING_MAX];
        for (int i = PENDING_MAX - 1; i >= 0; i--) {
            pending[i] = new PendingException(this, i, chunkPages);
            pending[i].link = freeList;
            freeList = pending[i];
        }
        OriginRegistry table = OriginRegistry.of(kernel);
        table.register(this);
        origins = table;
        kernel.register(this);
        describable = true;
    }

    // ---- origin side ---------------------------------------------------------------------------

    /**
     * Whether an origin write of {@code clone} covering origin sectors {@code [sector, sector +
     * clone.sectorCount())} may go ahead for this snapshot. If a chunk it touches has no exception
     * yet, the clone is queued on that chunk's pending exception (started now if needed) and false
     * is returned: the caller returns SUBMITTED and the clone comes back through
     * {@link DeferredRemap#remapDeferred}. Never blocks.
     */
    public boolean originWrite(Bio clone, long sector) {
        if (!active || !valid) {
            return true;
        }
        long first = sector >>> chunkShift;
        long last = (sector + Math.max(1, clone.sectorCount()) - 1) >>> chunkShift;
        PendingException started = null;
        boolean proceed = true;
        lock.lock();
        try {
            for (long chunk = first; chunk <= last && valid; chunk++) {
                if (store.lookup(chunk) >= 0) {
                    continue;
                }
                started = queueOnPending(clone, chunk);
                proceed = !valid;
                break;
            }
        } finally {
            lock.unlock();
        }
        startCopy(started);
        return proceed;
    }

    // ---- snapshot side -------------------------------------------------------------------------

    /**
     * Maps a snapshot read or write of {@code offset} (sectors into the snapshot, inside one chunk):
     * a chunk with an exception goes to the COW device; a read of one without goes to the origin
     * (tracked in {@code state}); a write of one without waits for a new exception (SUBMITTED).
     */
    public MapResult mapSnapshotIo(Bio clone, long offset, SnapshotBioState state) {
        state.trackedChunk = -1;
        long chunk = offset >>> chunkShift;
        long within = offset & (chunkSectors - 1);
        PendingException started = null;
        MapResult result;
        lock.lock();
        try {
            if (!valid) {
                return MapResult.KILL;
            }
            long newChunk = store.lookup(chunk);
            if (newChunk >= 0) {
                clone.setDevice(cow).setSector((newChunk << chunkShift) + within);
                result = MapResult.REMAPPED;
            } else if (clone.op() == BioOp.READ) {
                trackedReads[bucket(chunk)]++;
                state.trackedChunk = chunk;
                clone.setDevice(origin).setSector(offset);
                result = MapResult.REMAPPED;
            } else {
                started = queueOnPending(clone, chunk);
                result = valid ? MapResult.SUBMITTED : MapResult.KILL;
            }
        } finally {
            lock.unlock();
        }
        startCopy(started);
        return result;
    }

    /** A snapshot clone completed (atomic context): ends its origin-read tracking. */
    public void snapshotIoDone(SnapshotBioState state) {
        long chunk = state.trackedChunk;
        if (chunk < 0) {
            return;
        }
        state.trackedChunk = -1;
        boolean released = false;
        lock.lock();
        try {
            int b = bucket(chunk);
            if (--trackedReads[b] < 0) {
                throw new IllegalStateException("snapshot " + name + ": tracked reads of bucket " + b + " below zero");
            }
            if (trackedReads[b] == 0) {
                for (PendingException pe : pending) {
                    if (pe.waitingForReads && bucket(pe.oldChunk) == b) {
                        releaseLocked(pe);
                        released = true;
                    }
                }
            }
        } finally {
            lock.unlock();
        }
        if (released) {
            workqueue.queue(retryWork);
        }
    }

    private static int bucket(long chunk) {
        return (int) (chunk & (TRACK_BUCKETS - 1));
    }

    // ---- pending exceptions --------------------------------------------------------------------

    /**
     * Under the lock: queues {@code clone} on the pending exception of {@code chunk}, making one if
     * needed (returned, so the caller starts its copy after unlocking), or on the wait list for a
     * free one. Invalidates the snapshot if the COW device is full (the clone is not queued then).
     */
    private PendingException queueOnPending(Bio clone, long chunk) {
        for (PendingException pe : pending) {
            if (pe.oldChunk == chunk) {
                pe.waiters.add(clone);
                return null;
            }
        }
        PendingException pe = freeList;
        if (pe == null) {
            waitingForPending.add(clone);
            return null;
        }
        long newChunk = store.allocate();
        if (newChunk < 0) {
            invalidateLocked("COW device " + cow.name() + " is full");
            return null;
        }
        freeList = pe.link;
        pe.link = null;
        pe.oldChunk = chunk;
        pe.newChunk = newChunk;
        pe.copied = false;
        pe.waitingForReads = false;
        pe.waiters.add(clone);
        pendingInUse++;
        pe.setRanges(origin, chunk << chunkShift, cow, newChunk << chunkShift, chunkSectors);
        return pe;
    }

    /** Starts the copy of a new pending exception (outside the lock). */
    private void startCopy(PendingException pe) {
        if (pe == null) {
            return;
        }
        if (pe.sourceSector + chunkSectors > origin.capacitySectors()) {
            // The origin's last chunk is partial: nothing to copy past its end (not supported).
            copyDone(pe, BioStatus.IOERR);
            return;
        }
        copier.copy(pe);
    }

    /** The copy service finished a copy (atomic context): the commit runs on the workqueue. */
    void copyDone(PendingException pe, BioStatus status) {
        lock.lock();
        try {
            if (status.isError()) {
                invalidateLocked("copy of chunk " + pe.oldChunk + " failed with " + status.errnoName());
            }
            pe.copied = true;
            pe.link = commitHead;
            commitHead = pe;
        } finally {
            lock.unlock();
        }
        workqueue.queue(commitWork);
    }

    /** The commit work: persists copied exceptions as one batch, then makes them visible. */
    private void commitPending() {
        int count = 0;
        boolean persistInvalid;
        lock.lock();
        try {
            for (PendingException pe = commitHead; pe != null; pe = pe.link) {
                commitBatch[count++] = pe;
            }
            commitHead = null;
            persistInvalid = invalidToPersist;
            invalidToPersist = false;
        } finally {
            lock.unlock();
        }
        if (count > 0 && valid) {
            BioStatus status = store.commit(commitBatch, count);
            if (status.isError()) {
                lock.lock();
                try {
                    invalidateLocked("metadata commit failed with " + status.errnoName());
                } finally {
                    lock.unlock();
                }
            }
        }
        lock.lock();
        try {
            for (int i = 0; i < count; i++) {
                PendingException pe = commitBatch[i];
                commitBatch[i] = null;
                pe.link = null;
                if (valid) {
                    store.insert(pe.oldChunk, pe.newChunk);
                    if (trackedReads[bucket(pe.oldChunk)] > 0) {
                        pe.waitingForReads = true;
                        continue;
                    }
                }
                releaseLocked(pe);
            }
            persistInvalid |= invalidToPersist;
            invalidToPersist = false;
        } finally {
            lock.unlock();
        }
        if (persistInvalid) {
            store.persistInvalid();
        }
        workqueue.queue(retryWork);
    }

    /** Under the lock: frees a pending exception and moves its waiters (and those waiting for one) to retry. */
    private void releaseLocked(PendingException pe) {
        retry.merge(pe.waiters);
        retry.merge(waitingForPending);
        pe.oldChunk = -1;
        pe.newChunk = -1;
        pe.copied = false;
        pe.waitingForReads = false;
        pe.link = freeList;
        freeList = pe;
        pendingInUse--;
        if (pendingInUse == 0) {
            idle.wakeAll();
        }
    }

    /** Under the lock: marks the snapshot invalid; waiting clones retry (and fail or go ahead). */
    private void invalidateLocked(String reason) {
        if (!valid) {
            return;
        }
        valid = false;
        invalidReason = reason;
        invalidToPersist = true;
        retry.merge(waitingForPending);
        workqueue.queue(commitWork);
    }

    /** The retry work: hands waiting clones back to the targets that mapped them. */
    private void retryWaiting() {
        for (int n = 0; n < RETRY_BATCH_MAX; n++) {
            Bio clone;
            lock.lock();
            try {
                clone = retry.pop();
            } finally {
                lock.unlock();
            }
            if (clone == null) {
                return;
            }
            TargetIo tio = clone.frontPad();
            ((DeferredRemap) tio.target()).remapDeferred(clone);
        }
        workqueue.queue(retryWork);
    }

    // ---- control -------------------------------------------------------------------------------

    /** Lets origin writes take this snapshot into account (called at the snapshot's resume). */
    public void activate() {
        active = true;
    }

    /** Whether the snapshot still serves I/O. */
    public boolean isValid() {
        return valid;
    }

    /** {@code <sectors allocated>/<total sectors> <metadata sectors>}, or {@code Invalid}. */
    public String statusInfo() {
        lock.lock();
        try {
            if (!valid) {
                return "Invalid";
            }
            return store.sectorsAllocated() + "/" + store.totalSectors() + " " + store.metadataSectors();
        } finally {
            lock.unlock();
        }
    }

    /** Exceptions visible now (read back at open, plus those committed since). */
    public int exceptionCount() {
        lock.lock();
        try {
            return store.exceptionCount();
        } finally {
            lock.unlock();
        }
    }

    public String name() {
        return name;
    }

    public BlockDevice origin() {
        return origin;
    }

    public BlockDevice cow() {
        return cow;
    }

    public int chunkSectors() {
        return chunkSectors;
    }

    /** Whether origin writes consult this snapshot. */
    public boolean isActive() {
        return active;
    }

    /**
     * Leaves the origin, waits until no pending exception is in use, and releases the workqueue,
     * the copy service and the store. Copes with a half-built snapshot.
     */
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (origins != null) {
            origins.unregister(this);
            origins = null;
        }
        if (describable) {
            kernel.unregister(this);
            describable = false;
        }
        if (pending != null) {
            idle.waitEvent(() -> {
                lock.lock();
                try {
                    return pendingInUse == 0;
                } finally {
                    lock.unlock();
                }
            }, "pending exceptions of snapshot " + name);
        }
        Teardown.closeAll(workqueue == null ? null : workqueue::close, copier, store == null ? null : store::close);
    }

    /**
     * The pending exceptions in use with their state and waiting bios, the bios waiting for a free
     * one, and the retry list. From a thread that is not a kernel task (the checker, while every
     * task is parked) it reads without the lock.
     */
    @Override
    public String describeState() {
        StringBuilder sb = new StringBuilder();
        boolean locked = Task.currentOrNull() != null;
        if (locked) {
            lock.lock();
        }
        try {
            sb.append(this).append(valid ? "" : " (invalid: " + invalidReason + ")").append(": ").append(pendingInUse)
                    .append(" of ").append(PENDING_MAX).append(" pending exception(s) in use");
            if (pending != null) {
                for (PendingException pe : pending) {
                    if (!pe.inUse()) {
                        continue;
                    }
                    String phase = pe.waitingForReads ? "committed, waiting for origin reads"
                            : pe.copied ? "copied, waiting for the commit" : "copy-out to the COW device in progress";
                    sb.append("\n    ").append(pe).append(" (").append(phase).append("): holds ").append(pe.waiters.size())
                            .append(" waiting bio(s) ").append(pe.waiters.toList());
                }
            }
            if (!waitingForPending.isEmpty()) {
                sb.append("\n    waiting for a free pending exception: ").append(waitingForPending.toList());
            }
            if (!retry.isEmpty()) {
                sb.append("\n    retry list: ").append(retry.toList());
            }
        } finally {
            if (locked) {
                lock.unlock();
            }
        }
        return sb.toString();
    }

    @Override
    public String toString() {
        return "snapshot " + name + " of " + origin.name() + " on " + cow.name();
    }
}
