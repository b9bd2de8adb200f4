package io.blkstack.bio;

import io.blkstack.block.BlockDevice;
import io.blkstack.block.DeviceStats;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * One block I/O: an operation on a range of a device with a vector of page segments (the kernel's
 * {@code struct bio}).
 *
 * <p>The range is the <em>iterator</em> (start sector, bytes left, vec index, bytes done in the
 * current vec: the kernel's {@code bvec_iter}); advancing it walks the shared vec array, so a
 * clone or a split front can look at a sub-range of the same pages without copying anything.
 *
 * <p>Completion: {@link #endio} first counts down {@code remaining} (raised by {@link #chain}); when
 * it reaches zero a chained child passes its first error to its parent and drops its reference,
 * and the walk continues with the parent in a loop, never by recursion, so stacks of any depth
 * complete without growing the Java stack (DESIGN.md section 4). The callback runs in atomic
 * context.
 *
 * <p>Life: bios come only from a {@link BioSet}; {@link #put} at reference count zero returns the
 * vec array (if this bio owns it) and the bio to their pools. A double put or a use after free
 * throws at once and is reported as misuse.
 */
public final class Bio {

    /** Bytes per sector; every sector number in blkstack counts these. */
    public static final int SECTOR_SIZE = 512;
    /** log2 of {@link #SECTOR_SIZE}. */
    public static final int SECTOR_SHIFT = 9;
    /** How many segments one vec array holds: 256 pages, 1 MiB. */
    public static final int VECS_MAX = 256;

    /** The completion marker of a chained child: its parent lives in {@code privateData}. */
    private static final BioEndIo CHAIN_ENDIO = b -> {
        throw new IllegalStateException("chain completion of " + b + " called directly");
    };

    private static final VarHandle STATUS;

    static {
        try {
            STATUS = MethodHandles.lookup().findVarHandle(Bio.class, "status", BioStatus.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    private final BioSet pool;
    private final Object frontPad;
    private final AtomicInteger remaining = new AtomicInteger();
    private final AtomicInteger refs = new AtomicInteger();

    private BlockDevice device;
    private BioOp op = BioOp.READ;
    private int flags;

    // The iterator (bvec_iter).
    private long iterSector;
    private int iterSize;
    private int iterIdx;
    private int iterBvecDone;

    private BioVec[] vecs;
    private int vecCount;
    private int vecMax;
    private boolean ownsVecs;

    private BioEndIo endIo;
    private Object privateData;
    /** The originator's offer to take this READ by reference (null: pages only); clones and splits inherit it. */
    private ReadReference readReference;
    /** Whether this bio's end-io retries it elsewhere on an error (see {@link #markRetriedOnError}). */
    private boolean retriedOnError;
    @SuppressWarnings("unused") // accessed through STATUS
    private volatile BioStatus status = BioStatus.OK;
    private volatile boolean chained;

    /** The intrusive link for {@link BioList}; a bio is on at most one list. */
    Bio next;

    private volatile BioState state = BioState.FREE;
    private volatile Object holder;

    // The device statistics this bio is counted in, from its first dispatch until endio.
    private DeviceStats accountingStats;
    private long accountingStartNanos;
    private BioOp accountingOp;
    private int accountingSectors;

    /** Creates a pooled bio; only a bio set's slab calls this. */
    Bio(BioSet pool, Object frontPad) {
        this.pool = pool;
        this.frontPad = frontPad;
        this.holder = pool;
    }

    // ---- life ------------------------------------------------------------------------------

    /** Readies a bio taken from the pool: one reference, no range, status OK. */
    void init(BioVec[] vecArray, int maxVecs, Task owner) {
        if (state != BioState.FREE) {
            throw new IllegalStateException("bio set " + pool.name() + " handed out " + this + " in state " + state);
        }
        device = null;
        op = BioOp.READ;
        flags = 0;
        iterSector = 0;
        iterSize = 0;
        iterIdx = 0;
        iterBvecDone = 0;
        vecs = vecArray;
        vecCount = 0;
        vecMax = maxVecs;
        ownsVecs = vecArray != null;
        endIo = null;
        privateData = null;
        readReference = null;
        retriedOnError = false;
        status = BioStatus.OK;
        chained = false;
        next = null;
        accountingStats = null;
        accountingOp = null;
        remaining.set(1);
        refs.set(1);
        setState(BioState.ALLOCATED, owner);
    }

    /** Takes another reference (the kernel's {@code bio_get}). */
    public Bio get() {
        checkLive("get");
        if (refs.getAndIncrement() <= 0) {
            throw misuse("get of " + this + " whose reference count was already zero");
        }
        return this;
    }

    /** Drops a reference; the last one frees the bio and its own vec array (the kernel's {@code bio_put}). */
    public void put() {
        checkLive("put");
        int left = refs.decrementAndGet();
        if (left < 0) {
            refs.incrementAndGet();
            throw misuse("put of " + this + " with no reference left (double put)");
        }
        if (left > 0) {
            return;
        }
        BioVec[] ownVecs = ownsVecs ? vecs : null;
        int ownCount = vecCount;
        vecs = null;
        vecCount = 0;
        ownsVecs = false;
        endIo = null;
        privateData = null;
        readReference = null;
        retriedOnError = false;
        device = null;
        next = null;
        setState(BioState.FREE, pool);
        pool.free(this, ownVecs, ownCount);
    }

    /** Throws (and reports misuse) if the bio is back in its pool. */
    private void checkLive(String what) {
        if (state == BioState.FREE) {
            throw misuse(what + " of a freed bio (use after free) from bio set " + pool.name());
        }
    }

    private IllegalStateException misuse(String what) {
        Kernel kernel = pool.kernel();
        kernel.reportMisuse(Task.currentOrNull(), what);
        return new IllegalStateException(what);
    }

    // ---- fields ----------------------------------------------------------------------------

    public BlockDevice device() {
        return device;
    }

    /** Points the bio at a device (a remap keeps the iterator; set the sector separately). */
    public Bio setDevice(BlockDevice value) {
        this.device = value;
        return this;
    }

    public BioOp op() {
        return op;
    }

    /** Sets the operation; a bio that already has pages keeps them only for data operations. */
    public Bio setOp(BioOp value) {
        if (value == null) {
            throw new IllegalArgumentException("bio op must not be null");
        }
        if (!value.hasData() && vecCount > 0 && ownsVecs) {
            throw new IllegalArgumentException("bio with " + vecCount + " page(s) cannot become " + value);
        }
        this.op = value;
        return this;
    }

    public int flags() {
        return flags;
    }

    /** Replaces the flags; unknown bits are a caller error. */
    public Bio setFlags(int value) {
        if ((value & ~BioFlags.ALL) != 0) {
            throw new IllegalArgumentException("unknown bio flags 0x" + Integer.toHexString(value));
        }
        this.flags = value;
        return this;
    }

    /** Whether every bit of {@code flag} is set. */
    public boolean hasFlag(int flag) {
        return (flags & flag) == flag;
    }

    /** Sets up a bio in one call: device, operation, flags, start sector. */
    public Bio init(BlockDevice dev, BioOp operation, int bioFlags, long sector) {
        setDevice(dev);
        setOp(operation);
        setFlags(bioFlags);
        setSector(sector);
        return this;
    }

    /** The first sector of the remaining range. */
    public long sector() {
        return iterSector;
    }

    /** Moves the range's start (a remap); the size stays. */
    public Bio setSector(long value) {
        if (value < 0) {
            throw new IllegalArgumentException("bio sector " + value + " is negative");
        }
        this.iterSector = value;
        return this;
    }

    /** Bytes left in the range. */
    public int sizeBytes() {
        return iterSize;
    }

    /** Sectors left in the range (the kernel's {@code bio_sectors}). */
    public int sectorCount() {
        return iterSize >>> SECTOR_SHIFT;
    }

    /** The sector just past the range. */
    public long endSector() {
        return iterSector + sectorCount();
    }

    /** Sets the range size of a bio without data (discard, write-zeroes). */
    public Bio setSizeBytes(int bytes) {
        if (op.hasData()) {
            throw new IllegalStateException("the size of a " + op + " bio comes from its pages; use addPage");
        }
        if (bytes < 0) {
            throw new IllegalArgumentException("bio size " + bytes + " is negative");
        }
        this.iterSize = bytes;
        return this;
    }

    /** The index of the current segment in the vec array. */
    public int iterIndex() {
        return iterIdx;
    }

    /** Bytes of the current segment already consumed. */
    public int iterBvecDone() {
        return iterBvecDone;
    }

    /** The vec array (shared with clones and splits); entries past {@link #vecCount} are unused. */
    public BioVec[] vecs() {
        return vecs;
    }

    /** Segments added to this bio's own vec array (0 for a clone). */
    public int vecCount() {
        return vecCount;
    }

    /** Whether this bio owns its vec array (false for clones and split fronts). */
    public boolean ownsVecs() {
        return ownsVecs;
    }

    public BioEndIo endIo() {
        return endIo;
    }

    /** Sets the completion callback; a chained bio's callback belongs to the chain. */
    public Bio setEndIo(BioEndIo value) {
        if (chainedToParent()) {
            throw new IllegalStateException("bio " + this + " is chained to a parent; its completion is the chain's");
        }
        this.endIo = value;
        return this;
    }

    public Object privateData() {
        return privateData;
    }

    /** Sets the owner's private data (the kernel's {@code bi_private}). */
    public Bio setPrivateData(Object value) {
        if (chainedToParent()) {
            throw new IllegalStateException("bio " + this + " is chained to a parent; its private data is the parent");
        }
        this.privateData = value;
        return this;
    }

    /**
     * The originator's offer to take this READ's data as file references instead of filled pages
     * (DESIGN.md section 4, "Reads by reference"); null if the bio wants pages. Clones and splits
     * inherit it, so remap targets pass it down with the remapped range and do nothing else.
     */
    public ReadReference readReference() {
        return readReference;
    }

    /** Marks a READ that owns its pages as accepting references through {@code reference} (the originator only). */
    public Bio offerReadReference(ReadReference reference) {
        if (op != BioOp.READ || !ownsVecs || iterIdx != 0 || iterBvecDone != 0) {
            throw new IllegalStateException("only an unstarted READ with its own pages can offer references: " + this);
        }
        this.readReference = reference;
        return this;
    }

    /**
     * Clears the mark: a target that must see or change the data (crypt, flakey's corruption, a
     * table that cannot pass references) calls this on the bio it received before it clones or
     * maps it. The whole originating READ then gets pages ({@link ReadReference#refuse}).
     */
    public void refuseReadReference() {
        ReadReference reference = readReference;
        if (reference != null) {
            readReference = null;
            reference.refuse();
        }
    }

    /**
     * Says that this bio's end-io callback recovers from an error by retrying the range elsewhere
     * (mirror's read retry on another leg), so an error on it alone does not abort a READ offered by
     * reference ({@link ReadReference}): the retry may still be held. The callback that gives up
     * completes the bio above with the error, and that aborts the offer. Not inherited by clones.
     */
    public Bio markRetriedOnError() {
        retriedOnError = true;
        return this;
    }

    /** Whether this bio completes into a parent via {@link #chain}. */
    public boolean chainedToParent() {
        return endIo == CHAIN_ENDIO;
    }

    /** The bio set this bio came from. */
    public BioSet pool() {
        return pool;
    }

    /**
     * The per-bio driver data created once for this bio object by its set's front-pad supplier
     * and reused for every I/O (the kernel's front pad); null if the set has none.
     */
    @SuppressWarnings("unchecked")
    public <T> T frontPad() {
        return (T) frontPad;
    }

    public BioStatus status() {
        return (BioStatus) STATUS.getVolatile(this);
    }

    /**
     * Records an outcome; the first error is kept, so a later error (or OK) does not hide it.
     */
    public void setStatus(BioStatus value) {
        if (value == null) {
            throw new IllegalArgumentException("bio status must not be null");
        }
        if (value != BioStatus.OK) {
            STATUS.compareAndSet(this, BioStatus.OK, value);
        }
    }

    /** Clears the status back to OK, for a bio being retried by its owner. */
    public void resetStatus() {
        STATUS.setVolatile(this, BioStatus.OK);
    }

    /** The completions still owed before the callback runs (1 + chained children outstanding). */
    public int remaining() {
        return remaining.get();
    }

    // ---- explanation state -----------------------------------------------------------------

    public BioState state() {
        return state;
    }

    /** Records where the bio is now; the block layer and drivers call it at each hand-over. */
    public void setState(BioState value, Object who) {
        this.holder = who;
        this.state = value;
    }

    /** A sentence for the checker: who holds this bio and where. */
    public String describeHolder() {
        Object who = holder;
        return switch (state) {
            case FREE -> "free in " + who;
            case ALLOCATED -> "allocated by task " + who;
            case PENDING -> "pending on task " + who + "'s submit list";
            case IN_FLIGHT -> "in flight at device " + (who instanceof BlockDevice d ? d.name() : who);
            case RESCUE -> "queued for the rescuer of " + who;
            case QUEUED -> "queued on " + who;
            case COMPLETING -> "completing on task " + who;
        };
    }

    // ---- building --------------------------------------------------------------------------

    /**
     * Appends a page segment (the kernel's {@code bio_add_page}); merges with the previous segment
     * when contiguous in the same page.
     *
     * @return false if the vec array is full (submit this bio and start another)
     */
    public boolean addPage(Page page, int length, int offset) {
        checkLive("addPage");
        if (!ownsVecs) {
            throw new IllegalStateException("addPage on " + this + " which has no vec array of its own (clone or nrVecs 0)");
        }
        if (!op.hasData()) {
            throw new IllegalStateException("addPage on a " + op + " bio, which carries no data");
        }
        if (length <= 0 || offset < 0 || offset + length > Page.SIZE) {
            throw new IllegalArgumentException("addPage: offset " + offset + " length " + length + " outside a page");
        }
        if ((long) iterSize + length > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("addPage: bio size " + iterSize + " + " + length + " overflows");
        }
        if (vecCount > 0) {
            BioVec last = vecs[vecCount - 1];
            if (last.page() == page && last.offset() + last.length() == offset) {
                last.extend(length);
                iterSize += length;
                return true;
            }
        }
        if (vecCount == vecMax) {
            return false;
        }
        vecs[vecCount++].set(page, offset, length);
        iterSize += length;
        return true;
    }

    // ---- iterator --------------------------------------------------------------------------

    /**
     * Moves the start of the range forward by {@code bytes} (the kernel's {@code bio_advance}):
     * the sector, the size and, for data bios, the position in the vec array.
     */
    public void advance(int bytes) {
        if (bytes < 0 || bytes > iterSize) {
            throw new IllegalArgumentException("advance " + this + " by " + bytes + " bytes, size " + iterSize);
        }
        iterSector += bytes >>> SECTOR_SHIFT;
        iterSize -= bytes;
        if (!op.hasData()) {
            return;
        }
        int left = iterBvecDone + bytes;
        int idx = iterIdx;
        while (left > 0 && left >= vecs[idx].length()) {
            left -= vecs[idx].length();
            idx++;
        }
        iterIdx = idx;
        iterBvecDone = left;
    }

    /**
     * Keeps only {@code sizeSectors} sectors starting {@code offsetSectors} into the range (the
     * kernel's {@code bio_trim}).
     */
    public void trim(long offsetSectors, long sizeSectors) {
        long sectors = sectorCount();
        if (offsetSectors < 0 || sizeSectors < 0 || offsetSectors + sizeSectors > sectors) {
            throw new IllegalArgumentException("trim " + this + " to offset " + offsetSectors + " size " + sizeSectors
                    + " of " + sectors + " sectors");
        }
        if (offsetSectors == 0 && sizeSectors == sectors) {
            return;
        }
        advance((int) (offsetSectors << SECTOR_SHIFT));
        iterSize = (int) (sizeSectors << SECTOR_SHIFT);
    }

    /** Copies another bio's range (device, op, flags, iterator, shared vecs) into this one. */
    void copyRangeFrom(Bio src) {
        device = src.device;
        op = src.op;
        flags = src.flags;
        iterSector = src.iterSector;
        iterSize = src.iterSize;
        iterIdx = src.iterIdx;
        iterBvecDone = src.iterBvecDone;
        vecs = src.vecs;
        vecCount = 0;
        vecMax = 0;
        ownsVecs = false;
        readReference = src.readReference;
        retriedOnError = false;
    }

    // ---- chain / split / clone -------------------------------------------------------------

    /** Raises the count of completions owed before the callback runs (the kernel's {@code bio_inc_remaining}). */
    public void incRemaining() {
        checkLive("incRemaining");
        chained = true;
        remaining.incrementAndGet();
    }

    /**
     * Makes {@code parent} complete only after {@code child} (the kernel's {@code bio_chain}): the
     * child's completion passes its first error to the parent and drops the child's reference.
     *
     * @throws IllegalArgumentException if the child already has a callback or private data
     */
    public static void chain(Bio child, Bio parent) {
        if (child == parent) {
            throw new IllegalArgumentException("bio " + child + " chained to itself");
        }
        child.checkLive("chain");
        parent.checkLive("chain");
        if (child.endIo != null || child.privateData != null) {
            throw new IllegalArgumentException("chain: child " + child + " already has a completion ("
                    + (child.endIo == CHAIN_ENDIO ? "chained" : "endIo") + ") or private data");
        }
        child.privateData = parent;
        child.endIo = CHAIN_ENDIO;
        parent.incRemaining();
    }

    /**
     * Splits off the first {@code sectors} sectors as a NEW bio sharing the pages, and advances
     * {@code bio} to the remainder (the kernel's {@code bio_split}).
     *
     * <p>Why the new bio is the front (seed 001): the caller handles the front now and resubmits
     * the remainder; if the remainder were the new bio and needed splitting again, the next split
     * would be allocated while this task still holds an unsubmitted bio of the same set, which can
     * exhaust the set's reserve (rule 1 of DESIGN.md section 1).
     *
     * @return the front, or null if {@code gfp} may not block and no bio was free
     */
    public static Bio split(Bio bio, int sectors, int gfp, BioSet bs) {
        bio.checkLive("split");
        if (sectors <= 0 || sectors >= bio.sectorCount()) {
            throw new IllegalArgumentException("split " + bio + " at " + sectors + " sectors: must be in 1.."
                    + (bio.sectorCount() - 1));
        }
        Bio front = clone(bio, gfp, bs);
        if (front == null) {
            return null;
        }
        front.iterSize = sectors << SECTOR_SHIFT;
        bio.advance(sectors << SECTOR_SHIFT);
        return front;
    }

    /**
     * A new bio from {@code bs} over the same range and the same pages (the kernel's
     * {@code bio_alloc_clone}); the source must outlive the clone.
     *
     * @return the clone, or null if {@code gfp} may not block and no bio was free
     */
    public static Bio clone(Bio src, int gfp, BioSet bs) {
        src.checkLive("clone");
        Bio clone = null;
        if (src.readReference != null && Gfp.mayBlock(gfp)) {
            // Parts of this READ may be held by reference, and a held part gives its bios back only
            // once the whole READ was sent: waiting here for a bio one of them holds would wait for
            // ever. So take pages before waiting; the held parts are read and complete now.
            clone = bs.alloc(gfp & ~Gfp.DIRECT_RECLAIM, 0);
            if (clone == null) {
                src.refuseReadReference();
            }
        }
        if (clone == null) {
            clone = bs.alloc(gfp, 0);
        }
        if (clone == null) {
            return null;
        }
        clone.copyRangeFrom(src);
        return clone;
    }

    // ---- completion ------------------------------------------------------------------------

    /**
     * Completes the bio (the kernel's {@code bio_endio}). Walks up chains in a loop: each child
     * whose count reaches zero passes its first error to its parent and is put; the first bio with
     * its own callback runs it in atomic context.
     */
    public void endio() {
        Bio bio = this;
        while (true) {
            bio.checkLive("endio");
            ReadReference reference = bio.readReference;
            if (reference != null && bio.status() != BioStatus.OK && !bio.retriedOnError) {
                reference.abort(); // the READ fails: parts held elsewhere must not wait for a send (no-op once sent)
            }
            if (!bio.remainingDone()) {
                return;
            }
            bio.endAccounting();
            BioEndIo callback = bio.endIo;
            if (callback == CHAIN_ENDIO) {
                Bio parent = (Bio) bio.privateData;
                BioStatus childStatus = bio.status();
                if (childStatus != BioStatus.OK) {
                    parent.setStatus(childStatus);
                }
                bio.put();
                bio = parent;
                continue;
            }
            Task self = Task.currentOrNull();
            bio.setState(BioState.COMPLETING, self);
            if (callback != null) {
                if (self != null) {
                    self.enterAtomic();
                }
                try {
                    callback.endIo(bio);
                } finally {
                    if (self != null) {
                        self.exitAtomic();
                    }
                }
            }
            return;
        }
    }

    /**
     * Starts counting this bio in {@code stats} (the submit loop does, on the bio's first
     * dispatch): its operation and size now, its latency from {@code startNanos} to {@link #endio}.
     */
    public void startAccounting(DeviceStats stats, long startNanos) {
        if (accountingStats != null) {
            throw new IllegalStateException(this + " is already counted in the statistics of " + accountingStats.name());
        }
        accountingStats = stats;
        accountingStartNanos = startNanos;
        accountingOp = op;
        accountingSectors = iterSize >>> SECTOR_SHIFT;
    }

    /** The statistics this bio is counted in until it completes, or null. */
    public DeviceStats accountingStats() {
        return accountingStats;
    }

    /** Ends the accounting started by {@link #startAccounting}, once: no lock, no allocation. */
    private void endAccounting() {
        DeviceStats stats = accountingStats;
        if (stats == null) {
            return;
        }
        accountingStats = null;
        stats.done(accountingOp, accountingSectors, status(), System.nanoTime() - accountingStartNanos);
    }

    /** Counts one completion down; true when none is owed any more (the kernel's {@code bio_remaining_done}). */
    private boolean remainingDone() {
        if (!chained) {
            return true;
        }
        int left = remaining.decrementAndGet();
        if (left < 0) {
            remaining.incrementAndGet();
            throw misuse("endio of " + this + " more often than owed (remaining below zero)");
        }
        if (left == 0) {
            chained = false;
            remaining.set(1);
            return true;
        }
        return false;
    }

    // ---- data copies -----------------------------------------------------------------------

    /** One segment's copy between a page and another memory: a non-capturing function, so walks allocate nothing. */
    private interface SegmentCopy {
        void copy(Page page, int pageOffset, Object other, int otherPosition, int length);
    }

    private static final SegmentCopy TO_ARRAY = (p, off, o, pos, n) -> p.buffer().get(off, (byte[]) o, pos, n);
    private static final SegmentCopy FROM_ARRAY = (p, off, o, pos, n) -> p.buffer().put(off, (byte[]) o, pos, n);
    private static final SegmentCopy ZERO = (p, off, o, pos, n) -> p.zero(off, n);

    /** Walks the range's segments from the iterator, applying {@code op} with a running position in {@code other}. */
    private int walkSegments(String what, SegmentCopy op, Object other, int otherPosition) {
        requireData(what);
        int idx = iterIdx;
        int done = iterBvecDone;
        int left = iterSize;
        int pos = otherPosition;
        while (left > 0) {
            BioVec v = vecs[idx];
            int n = Math.min(v.length() - done, left);
            op.copy(v.page(), v.offset() + done, other, pos, n);
            pos += n;
            left -= n;
            idx++;
            done = 0;
        }
        return iterSize;
    }

    /** Copies the range's data into {@code dst} at {@code offset}; returns the bytes copied. */
    public int copyTo(byte[] dst, int offset) {
        if (offset < 0 || offset + (long) iterSize > dst.length) {
            throw new IllegalArgumentException("copyTo: " + iterSize + " bytes at " + offset + " into " + dst.length);
        }
        return walkSegments("copyTo", TO_ARRAY, dst, offset);
    }

    /** Copies {@link #sizeBytes} bytes from {@code src} at {@code offset} into the range's pages. */
    public int copyFrom(byte[] src, int offset) {
        if (offset < 0 || offset + (long) iterSize > src.length) {
            throw new IllegalArgumentException("copyFrom: " + iterSize + " bytes at " + offset + " from " + src.length);
        }
        return walkSegments("copyFrom", FROM_ARRAY, src, offset);
    }

    /** Zeroes the range's pages (a read of a hole). */
    public void zeroFill() {
        walkSegments("zeroFill", ZERO, null, 0);
    }

    private void requireData(String what) {
        checkLive(what);
        if (!op.hasData() || (iterSize > 0 && vecs == null)) {
            throw new IllegalStateException(what + " on " + this + ", which carries no data pages");
        }
    }

    @Override
    public String toString() {
        return "bio[" + op + " " + (device == null ? "-" : device.name()) + " " + iterSector + "+"
                + (iterSize >>> SECTOR_SHIFT) + (iterSize % SECTOR_SIZE != 0 ? "(" + iterSize + "B)" : "")
                + (flags != 0 ? " " + BioFlags.describe(flags) : "") + " " + state + "]";
    }
}
