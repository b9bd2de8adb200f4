package io.blkstack.bufio;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Mutex;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.mem.Reservation;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import io.blkstack.mem.Shrinker;
import io.blkstack.wq.DelayedWork;
import io.blkstack.wq.Work;
import io.blkstack.wq.Workqueue;
import java.util.HashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A cache of fixed-size metadata blocks of one device (the kernel's {@code dm-bufio} client).
 *
 * <p>Buffers live in a map by block number and on one of two LRU lists: clean (may be evicted at
 * once when nobody holds it) and dirty (must be written first). A small reserve of buffers,
 * allocated up front, lets metadata make progress when the arena is short: a buffer is taken from
 * the arena without waiting, else from the reserve, else by evicting the oldest clean buffer,
 * else by writing dirty buffers and waiting, and only then by a blocking {@code NOIO} allocation
 * with the cache's mutex dropped.
 *
 * <p>The cache is a {@link Shrinker}. Rule 3 of DESIGN.md section 1 (reclaim never waits for I/O)
 * under the fixed policy: {@code scan} only {@link Mutex#tryLock tries} the mutex, frees clean
 * unreferenced buffers, and queues the dirty rest on a {@code MEM_RECLAIM} workqueue that writes
 * them back and frees them. Under {@code bufio-shrinker=legacy} (the design before seed
 * {@code 003_*}) {@code scan} takes the mutex, writes dirty buffers and waits for the I/O inline,
 * so reclaim stalls on the disk.
 *
 * <p>Writes are asynchronous with at most {@code writesInFlightMax} in flight. Completion callbacks
 * only flip a buffer's I/O flags, count down and wake {@code ioWait}; they never take the mutex
 * (rule 2). List placement is fixed up lazily under the mutex.
 *
 * <p><b>I/O errors.</b> A failed read throws {@link MetadataIoException} to every holder; when the
 * last one releases the buffer it leaves the cache for good ({@code forget}: map, list and unheld
 * count together), and a failed prefetch nobody holds is read again by the next {@code read}. A
 * failed write leaves the buffer dirty (it is written again) and is reported by the next
 * {@link #writeDirtyBuffersWait}, even if that rewrite succeeded (dm-bufio's
 * {@code async_write_error}), so the owner (a thin pool) can stop trusting the device.
 *
 * <p>Callers must not read or wait inside the submit loop (a metadata read issued there would be
 * queued behind the caller): targets do metadata work on workers.
 */
public final class BufferCache implements Shrinker, AutoCloseable {

    /** Tunables of one cache. */
    public record Config(int reserveBuffers, int writesInFlightMax, long maxAgeNanos, long ageCheckNanos) {
        /** Kernel-like defaults: reserve of 4, 16 writes in flight, evict clean buffers idle 300 s, checked every 30 s. */
        public static Config defaults() {
            return new Config(4, 16, 300_000_000_000L, 30_000_000_000L);
        }

        /** The same with {@code buffers} in reserve. */
        public Config withReserve(int buffers) {
            return new Config(buffers, writesInFlightMax, maxAgeNanos, ageCheckNanos);
        }

        /** The same with the periodic eviction check every {@code checkNanos} (0 disables it). */
        public Config withAge(long maxAge, long checkNanos) {
            return new Config(reserveBuffers, writesInFlightMax, maxAge, checkNanos);
        }
    }

    private static final int LIST_NONE = 0;
    private static final int LIST_CLEAN = 1;
    private static final int LIST_DIRTY = 2;

    private final Kernel kernel;
    private final BlockDevice device;
    private final String name;
    private final int blockSize;
    private final int pagesPerBlock;
    private final int sectorsPerBlock;
    private final long blockCount;
    private final Config config;
    private final boolean legacyShrinker;

    private final Mutex lock;
    private final WaitQueue ioWait;
    private final BioSet bioSet;
    private final Workqueue workqueue;
    private final Work shrinkWork;
    private final DelayedWork evictWork;
    private final HashMap<Long, Buffer> map = new HashMap<>();
    private final Buffer[] reserve;
    /** The reserve's line in the arena's ledger. */
    private final Reservation ledgerLine;
    private int reserveCount;

    // LRU lists: head is the most recently used, tail the oldest. Guarded by the mutex.
    private Buffer cleanHead;
    private Buffer cleanTail;
    private Buffer dirtyHead;
    private Buffer dirtyTail;
    private int cleanCount;
    private int dirtyCount;

    /**
     * The block of a write that failed since the last {@link #writeDirtyBuffersWait}, or -1 (the
     * kernel's {@code async_write_error}): a write-back started by the shrinker or by eviction may
     * fail and be retried successfully later, but the owner must still hear of it.
     */
    private final AtomicLong asyncWriteError = new AtomicLong(-1);
    private final AtomicInteger writesInFlight = new AtomicInteger();
    private final AtomicInteger readsInFlight = new AtomicInteger();
    private volatile int unheldCached;
    private final AtomicLong shrinkTarget = new AtomicLong();
    private volatile boolean closing;

    private final AtomicLong reads;
    private final AtomicLong writes;
    private final AtomicLong writeErrors;
    private final AtomicLong shrinkerFreed;
    private final AtomicLong shrinkerKicks;
    private final AtomicLong ageEvicted;

    private final BioEndIo readEndIo = this::readDone;
    private final BioEndIo writeEndIo = this::writeDone;

    /**
     * Creates the cache, its bio set, its {@code MEM_RECLAIM} workqueue and reserve, and registers
     * its shrinker.
     *
     * @param blockSize bytes per block, a positive multiple of 4096
     */
    public BufferCache(BlockDevice device, int blockSize, Config config) {
        if (blockSize <= 0 || blockSize % Page.SIZE != 0) {
            throw new IllegalArgumentException("bufio: block size " + blockSize + " is not a positive multiple of " + Page.SIZE);
        }
        if (config.reserveBuffers() < 1 || config.writesInFlightMax() < 1) {
            throw new IllegalArgumentException("bufio: reserve " + config.reserveBuffers() + " and writes in flight "
                    + config.writesInFlightMax() + " must be at least 1");
        }
        this.kernel = device.kernel();
        this.device = device;
        this.name = "bufio-" + device.name();
        this.blockSize = blockSize;
        this.pagesPerBlock = blockSize / Page.SIZE;
        this.sectorsPerBlock = blockSize >>> Bio.SECTOR_SHIFT;
        this.blockCount = device.capacityBytes() / blockSize;
        this.config = config;
        this.legacyShrinker = kernel.policies().isLegacy(PolicySwitch.BUFIO_SHRINKER);
        this.lock = new Mutex(name);
        this.ioWait = new WaitQueue(name + " io");
        this.reads = kernel.counters().get("bufio.reads");
        this.writes = kernel.counters().get("bufio.writes");
        this.writeErrors = kernel.counters().get("bufio.write-errors");
        this.shrinkerFreed = kernel.counters().get("bufio.shrinker-freed");
        this.shrinkerKicks = kernel.counters().get("bufio.shrinker-work-kicks");
        this.ageEvicted = kernel.counters().get("bufio.age-evicted");
        this.bioSet = new BioSet(kernel, name, 4, 4, null, false);
        this.reserve = new Buffer[config.reserveBuffers()];
        for (int i = 0; i < reserve.length; i++) {
            Buffer b = allocPages(Gfp.KERNEL);
            if (b == null) {
                freeReserve();
                bioSet.close();
                throw new IllegalStateException(name + ": no memory for reserve buffer " + i + " of " + reserve.length);
            }
            reserve[reserveCount++] = b;
        }
        this.ledgerLine = kernel.pages().record("bufio " + name + " reserve", reserve.length * pagesPerBlock);
        this.workqueue = Workqueue.create(kernel, name, Workqueue.MEM_RECLAIM, 1);
        this.shrinkWork = new Work(name + " shrink", this::runShrinkWork);
        this.evictWork = new DelayedWork(name + " evict", this::runEvictWork);
        kernel.pages().registerShrinker(this);
        if (config.ageCheckNanos() > 0) {
            workqueue.queueDelayed(evictWork, config.ageCheckNanos());
        }
    }

    /** A cache with {@link Config#defaults()}. */
    public BufferCache(BlockDevice device, int blockSize) {
        this(device, blockSize, Config.defaults().withReserve(device.kernel().reserves().bufioBuffers()));
    }

    /** The device the blocks live on. */
    public BlockDevice device() {
        return device;
    }

    /** Bytes per block. */
    public int blockSize() {
        return blockSize;
    }

    /** How many whole blocks the device holds. */
    public long blockCount() {
        return blockCount;
    }

    // ---- the public operations ----------------------------------------------------------------

    /** Returns the cached buffer of {@code block}, held, or null if it is not cached (never reads). */
    public Buffer get(long block) {
        checkBlock(block);
        Buffer b;
        lock.lock();
        try {
            b = map.get(block);
            if (b == null) {
                return null;
            }
            hold(b);
        } finally {
            lock.unlock();
        }
        return waitRead(b);
    }

    /**
     * Returns the buffer of {@code block}, held, reading it from the device if it is not cached.
     *
     * @throws MetadataIoException if the read fails
     */
    public Buffer read(long block) {
        return waitRead(holdOrInsert(block, true));
    }

    /**
     * Returns the held buffer of {@code block}: the cached one, or a new one inserted (and, if
     * {@code read}, with its read submitted). allocBuffer may drop the lock, so the map is checked
     * again before inserting.
     */
    private Buffer holdOrInsert(long block, boolean read) {
        checkBlock(block);
        lock.lock();
        try {
            Buffer b = map.get(block);
            if (b != null && isFailedRead(b)) {
                forget(b); // a prefetch that failed and nobody saw: read again
                b = null;
            }
            if (b != null) {
                hold(b);
                return b;
            }
            b = allocBuffer(true);
            Buffer raced = map.get(block);
            if (raced != null) {
                freeBuffer(b);
                hold(raced);
                return raced;
            }
            insert(b, block, 1);
            if (read) {
                submitRead(b);
            }
            return b;
        } finally {
            lock.unlock();
        }
    }

    /** Returns a zeroed, held buffer for {@code block} without reading the device; the caller marks it dirty. */
    public Buffer newBuffer(long block) {
        Buffer fresh = holdOrInsert(block, false);
        ioWait.waitEvent(() -> !fresh.reading && !fresh.writing, this);
        fresh.ioError = false;
        fresh.zero();
        return fresh;
    }

    /** Gives back a buffer from {@link #get}, {@link #read} or {@link #newBuffer}. */
    public void release(Buffer b) {
        checkOwn(b);
        lock.lock();
        try {
            if (b.holdCount <= 0) {
                throw new IllegalStateException(name + ": release of " + b + " that is not held");
            }
            b.holdCount--;
            b.lastAccessNanos = kernel.scheduler().nanoTime();
            if (b.holdCount == 0) {
                unheldCached++;
                if (isFailedRead(b)) {
                    forget(b); // a failed read: do not keep garbage cached
                }
            }
        } finally {
            lock.unlock();
        }
    }

    /** Marks a held buffer as changed: it moves to the dirty list and is written back later. */
    public void markDirty(Buffer b) {
        checkOwn(b);
        lock.lock();
        try {
            if (b.holdCount <= 0) {
                throw new IllegalStateException(name + ": markDirty of " + b + " that is not held");
            }
            b.dirty = true;
            if (b.list != LIST_DIRTY) {
                unlink(b);
                pushHead(b, LIST_DIRTY);
            }
        } finally {
            lock.unlock();
        }
    }

    /** Starts writes of every dirty buffer, at most {@code writesInFlightMax} in flight; does not wait for the last ones. */
    public void writeDirtyBuffers() {
        lock.lock();
        try {
            writeDirtyLocked(false);
        } finally {
            lock.unlock();
        }
    }

    /**
     * Writes every dirty buffer and waits for the writes (the kernel's
     * {@code dm_bufio_write_dirty_buffers}).
     *
     * @throws MetadataIoException if a write failed (the buffer stays dirty), now or in a
     *     write-back since the last call
     */
    public void writeDirtyBuffersWait() {
        lock.lock();
        try {
            writeDirtyLocked(false);
            ioWait.waitEvent(() -> writesInFlight.get() == 0, this);
            long failed = reconcileDirty();
            long earlier = asyncWriteError.getAndSet(-1);
            if (failed >= 0) {
                throw new MetadataIoException(name + ": write of block " + failed + " failed");
            }
            if (earlier >= 0) {
                throw new MetadataIoException(name + ": an earlier write-back of block " + earlier + " failed");
            }
        } finally {
            lock.unlock();
        }
    }

    /** Sends a cache flush to the device and waits (used after the writes of a commit). */
    public void flushDevice(int bioFlags) {
        Bio bio = bioSet.alloc(Gfp.NOIO, 0);
        try {
            bio.init(device, BioOp.FLUSH, bioFlags, 0);
            BioStatus status = Submit.submitAndWaitStatus(bio);
            if (status.isError()) {
                throw new MetadataIoException(name + ": flush failed: " + status);
            }
        } finally {
            bio.put();
        }
    }

    /**
     * Starts reads of up to {@code count} blocks from {@code block} that are not cached, without
     * waiting and without blocking for memory: it stops at the first buffer it cannot get at once.
     */
    public void prefetch(long block, int count) {
        checkBlock(block);
        lock.lock();
        try {
            for (long i = block; i < block + count && i < blockCount; i++) {
                if (map.containsKey(i)) {
                    continue;
                }
                Buffer b = allocBuffer(false);
                if (b == null) {
                    return;
                }
                insert(b, i, 0);
                submitRead(b);
            }
        } finally {
            lock.unlock();
        }
    }

    /** How many buffers are cached (clean plus dirty lists). */
    public int cachedCount() {
        return cleanCount + dirtyCount;
    }

    /** How many cached buffers are dirty or being written. */
    public int dirtyCount() {
        return dirtyCount;
    }

    /** Whether {@code block} is cached. */
    public boolean isCached(long block) {
        lock.lock();
        try {
            return map.containsKey(block);
        } finally {
            lock.unlock();
        }
    }

    /** The bio set the cache's reads and write-backs come from (its reserve shows in reports). */
    public BioSet bioSet() {
        return bioSet;
    }

    /** The cache's mutex; for tests that hold it to prove the shrinker does not wait for it. */
    public Mutex mutex() {
        return lock;
    }

    /** The MEM_RECLAIM workqueue the shrinker kicks. */
    public Workqueue workqueue() {
        return workqueue;
    }

    // ---- Shrinker ---------------------------------------------------------------------------------

    @Override
    public String name() {
        return name;
    }

    @Override
    public long count() {
        return Math.max(0, unheldCached);
    }

    /**
     * Frees up to {@code toScan} buffers. Fixed policy: never blocks (try-lock, clean buffers only,
     * the dirty rest goes to the workqueue). Legacy: may block on the mutex and on write-back.
     */
    @Override
    public long scan(long toScan, int gfp) {
        if (closing) {
            return 0;
        }
        if (legacyShrinker) {
            return scanLegacy(toScan, gfp);
        }
        if (!lock.tryLock()) {
            return 0;
        }
        long freed;
        boolean kick;
        try {
            freed = evictClean(toScan, Long.MAX_VALUE);
            kick = freed < toScan && dirtyCount > 0;
        } finally {
            lock.unlock();
        }
        if (kick) {
            shrinkTarget.addAndGet(Math.min(toScan - freed, Integer.MAX_VALUE));
            shrinkerKicks.incrementAndGet();
            workqueue.queue(shrinkWork);
        }
        shrinkerFreed.addAndGet(freed);
        return freed;
    }

    /** The seed-003 shrinker: takes the mutex (if the allocation may do I/O), writes dirty buffers and waits inline. */
    private long scanLegacy(long toScan, int gfp) {
        if (Gfp.mayIo(gfp)) {
            lock.lock();
        } else if (!lock.tryLock()) {
            return 0;
        }
        long freed;
        try {
            freed = evictClean(toScan, Long.MAX_VALUE);
            if (freed < toScan && dirtyCount > 0) {
                writeDirtyLocked(true);
                ioWait.waitEvent(() -> writesInFlight.get() == 0, this);
                reconcileDirty();
                freed += evictClean(toScan - freed, Long.MAX_VALUE);
            }
        } finally {
            lock.unlock();
        }
        shrinkerFreed.addAndGet(freed);
        return freed;
    }

    /** The workqueue side of the shrinker: writes unheld dirty buffers back, waits, frees what was asked. */
    private void runShrinkWork() {
        long target = shrinkTarget.getAndSet(0);
        if (closing || target <= 0) {
            return;
        }
        lock.lock();
        try {
            writeDirtyLocked(true);
            ioWait.waitEvent(() -> writesInFlight.get() == 0, this);
            reconcileDirty();
            shrinkerFreed.addAndGet(evictClean(target, Long.MAX_VALUE));
        } finally {
            lock.unlock();
        }
    }

    /** Periodic eviction of clean buffers idle longer than maxAge; skips a round rather than block on the mutex. */
    private void runEvictWork() {
        if (closing) {
            return;
        }
        if (lock.tryLock()) {
            try {
                long cutoff = kernel.scheduler().nanoTime() - config.maxAgeNanos();
                ageEvicted.addAndGet(evictClean(Long.MAX_VALUE, cutoff));
            } finally {
                lock.unlock();
            }
        }
        if (!closing) {
            workqueue.queueDelayed(evictWork, config.ageCheckNanos());
        }
    }

    // ---- internals (mutex held unless said otherwise) -----------------------------------------

    /**
     * Frees clean, unheld, idle buffers from the oldest end, up to {@code max}, only those last used
     * before {@code cutoffNanos}; never blocks. Returns how many.
     */
    private long evictClean(long max, long cutoffNanos) {
        long freed = 0;
        Buffer b = cleanTail;
        while (b != null && freed < max) {
            Buffer prev = b.prev;
            if (evictable(b) && b.lastAccessNanos <= cutoffNanos) {
                forget(b);
                freed++;
            }
            b = prev;
        }
        return freed;
    }

    private static boolean evictable(Buffer b) {
        return b.holdCount == 0 && !b.dirty && !b.reading && !b.writing;
    }

    /** An unheld buffer whose read failed: its pages hold garbage and it must not stay cached. */
    private static boolean isFailedRead(Buffer b) {
        return evictable(b) && b.ioError;
    }

    /**
     * Removes an unheld, idle buffer from the lists and the map and frees its memory. The only way
     * a cached buffer leaves the cache for good: the map entry, the lists and the unheld count go
     * together, so a freed buffer (which may sit in the reserve or be reused for another block) can
     * never be found again by its old block number.
     */
    private void forget(Buffer b) {
        if (!evictable(b)) {
            throw new IllegalStateException(name + ": forgetting " + b + ", which is held, dirty or under I/O");
        }
        if (map.get(b.block) != b) {
            throw new IllegalStateException(name + ": forgetting " + b + ", which is not the map's buffer of its block");
        }
        unlink(b);
        map.remove(b.block);
        unheldCached--;
        freeBuffer(b);
    }

    /**
     * Submits writes of dirty buffers (only unheld ones if {@code unheldOnly}), waiting for a slot
     * when {@code writesInFlightMax} are in flight.
     */
    private void writeDirtyLocked(boolean unheldOnly) {
        Buffer b = dirtyTail;
        while (b != null) {
            Buffer prev = b.prev;
            if (b.dirty && !b.writing && (!unheldOnly || b.holdCount == 0)) {
                int max = config.writesInFlightMax();
                ioWait.waitEvent(() -> writesInFlight.get() < max, this);
                submitWrite(b);
            }
            b = prev;
        }
    }

    /** Moves written buffers to the clean list; returns a failed block number, or -1. */
    private long reconcileDirty() {
        long failed = -1;
        Buffer b = dirtyTail;
        while (b != null) {
            Buffer prev = b.prev;
            if (!b.writing && b.ioError) {
                failed = b.block;
            }
            if (!b.dirty && !b.writing) {
                unlink(b);
                pushHead(b, LIST_CLEAN);
            }
            b = prev;
        }
        return failed;
    }

    /**
     * Finds memory for one buffer: the arena without waiting, the reserve, the oldest clean buffer,
     * write-back of dirty buffers; and if {@code mayBlock}, a blocking NOIO allocation with the mutex
     * dropped (the caller rechecks the map). Returns null only when {@code mayBlock} is false.
     */
    private Buffer allocBuffer(boolean mayBlock) {
        while (true) {
            Buffer b = allocPages(Gfp.NOWAIT);
            if (b != null) {
                return b;
            }
            if (reserveCount > 0 && mayBlock) {
                Buffer r = reserve[--reserveCount];
                reserve[reserveCount] = null;
                return r;
            }
            b = takeOldestClean();
            if (b != null) {
                return b;
            }
            if (!mayBlock) {
                return null;
            }
            if (hasUnheldDirty()) {
                writeDirtyLocked(true);
                ioWait.waitEvent(() -> writesInFlight.get() == 0, this);
                reconcileDirty();
                continue;
            }
            lock.unlock();
            try {
                b = allocPages(Gfp.NOIO);
            } finally {
                lock.lock();
            }
            if (b != null) {
                return b;
            }
            throw new IllegalStateException(name + ": blocking NOIO allocation of a " + blockSize + "-byte buffer failed");
        }
    }

    private boolean hasUnheldDirty() {
        for (Buffer b = dirtyHead; b != null; b = b.next) {
            if (b.holdCount == 0 && (b.dirty || b.writing)) {
                return true;
            }
        }
        return false;
    }

    /** Unlinks the oldest evictable clean buffer for reuse, or returns null. */
    private Buffer takeOldestClean() {
        for (Buffer b = cleanTail; b != null; b = b.prev) {
            if (evictable(b)) {
                unlink(b);
                map.remove(b.block);
                unheldCached--;
                b.block = -1;
                b.ioError = false;
                return b;
            }
        }
        return null;
    }

    /** Allocates the pages of one buffer with {@code gfp}; all or nothing. */
    private Buffer allocPages(int gfp) {
        Page[] pages = new Page[pagesPerBlock];
        for (int i = 0; i < pagesPerBlock; i++) {
            pages[i] = kernel.pages().alloc(gfp);
            if (pages[i] == null) {
                for (int j = 0; j < i; j++) {
                    kernel.pages().free(pages[j]);
                }
                return null;
            }
        }
        return new Buffer(this, pages);
    }

    /** Returns an unlinked buffer's memory: to the reserve while it is short, else to the arena. */
    private void freeBuffer(Buffer b) {
        b.block = -1;
        b.dirty = false;
        b.ioError = false;
        b.holdCount = 0;
        if (reserveCount < reserve.length) {
            reserve[reserveCount++] = b;
            return;
        }
        freePagesOf(b);
    }

    private void freePagesOf(Buffer b) {
        for (Page p : b.pages) {
            kernel.pages().free(p);
        }
    }

    private void freeReserve() {
        while (reserveCount > 0) {
            Buffer b = reserve[--reserveCount];
            reserve[reserveCount] = null;
            freePagesOf(b);
        }
    }

    private void insert(Buffer b, long block, int holds) {
        b.block = block;
        b.holdCount = holds;
        b.dirty = false;
        b.ioError = false;
        b.validated = false;
        b.lastAccessNanos = kernel.scheduler().nanoTime();
        map.put(block, b);
        pushHead(b, LIST_CLEAN);
        if (holds == 0) {
            unheldCached++;
        }
    }

    private void hold(Buffer b) {
        if (b.holdCount == 0) {
            unheldCached--;
        }
        b.holdCount++;
        b.lastAccessNanos = kernel.scheduler().nanoTime();
        if (b.list == LIST_CLEAN && cleanHead != b) {
            unlink(b);
            pushHead(b, LIST_CLEAN);
        }
    }

    /** Waits (mutex not held) until a held buffer's read finished; throws and releases on error. */
    private Buffer waitRead(Buffer b) {
        if (b.reading) {
            ioWait.waitEvent(() -> !b.reading, this);
        }
        if (b.ioError && !b.dirty) {
            long block = b.block;
            release(b);
            throw new MetadataIoException(name + ": read of block " + block + " failed");
        }
        return b;
    }

    private void submitRead(Buffer b) {
        b.reading = true;
        readsInFlight.incrementAndGet();
        reads.incrementAndGet();
        submitBlockBio(b, BioOp.READ, readEndIo);
    }

    private void submitWrite(Buffer b) {
        b.dirty = false;
        b.writing = true;
        b.ioError = false;
        writesInFlight.incrementAndGet();
        writes.incrementAndGet();
        submitBlockBio(b, BioOp.WRITE, writeEndIo);
    }

    /** One bio over the buffer's pages for its whole block, completing to {@code endIo}. */
    private void submitBlockBio(Buffer b, BioOp op, BioEndIo endIo) {
        Bio bio = bioSet.alloc(Gfp.NOIO, pagesPerBlock);
        bio.init(device, op, 0, b.block * sectorsPerBlock);
        addPages(bio, b);
        bio.setEndIo(endIo);
        bio.setPrivateData(b);
        Submit.submitBio(bio);
    }

    private void addPages(Bio bio, Buffer b) {
        for (Page p : b.pages) {
            if (!bio.addPage(p, Page.SIZE, 0)) {
                throw new IllegalStateException(name + ": bio for " + b + " refused page " + p);
            }
        }
    }

    /** Read completion, atomic context: flag, count, wake. */
    private void readDone(Bio bio) {
        Buffer b = (Buffer) bio.privateData();
        if (bio.status().isError()) {
            b.ioError = true;
        }
        bio.put();
        b.reading = false;
        readsInFlight.decrementAndGet();
        ioWait.wakeAll();
    }

    /** Write completion, atomic context: a failed buffer becomes dirty again; count, wake. */
    private void writeDone(Bio bio) {
        Buffer b = (Buffer) bio.privateData();
        if (bio.status().isError()) {
            b.ioError = true;
            b.dirty = true;
            asyncWriteError.set(b.block);
            writeErrors.incrementAndGet();
        }
        bio.put();
        b.writing = false;
        writesInFlight.decrementAndGet();
        ioWait.wakeAll();
    }

    // ---- LRU lists --------------------------------------------------------------------------------

    private void pushHead(Buffer b, int list) {
        if (b.list != LIST_NONE) {
            throw new IllegalStateException(name + ": " + b + " is already on list " + b.list);
        }
        b.list = list;
        b.prev = null;
        if (list == LIST_CLEAN) {
            b.next = cleanHead;
            if (cleanHead != null) {
                cleanHead.prev = b;
            } else {
                cleanTail = b;
            }
            cleanHead = b;
            cleanCount++;
        } else {
            b.next = dirtyHead;
            if (dirtyHead != null) {
                dirtyHead.prev = b;
            } else {
                dirtyTail = b;
            }
            dirtyHead = b;
            dirtyCount++;
        }
    }

    private void unlink(Buffer b) {
        if (b.list == LIST_NONE) {
            return;
        }
        boolean clean = b.list == LIST_CLEAN;
        if (b.prev != null) {
            b.prev.next = b.next;
        } else if (clean) {
            cleanHead = b.next;
        } else {
            dirtyHead = b.next;
        }
        if (b.next != null) {
            b.next.prev = b.prev;
        } else if (clean) {
            cleanTail = b.prev;
        } else {
            dirtyTail = b.prev;
        }
        if (clean) {
            cleanCount--;
        } else {
            dirtyCount--;
        }
        b.prev = null;
        b.next = null;
        b.list = LIST_NONE;
    }

    private void checkBlock(long block) {
        if (block < 0 || block >= blockCount) {
            throw new IllegalArgumentException(name + ": block " + block + " outside 0.." + (blockCount - 1));
        }
    }

    private void checkOwn(Buffer b) {
        if (b.cache != this) {
            throw new IllegalArgumentException(name + ": " + b + " belongs to another cache");
        }
    }

    /** Counters and list sizes, for explanations. */
    public String describeState() {
        return name + ": " + cleanCount + " clean, " + dirtyCount + " dirty, " + reserveCount + "/" + reserve.length
                + " reserve, " + writesInFlight.get() + " writes and " + readsInFlight.get() + " reads in flight";
    }

    /**
     * Writes dirty buffers back, frees every buffer and the reserve, and tears down the workqueue,
     * bio set and shrinker. Every buffer must have been released.
     */
    @Override
    public void close() {
        if (closing) {
            return;
        }
        Task.current(); // must run on a kernel task
        kernel.pages().unregisterShrinker(this);
        ledgerLine.close();
        closing = true;
        workqueue.flush();
        evictWork.cancelTimer();
        evictWork.cancel();
        shrinkWork.cancel();
        workqueue.close();
        lock.lock();
        try {
            writeDirtyLocked(false);
            ioWait.waitEvent(() -> writesInFlight.get() == 0 && readsInFlight.get() == 0, this);
            reconcileDirty();
            for (Buffer b : map.values()) {
                if (b.holdCount != 0) {
                    throw new IllegalStateException(name + ": closed while " + b + " is held");
                }
            }
            for (Buffer b : map.values()) {
                unlink(b);
                freePagesOf(b);
            }
            map.clear();
            freeReserve();
        } finally {
            lock.unlock();
        }
        bioSet.close();
    }

    @Override
    public String toString() {
        return name;
    }
}
