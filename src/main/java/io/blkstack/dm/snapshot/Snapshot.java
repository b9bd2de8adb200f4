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
    /** The longest run of adjacent chunks one pending exception copies: 1 MiB. */
    static final int RUN_SECTORS_MAX = 2048;
    /** The copy service's reserve: at most this many pages (1 MiB, sixteen 64 KiB pieces in flight)... */
    static final int COPY_RESERVE_PAGES_MAX = 256;
    /** ...and at most this fraction of the arena (1/64), but never less than one chunk. */
    static final int COPY_RESERVE_ARENA_DIVISOR = 64;
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
    private final Bio[] fullWritesDone = new Bio[PENDING_MAX];
    private final io.blkstack.bio.BioEndIo fullWriteEndIo = this::fullWriteDone;

    // Guarded by lock.
    private PendingException freeList;
    private PendingException commitHead;
    private PendingException startHead;
    private int pendingInUse;
    private final BioList waitingForPending = new BioList();
    private final BioList retry = new BioList();
    private final SnapshotBioState[] trackedReads = new SnapshotBioState[TRACK_BUCKETS];
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
        int reserve = Math.min(COPY_RESERVE_PAGES_MAX, kernel.pages().totalPages() / COPY_RESERVE_ARENA_DIVISOR);
        copier = new CopyService(kernel, name, Math.max(chunkPages, reserve));
        workqueue = Workqueue.create(kernel, "ksnapd/" + name, Workqueue.MEM_RECLAIM, 1);
        commitWork = new Work("snapshot " + name + " commit", this::commitPending);
        retryWork = new Work("snapshot " + name + " retry", this::retryWaiting);
        pending = new PendingException[PENDING_MAX];
        for (int i = PENDING_MAX - 1; i >= 0; i--) {
            pending[i] = new PendingException(this, i);
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
     * clone.sectorCount())} may go ahead for this snapshot. Every chunk it touches that has neither
     * an exception nor a pending one gets one now, as runs of adjacent chunks (one copy each, as far
     * as free pending exceptions allow); the clone is queued on the first chunk still pending and
     * false is returned: the caller returns SUBMITTED and the clone comes back through
     * {@link DeferredRemap#remapDeferred}, which asks again (for the chunks still missing). Never
     * blocks.
     *
     * <p>The origin's old data must be kept even when the write covers a chunk completely, so an
     * origin write never lets a chunk go without its copy; what it saves is the read of a chunk
     * whose origin range is a hole, which the copy service zeroes on the COW device instead.
     */
    public boolean originWrite(Bio clone, long sector) {
        if (!active || !valid) {
            return true;
        }
        long first = sector >>> chunkShift;
        long last = (sector + Math.max(1, clone.sectorCount()) - 1) >>> chunkShift;
        boolean queued = false;
        lock.lock();
        try {
            long chunk = first;
            while (chunk <= last && valid) {
                if (store.lookup(chunk) >= 0) {
                    chunk++;
                    continue;
                }
                PendingException pe = pendingOf(chunk);
                if (pe == null) {
                    pe = startRunLocked(chunk, last);
                }
                if (pe == null) {
                    if (valid && !queued) {
                        waitingForPending.add(clone);
                        queued = true;
                    }
                    break;
                }
                if (!queued) {
                    pe.waiters.add(clone);
                    queued = true;
                }
                chunk = pe.oldChunk + pe.chunkCount;
            }
        } finally {
            lock.unlock();
        }
        startQueuedCopies();
        return !queued;
    }

    // ---- snapshot side -------------------------------------------------------------------------

    /**
     * Maps a snapshot read or write of {@code offset} (sectors into the snapshot, inside one chunk):
     * a chunk with an exception goes to the COW device; a read of one without goes to the origin
     * (tracked in {@code state}); a write of one without waits for a new exception (SUBMITTED),
     * except a write that covers the whole chunk: the snapshot's old contents of that chunk are
     * all overwritten, so nothing is copied; the write itself goes to a new COW chunk and its
     * completion is held back until the exception is committed (dm-snapshot's full-chunk write).
     */
    public MapResult mapSnapshotIo(Bio clone, long offset, SnapshotBioState state) {
        state.trackedChunk = -1;
        state.fullWrite = null;
        long chunk = offset >>> chunkShift;
        long within = offset & (chunkSectors - 1);
        MapResult result;
        lock.lock();
        try {
            if (!valid) {
                return MapResult.KILL;
            }
            long newChunk = store.lookup(chunk);
            PendingException pe;
            if (newChunk >= 0) {
                clone.setDevice(cow).setSector((newChunk << chunkShift) + within);
                result = MapResult.REMAPPED;
            } else if (clone.op() == BioOp.READ) {
                track(state, chunk);
                clone.setDevice(origin).setSector(offset);
                result = MapResult.REMAPPED;
            } else if ((pe = pendingOf(chunk)) != null) {
                pe.waiters.add(clone);
                result = MapResult.SUBMITTED;
            } else if (within == 0 && clone.sectorCount() == chunkSectors && (pe = newPendingLocked(chunk, 1)) != null) {
                pe.fullWrite = clone;
                pe.savedEndIo = clone.endIo();
                state.fullWrite = pe;
                clone.setEndIo(fullWriteEndIo);
                clone.setDevice(cow).setSector(pe.newChunk << chunkShift);
                result = MapResult.REMAPPED;
            } else if (!valid) {
                result = MapResult.KILL;
            } else if ((pe = startRunLocked(chunk, chunk)) != null) {
                pe.waiters.add(clone);
                result = MapResult.SUBMITTED;
            } else {
                if (valid) {
                    waitingForPending.add(clone);
                }
                result = valid ? MapResult.SUBMITTED : MapResult.KILL;
            }
        } finally {
            lock.unlock();
        }
        startQueuedCopies();
        return result;
    }

    /** A snapshot write that fills its chunk completed (atomic): the exception is committed next. */
    private void fullWriteDone(Bio clone) {
        io.blkstack.dm.TargetIo tio = clone.frontPad();
        SnapshotBioState state = tio.perBioData();
        PendingException pe = state.fullWrite;
        if (pe == null || pe.fullWrite != clone) {
            throw new IllegalStateException("snapshot " + name + ": full-chunk write " + clone + " lost its pending exception");
        }
        copyDone(pe, clone.status());
    }

    /** A snapshot clone completed (atomic context): ends its origin-read tracking. */
    public void snapshotIoDone(SnapshotBioState state) {
        long chunk = state.trackedChunk;
        if (chunk < 0) {
            return;
        }
        boolean released = false;
        lock.lock();
        try {
            untrack(state);
            for (PendingException pe : pending) {
                if (pe.waitingForReads && pe.covers(chunk) && !readsInFlight(pe)) {
                    releaseLocked(pe);
                    released = true;
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

    /** Under the lock: tracks a snapshot read of origin chunk {@code chunk}. */
    private void track(SnapshotBioState state, long chunk) {
        int b = bucket(chunk);
        state.trackedChunk = chunk;
        state.trackPrev = null;
        state.trackNext = trackedReads[b];
        if (state.trackNext != null) {
            state.trackNext.trackPrev = state;
        }
        trackedReads[b] = state;
    }

    /** Under the lock: ends the tracking of a read. */
    private void untrack(SnapshotBioState state) {
        if (state.trackPrev != null) {
            state.trackPrev.trackNext = state.trackNext;
        } else {
            int b = bucket(state.trackedChunk);
            if (trackedReads[b] != state) {
                throw new IllegalStateException("snapshot " + name + ": tracked read of chunk " + state.trackedChunk
                        + " is not on its bucket's list");
            }
            trackedReads[b] = state.trackNext;
        }
        if (state.trackNext != null) {
            state.trackNext.trackPrev = state.trackPrev;
        }
        state.trackPrev = null;
        state.trackNext = null;
        state.trackedChunk = -1;
    }

    /**
     * Under the lock: whether a snapshot read of one of {@code pe}'s origin chunks is in flight.
     * Exact per chunk, so reads of other chunks never hold a run back (new reads of the run's
     * chunks go to the COW device once the exception is visible, so the wait ends).
     */
    private boolean readsInFlight(PendingException pe) {
        int buckets = Math.min(pe.chunkCount, TRACK_BUCKETS);
        for (int i = 0; i < buckets; i++) {
            for (SnapshotBioState s = trackedReads[bucket(pe.oldChunk + i)]; s != null; s = s.trackNext) {
                if (pe.covers(s.trackedChunk)) {
                    return true;
                }
            }
        }
        return false;
    }

    // ---- pending exceptions --------------------------------------------------------------------

    /** Under the lock: the pending exception whose run holds origin chunk {@code chunk}, or null. */
    private PendingException pendingOf(long chunk) {
        for (PendingException pe : pending) {
            if (pe.inUse() && pe.covers(chunk)) {
                return pe;
            }
        }
        return null;
    }

    /**
     * Under the lock: a pending exception for the run of origin chunks from {@code chunk} that have
     * neither an exception nor a pending one, at most to {@code last}, {@link #RUN_SECTORS_MAX}
     * long and as far as the COW device has adjacent free chunks; its copy is queued on the start
     * list (the caller starts it after unlocking, {@link #startQueuedCopies}). Null if no pending
     * exception is free, or if the COW device is full (the snapshot is then invalid).
     */
    private PendingException startRunLocked(long chunk, long last) {
        long originChunks = origin.capacitySectors() >>> chunkShift; // whole chunks; a partial last one runs alone
        long wanted = Math.min(last - chunk + 1, Math.max(1, RUN_SECTORS_MAX >>> chunkShift));
        int count = 1;
        while (count < wanted && chunk + count < originChunks && store.lookup(chunk + count) < 0
                && pendingOf(chunk + count) == null) {
            count++;
        }
        PendingException pe = newPendingLocked(chunk, count);
        if (pe != null) {
            pe.setRanges(origin, chunk << chunkShift, cow, pe.newChunk << chunkShift, pe.chunkCount << chunkShift, true);
            pe.link = startHead;
            startHead = pe;
        }
        return pe;
    }

    /**
     * Under the lock: takes a free pending exception for up to {@code count} origin chunks from
     * {@code chunk} and reserves as many adjacent COW chunks as the store has in a row (at least
     * one). Null if none is free, or if the COW device is full (which invalidates the snapshot).
     */
    private PendingException newPendingLocked(long chunk, int count) {
        PendingException pe = freeList;
        if (pe == null) {
            return null;
        }
        int run = store.allocatableRun(count);
        if (run == 0) {
            invalidateLocked("COW device " + cow.name() + " is full");
            return null;
        }
        long newChunk = store.allocate();
        for (int i = 1; i < run; i++) {
            long next = store.allocate();
            if (next != newChunk + i) {
                throw new IllegalStateException("snapshot " + name + ": COW chunk " + next + " allocated in a run from "
                        + newChunk + " at position " + i);
            }
        }
        freeList = pe.link;
        pe.link = null;
        pe.oldChunk = chunk;
        pe.newChunk = newChunk;
        pe.chunkCount = run;
        pe.fullWrite = null;
        pe.savedEndIo = null;
        pe.copied = false;
        pe.waitingForReads = false;
        pendingInUse++;
        return pe;
    }

    /** Starts the copies of new pending exceptions on the start list (outside the lock). */
    private void startQueuedCopies() {
        while (true) {
            PendingException pe;
            lock.lock();
            try {
                pe = startHead;
                if (pe != null) {
                    startHead = pe.link;
                    pe.link = null;
                }
            } finally {
                lock.unlock();
            }
            if (pe == null) {
                return;
            }
            if ((pe.oldChunk + pe.chunkCount) << chunkShift > origin.capacitySectors()) {
                // The origin's last chunk is partial: nothing to copy past its end (not supported).
                copyDone(pe, BioStatus.IOERR);
            } else {
                copier.copy(pe);
            }
        }
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
        int fullWrites = 0;
        lock.lock();
        try {
            for (int i = 0; i < count; i++) {
                PendingException pe = commitBatch[i];
                commitBatch[i] = null;
                pe.link = null;
                if (pe.fullWrite != null) {
                    Bio clone = pe.fullWrite;
                    clone.setEndIo(pe.savedEndIo);
                    if (!valid && !clone.status().isError()) {
                        clone.setStatus(BioStatus.IOERR);
                    }
                    fullWritesDone[fullWrites++] = clone;
                    pe.fullWrite = null;
                    pe.savedEndIo = null;
                }
                if (valid) {
                    for (int c = 0; c < pe.chunkCount; c++) {
                        store.insert(pe.oldChunk + c, pe.newChunk + c);
                    }
                    if (readsInFlight(pe)) {
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
        for (int i = 0; i < fullWrites; i++) {
            Bio clone = fullWritesDone[i];
            fullWritesDone[i] = null;
            clone.endio(); // visible now: a read of the chunk goes to the COW device and finds the write
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
        pe.chunkCount = 0;
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
                            : pe.copied ? "copied, waiting for the commit"
                            : pe.fullWrite != null ? "the snapshot write that fills it in progress"
                            : "copy-out to the COW device in progress";
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
