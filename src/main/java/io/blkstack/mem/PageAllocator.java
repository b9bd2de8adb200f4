package io.blkstack.mem;

import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Mutex;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.WaitQueue;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The page arena of one kernel: a fixed region of direct memory cut into 4 KiB pages, the whole
 * memory budget of the data path.
 *
 * <p>Allocation follows the kernel's shape. Above the {@code min} watermark a page is taken at
 * once, and dropping below {@code low} wakes the background reclaim task, which shrinks caches
 * until {@code high}. At {@code min} a non-blocking allocation fails; a blocking one runs direct
 * reclaim (the shrinkers, one reclaimer at a time under the reclaim mutex) and, if that freed
 * nothing, waits for pages to be freed with a 100 ms timeout and tries again, forever unless
 * {@link Gfp#NORETRY} asked it to give up. Pages below {@code min} are kept for reclaim itself
 * (the reclaim task and anyone inside a shrinker).
 *
 * <p><b>The ledger.</b> Consumers reserve their share when they are built ({@link Reservation}):
 * a <i>promise</i> keeps free pages aside for one consumer, and every other allocation (slabs,
 * caches, the reclaim task's emergency pages) sees only the free pages beyond the promises: the
 * watermarks and waits above all count {@link #availablePages}. So pages promised to the NBD
 * server's payload budget are there when an admitted request takes them, however far the caches
 * have grown meanwhile, and the request never waits for memory it was promised. A <i>record</i>
 * names pages a consumer already holds. A reservation that does not fit is refused with the
 * ledger in the message ({@link MemoryAdmissionException}).
 *
 * <p>The budget is never exceeded: pages exist up front, and {@link #checkInvariants} proves that
 * free plus allocated is the total and that the promises add up.
 */
public final class PageAllocator implements Mempool.Allocator<Page>, AutoCloseable {

    /** How long a blocked allocation waits for freed pages before retrying reclaim. */
    public static final long RETRY_NANOS = 100_000_000L;

    private final Kernel kernel;
    private final Page[] pages;
    /** A page of zeroes that {@link Page#zero} copies from; never written. */
    final byte[] zeroes = new byte[Page.SIZE];
    private final ArenaMemory memory;
    private final ByteBuffer arena;
    private final int[] freeStack;
    private final SpinLock lock = new SpinLock("page allocator");
    private final WaitQueue pagesFreed = new WaitQueue("pages freed");
    private final WaitQueue reclaimWake = new WaitQueue("reclaim wake");
    private final Mutex reclaimMutex = new Mutex("reclaim");
    private final List<Shrinker> shrinkers = new CopyOnWriteArrayList<>();
    private final AtomicLong failures;
    private final AtomicLong directReclaims;
    private final AtomicLong shrinkerScans;
    private final AtomicLong reclaimWaits;
    private volatile int freeCount;
    /** Pages promised and not yet taken through their promise: off limits to everyone else. */
    private volatile int promised;
    /** Every open reservation, in the order they were made (guarded by {@code lock}). */
    private final List<Reservation> ledger = new ArrayList<>();
    private int minPages;
    private int lowPages;
    private int highPages;
    private volatile boolean reclaimRequested;
    private Task reclaimTask;
    private volatile boolean closing;

    public PageAllocator(Kernel kernel, long bytes) {
        this(kernel, bytes, true);
    }

    /**
     * An arena of {@code bytes}; {@code mapped} asks for an anonymous mapping (pages zeroed by the
     * operating system when first touched) where the platform has one, else (and always when false)
     * direct memory zeroed up front ({@link ArenaMemory}).
     */
    public PageAllocator(Kernel kernel, long bytes, boolean mapped) {
        if (bytes < Page.SIZE) {
            throw new IllegalArgumentException("memory budget " + bytes + " bytes is smaller than one page");
        }
        long count = bytes >> Page.SHIFT;
        if (count > Integer.MAX_VALUE / Page.SIZE - 1) {
            throw new IllegalArgumentException("memory budget " + bytes + " bytes is larger than 2 GiB");
        }
        this.kernel = kernel;
        int n = (int) count;
        // Page-aligned either way: O_DIRECT file I/O (the file device's direct mode) needs it.
        this.memory = ArenaMemory.allocate(n * Page.SIZE, mapped);
        ByteBuffer arena = memory.buffer();
        this.arena = arena;
        this.pages = new Page[n];
        this.freeStack = new int[n];
        for (int i = 0; i < n; i++) {
            pages[i] = new Page(this, i, arena.slice(i * Page.SIZE, Page.SIZE));
            freeStack[i] = n - 1 - i;
        }
        this.freeCount = n;
        int min = Math.max(1, n / 64);
        setWatermarks(min, min + Math.max(1, min / 4), min + Math.max(2, min / 2));
        this.failures = kernel.counters().get("pages.alloc-failures");
        this.directReclaims = kernel.counters().get("pages.direct-reclaims");
        this.shrinkerScans = kernel.counters().get("pages.shrinker-scans");
        this.reclaimWaits = kernel.counters().get("pages.reclaim-waits");
    }

    /** Starts the background reclaim task. */
    public void start() {
        if (reclaimTask != null) {
            throw new IllegalStateException("page allocator of " + kernel + " already started");
        }
        reclaimTask = kernel.spawn("kswapd", TaskKind.RECLAIM, this::runReclaim);
    }

    /** Sets the watermarks in pages; {@code min <= low <= high <= total} must hold. */
    public void setWatermarks(int min, int low, int high) {
        if (min < 0 || low < min || high < low || high > pages.length) {
            throw new IllegalArgumentException("watermarks must satisfy 0 <= min <= low <= high <= " + pages.length
                    + ": min " + min + " low " + low + " high " + high);
        }
        this.minPages = min;
        this.lowPages = low;
        this.highPages = high;
    }

    public int totalPages() {
        return pages.length;
    }

    public int freePages() {
        return freeCount;
    }

    /** Free pages that are not promised to a reservation: what every other allocation can reach. */
    public int availablePages() {
        return freeCount - promised;
    }

    /** Pages promised to reservations and not yet taken through them. */
    public int promisedPages() {
        return promised;
    }

    /**
     * Promises {@code count} free pages to {@code owner}, taken later through the reservation
     * without waiting. Refused, with the ledger in the message, if that would leave fewer than the
     * min watermark's pages to everyone else.
     */
    public Reservation reserve(String owner, int count) {
        if (count < 0) {
            throw new IllegalArgumentException(owner + ": reservation of " + count + " pages");
        }
        Reservation r = new Reservation(this, owner, count, true);
        lock.lock();
        try {
            int left = freeCount - promised - minPages;
            if (count > left) {
                throw new MemoryAdmissionException(owner + ": cannot reserve " + count + " pages, only " + Math.max(0, left)
                        + " are left above the min watermark of " + minPages + ": " + describeLedgerLocked());
            }
            promised += count;
            ledger.add(r);
        } finally {
            lock.unlock();
        }
        return r;
    }

    /** Adds a line naming {@code count} pages that {@code owner} already holds (see {@link Reservation}). */
    public Reservation record(String owner, int count) {
        if (count < 0) {
            throw new IllegalArgumentException(owner + ": record of " + count + " pages");
        }
        Reservation r = new Reservation(this, owner, count, false);
        lock.lock();
        try {
            ledger.add(r);
        } finally {
            lock.unlock();
        }
        return r;
    }

    /** The open reservations, in the order they were made. */
    public List<Reservation> ledger() {
        lock.lock();
        try {
            return List.copyOf(ledger);
        } finally {
            lock.unlock();
        }
    }

    /**
     * The ledger for admission errors and explanations: the arena, each line, and the pages held
     * that no line names (slab pages, cache buffers beyond their reserves, I/O in flight).
     */
    public String describeLedger() {
        lock.lock();
        try {
            return describeLedgerLocked();
        } finally {
            lock.unlock();
        }
    }

    private String describeLedgerLocked() {
        StringBuilder b = new StringBuilder();
        int named = 0;
        b.append("arena of ").append(pages.length).append(" pages, ").append(freeCount).append(" free (")
                .append(promised).append(" of them promised), min watermark ").append(minPages).append("; ledger:");
        for (Reservation r : ledger) {
            b.append(' ').append(r.owner()).append(' ').append(r.pages())
                    .append(r.isPromise() ? " promised (" + r.held + " taken)," : " held,");
            if (!r.isPromise()) {
                named += r.pages();
            }
        }
        if (ledger.isEmpty()) {
            b.append(" empty,");
        }
        int unnamed = pages.length - freeCount - named;
        for (Reservation r : ledger) {
            if (r.isPromise()) {
                unnamed -= r.held;
            }
        }
        b.append(" other use ").append(Math.max(0, unnamed));
        return b.toString();
    }

    int heldPages(Reservation r) {
        lock.lock();
        try {
            return r.isPromise() ? r.held : r.pages();
        } finally {
            lock.unlock();
        }
    }

    /** Takes pages of promise {@code r} (see {@link Reservation#allocBulk}). */
    int allocReserved(Reservation r, Page[] out, int count) {
        if (!r.isPromise() || r.arena() != this) {
            throw new IllegalArgumentException(r + " is not a promise of this arena");
        }
        if (count < 0 || count > out.length) {
            throw new IllegalArgumentException("reserved allocation of " + count + " pages into an array of " + out.length);
        }
        int taken;
        boolean wakeReclaim;
        lock.lock();
        try {
            if (r.closed) {
                throw new IllegalStateException(r.owner() + ": allocation through a closed reservation");
            }
            taken = Math.min(count, r.pages() - r.held);
            if (taken > freeCount) {
                throw new IllegalStateException("promise broken: " + r + " wants " + taken + " pages, " + freeCount
                        + " free, " + promised + " promised");
            }
            for (int i = 0; i < taken; i++) {
                Page page = takeLocked();
                page.reservation = r;
                out[i] = page;
            }
            r.held += taken;
            promised -= taken;
            wakeReclaim = requestReclaimLocked();
        } finally {
            lock.unlock();
        }
        if (wakeReclaim) {
            reclaimWake.wakeAll();
        }
        return taken;
    }

    /** Closes a ledger line (see {@link Reservation#close}). */
    void release(Reservation r) {
        lock.lock();
        try {
            if (r.closed) {
                return;
            }
            r.closed = true;
            ledger.remove(r);
            if (r.isPromise()) {
                promised -= r.pages() - r.held; // pages still taken through it are no longer promised when freed
            }
        } finally {
            lock.unlock();
        }
        if (r.isPromise() && pagesFreed.hasWaiters()) {
            pagesFreed.wakeAll();
        }
    }

    /** The min watermark: below it only emergency allocations succeed. */
    public int minPages() {
        return minPages;
    }

    public int lowPages() {
        return lowPages;
    }

    /** The high watermark: the background reclaim stops once this many pages are free. */
    public int highPages() {
        return highPages;
    }

    /** The background reclaim task ({@code kswapd}), or null before {@link #start}; for harnesses that watch its waits. */
    public Task reclaimTask() {
        return reclaimTask;
    }

    /** The mutex that serializes reclaim; waits on it show up in explanations. */
    public Mutex reclaimMutex() {
        return reclaimMutex;
    }

    /** Registers a shrinker with reclaim. */
    public void registerShrinker(Shrinker shrinker) {
        shrinkers.add(shrinker);
    }

    public void unregisterShrinker(Shrinker shrinker) {
        shrinkers.remove(shrinker);
    }

    /**
     * Allocates one page.
     *
     * @return the page, or null if the flags did not allow waiting long enough
     */
    @Override
    public Page alloc(int gfp) {
        Task self = Task.currentOrNull();
        int flags = Gfp.effective(gfp, self);
        boolean reserveAccess = self != null && (self.kind() == TaskKind.RECLAIM || reclaimMutex.owner() == self);
        Page page = tryTake(reserveAccess, flags);
        if (page != null) {
            return page;
        }
        if (!Gfp.mayBlock(flags) || self == null) {
            failures.incrementAndGet();
            return null;
        }
        boolean started = false;
        try {
            while (true) {
                directReclaim(flags);
                page = tryTake(reserveAccess, flags);
                if (page != null) {
                    return page;
                }
                if ((flags & Gfp.NORETRY) != 0 || closing) {
                    failures.incrementAndGet();
                    return null;
                }
                if (!started) {
                    started = self.beginWait(this, false);
                }
                reclaimWaits.incrementAndGet();
                pagesFreed.waitEventTimeout(() -> freeCount - promised > minPages, this, RETRY_NANOS, false);
            }
        } finally {
            self.endWait(started);
        }
    }

    /** One page per element: a mempool of pages keeps its reserve here. */
    @Override
    public int pagesFor(int elements) {
        return elements;
    }

    /** Returns a page to the arena and wakes anyone waiting for pages. */
    @Override
    public void free(Page page) {
        if (page.allocator() != this) {
            throw new IllegalArgumentException(page + " belongs to another kernel's arena");
        }
        lock.lock();
        try {
            releaseLocked(page);
        } finally {
            lock.unlock();
        }
        if (pagesFreed.hasWaiters()) {
            pagesFreed.wakeAll();
        }
    }

    /**
     * Takes up to {@code count} pages into {@code out[0..)} under one lock, only as many as the
     * watermark leaves free; never blocks or reclaims. Returns how many it took; the caller takes
     * the rest with {@link #alloc}, which reclaims and waits as its flags allow. Non-blocking flags
     * and reserve users take nothing here, so fault injection and the reserve keep their one path.
     */
    public int allocBulk(int gfp, Page[] out, int count) {
        if (count < 0 || count > out.length) {
            throw new IllegalArgumentException("bulk allocation of " + count + " pages into an array of " + out.length);
        }
        Task self = Task.currentOrNull();
        int flags = Gfp.effective(gfp, self);
        if (count == 0 || !Gfp.mayBlock(flags) || self == null || self.kind() == TaskKind.RECLAIM
                || reclaimMutex.owner() == self) {
            return 0;
        }
        int taken;
        boolean wakeReclaim = false;
        lock.lock();
        try {
            taken = Math.max(0, Math.min(count, freeCount - promised - minPages));
            for (int i = 0; i < taken; i++) {
                out[i] = takeLocked();
            }
            wakeReclaim = requestReclaimLocked();
        } finally {
            lock.unlock();
        }
        if (wakeReclaim) {
            reclaimWake.wakeAll();
        }
        return taken;
    }

    /** Returns {@code pages[0..count)} to the arena under one lock and wakes anyone waiting for pages. */
    public void freeBulk(Page[] pages, int count) {
        if (count < 0 || count > pages.length) {
            throw new IllegalArgumentException("bulk free of " + count + " pages from an array of " + pages.length);
        }
        for (int i = 0; i < count; i++) {
            if (pages[i].allocator() != this) {
                throw new IllegalArgumentException(pages[i] + " belongs to another kernel's arena");
            }
        }
        if (count == 0) {
            return;
        }
        lock.lock();
        try {
            // Pushed last to first: the next bulk take pops them first to last, so a run of
            // neighbouring pages freed together comes back as the same run (segment merging).
            for (int i = count - 1; i >= 0; i--) {
                releaseLocked(pages[i]);
            }
        } finally {
            lock.unlock();
        }
        if (pagesFreed.hasWaiters()) {
            pagesFreed.wakeAll();
        }
    }

    /**
     * One view over {@code length} bytes starting {@code offset} bytes into {@code first} and
     * running on through its arena neighbours: the segment merging of physically contiguous pages,
     * so a run of pages moves as one buffer in one system call. The caller must own every page the
     * view covers.
     */
    public ByteBuffer sliceRun(Page first, int offset, int length) {
        if (first.allocator() != this) {
            throw new IllegalArgumentException(first + " belongs to another kernel's arena");
        }
        long start = (long) first.index() * Page.SIZE + offset;
        if (offset < 0 || length < 0 || start + length > (long) pages.length * Page.SIZE) {
            throw new IllegalArgumentException("page run from " + first + " offset " + offset + " length " + length
                    + " leaves the arena of " + pages.length + " pages");
        }
        return arena.slice((int) start, length);
    }

    /** Pops the top of the free stack and marks it allocated; the caller holds {@code lock} and saw it non-empty. */
    private Page takeLocked() {
        Page page = pages[freeStack[--freeCount]];
        if (page.allocated) {
            throw new IllegalStateException(page + " on the free list is allocated");
        }
        page.allocated = true;
        return page;
    }

    /**
     * After a take: whether the free pages fell below the low watermark with no reclaim asked for
     * yet; marks it asked, and the caller wakes the reclaim task once it has dropped {@code lock}.
     */
    private boolean requestReclaimLocked() {
        if (freeCount - promised < lowPages && !reclaimRequested) {
            reclaimRequested = true;
            return true;
        }
        return false;
    }

    /**
     * Puts an allocated page back on the free stack; a page taken through a promise is promised to
     * it again (so the owner frees with {@link #free} or {@link #freeBulk} like everyone else). The
     * caller holds {@code lock}.
     */
    private void releaseLocked(Page page) {
        if (!page.allocated) {
            kernel.reportMisuse(Task.currentOrNull(), "double free of " + page);
            throw new IllegalStateException("double free of " + page);
        }
        Reservation r = page.reservation;
        if (r != null) {
            page.reservation = null;
            r.held--;
            if (!r.closed) {
                promised++;
            }
        }
        page.allocated = false;
        freeStack[freeCount++] = page.index();
    }

    /** Takes a page if the watermarks allow; never blocks. */
    private Page tryTake(boolean reserveAccess, int flags) {
        Page page = null;
        boolean wakeReclaim = false;
        int floor = promised + (reserveAccess ? 0 : minPages);
        // A fault site for non-blocking attempts only: a blocking allocation that fails its first
        // try still reclaims and waits, which is what the fault should exercise.
        if (!Gfp.mayBlock(flags) && kernel.faults().shouldFail("alloc:pages")) {
            return null;
        }
        lock.lock();
        try {
            if (freeCount > floor) {
                page = takeLocked();
            }
            wakeReclaim = requestReclaimLocked();
        } finally {
            lock.unlock();
        }
        if (wakeReclaim) {
            reclaimWake.wakeAll();
        }
        return page;
    }

    /** Runs every shrinker once on behalf of an allocation; returns how many objects they freed. */
    private long directReclaim(int flags) {
        directReclaims.incrementAndGet();
        Task self = Task.current();
        if (reclaimMutex.owner() == self) {
            return 0; // reclaim inside reclaim: never recurse into the shrinkers
        }
        reclaimMutex.lock();
        try {
            return shrinkAll(flags, Math.max(1, highPages - availablePages()));
        } finally {
            reclaimMutex.unlock();
        }
    }

    /** Asks each shrinker for its share of {@code target} objects. */
    private long shrinkAll(int flags, long target) {
        long freed = 0;
        for (Shrinker s : shrinkers) {
            long count = s.count();
            if (count > 0) {
                shrinkerScans.incrementAndGet();
                ShrinkerScanEvent event = new ShrinkerScanEvent();
                event.begin();
                long toScan = Math.min(count, target);
                long scanned = s.scan(toScan, flags);
                freed += scanned;
                if (event.shouldCommit()) {
                    event.shrinker = s.name();
                    event.toScan = toScan;
                    event.freed = scanned;
                    event.commit();
                }
            }
        }
        return freed;
    }

    /** The background reclaim task: sleeps until free pages drop below low, shrinks up to high. */
    private void runReclaim() {
        Task self = Task.current();
        while (!self.stopRequested()) {
            reclaimWake.waitEventTimeout(() -> reclaimRequested || self.stopRequested(), "kswapd idle", -1, true);
            if (self.stopRequested()) {
                return;
            }
            // Clear the request before shrinking: an allocation that drops below low while we
            // shrink sets it again, and the next wait sees it instead of sleeping through it.
            lock.lock();
            try {
                reclaimRequested = false;
            } finally {
                lock.unlock();
            }
            reclaimMutex.lock();
            try {
                long freed = 1;
                while (freed > 0 && availablePages() < highPages && !self.stopRequested()) {
                    freed = shrinkAll(Gfp.KERNEL, highPages - availablePages());
                }
            } finally {
                reclaimMutex.unlock();
            }
        }
    }

    /** Throws unless free plus allocated pages equal the budget and the free list is consistent. */
    public void checkInvariants() {
        lock.lock();
        try {
            int allocated = 0;
            for (Page p : pages) {
                if (p.allocated) {
                    allocated++;
                }
            }
            if (allocated + freeCount != pages.length) {
                throw new IllegalStateException("page budget broken: " + allocated + " allocated + " + freeCount
                        + " free != " + pages.length + " total");
            }
            for (int i = 0; i < freeCount; i++) {
                if (pages[freeStack[i]].allocated) {
                    throw new IllegalStateException("page " + freeStack[i] + " is on the free list and allocated");
                }
            }
            int owed = 0;
            for (Reservation r : ledger) {
                if (r.isPromise()) {
                    int taken = 0;
                    for (Page p : pages) {
                        if (p.reservation == r) {
                            taken++;
                        }
                    }
                    if (taken != r.held) {
                        throw new IllegalStateException(r + ": " + taken + " pages taken through it, it counts " + r.held);
                    }
                    owed += r.pages() - r.held;
                }
            }
            if (owed != promised || promised > freeCount) {
                throw new IllegalStateException("promises broken: " + owed + " owed, " + promised + " promised, "
                        + freeCount + " free");
            }
        } finally {
            lock.unlock();
        }
    }

    /** Whether the arena is an anonymous mapping (zeroed lazily) rather than direct memory. */
    public boolean isMapped() {
        return memory.isMapped();
    }

    /** Pages currently handed out. */
    public int allocatedPages() {
        return pages.length - freeCount;
    }

    /** A line for explanations: levels and watermarks. */
    public String describeState() {
        return "pages free " + freeCount + "/" + pages.length + ", " + promised + " promised (min " + minPages + " low " + lowPages
                + " high " + highPages + "), reclaim owner " + reclaimMutex.owner();
    }

    /** Stops reclaim and checks that every page came back. */
    @Override
    public void close() {
        closing = true;
        if (reclaimTask != null) {
            reclaimTask.requestStop();
            reclaimWake.wakeAll();
            kernel.scheduler().join(reclaimTask);
        }
        int leaked = allocatedPages();
        if (leaked != 0) {
            kernel.reportMisuse(null, leaked + " page(s) leaked at close of " + kernel);
            throw new IllegalStateException(leaked + " of " + pages.length + " pages were not returned to the arena of "
                    + kernel.name());
        }
        memory.close(); // every page came back: nothing of ours can touch the memory any more
    }
}
