package io.blkstack.dm.logwrites;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioIter;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.dm.MapResult;
import io.blkstack.dm.TableException;
import io.blkstack.dm.Target;
import io.blkstack.dm.TargetArgs;
import io.blkstack.dm.TargetIo;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.dm.logwrites.LogFormat;
import io.blkstack.mem.Reservation;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import io.blkstack.wq.Work;
import io.blkstack.wq.Workqueue;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32C;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code log-writes <dev> <log dev>} (dm-log-writes): passes all I/O to {@code dev} and records
 * every write, in completion order, on {@code log dev} in the format of {@link LogFormat}: the
 * write's sector, length, flags and data; flushes (FLUSH) and FUA writes carry their flags;
 * discards and write-zeroes are logged as DISCARD ranges; {@code message mark <name>} appends a
 * named mark. {@code blkstack log-writes replay} rebuilds the device as it was at a mark.
 *
 * <p><b>Ordering.</b> A write is logged when the data device completed it, so a mark set after a
 * write was acknowledged follows it in the log, and replay to the mark reproduces everything the
 * device had acknowledged. (The kernel target defers unflushed writes to the next flush to model a
 * volatile cache; blkstack logs what the device acknowledged.)
 *
 * <p><b>Memory.</b> {@link #map} copies a write's data into pages of this target's private pool
 * ({@link #POOL_PAGES}, taken at construction) and takes a log block from a fixed set of
 * {@link #BLOCKS_MAX}; no allocation happens on the data path. If none is free, a mapper that has
 * unsubmitted bios on its submit list does not wait (those bios may be what frees the pool: rule 1
 * of DESIGN.md section 1): it returns REQUEUE, and the mapped device maps the clone again from its
 * workqueue, where waiting is safe. Clones are cut at {@link #MAX_IO_SECTORS} so one always fits.
 * Waiters are served in arrival order, so a large write is never passed by smaller ones.
 *
 * <p><b>Log writer.</b> The clone's end-io (atomic context) appends the block to an intrusive FIFO
 * and queues the writer work on this target's {@code MEM_RECLAIM} workqueue; the writer writes each
 * entry (header block and data in one bio, from its own bio set), waits for it, returns the pages,
 * and rewrites the super block (PREFLUSH|FUA) after FLUSH, FUA and MARK entries and whenever the
 * list drains. The writer waits only on the log device, never on a mapper (rule 4). If the log
 * device fills up or fails, logging stops (as in the kernel); I/O to the data device continues.
 */
public final class LogWritesTarget extends Target {

    /** The table type name. */
    public static final String TYPE = "log-writes";
    /** Pages in the private pool for copies of write data (1 MiB). */
    public static final int POOL_PAGES = 256;
    /** Log blocks (pending entries) in the fixed set. */
    public static final int BLOCKS_MAX = 64;
    /** The largest clone, in sectors: half the pool, so two of the largest fit at once. */
    public static final int MAX_IO_SECTORS = POOL_PAGES / 2 * (Page.SIZE / Bio.SECTOR_SIZE);
    /** Wait queues the pool's waiters are spread over by ticket. */
    static final int TURNS = 64;
    /** Entries the writer logs in one run before it requeues itself. */
    static final int WRITER_BATCH_MAX = 16;

    /** One pending log entry: what to record and the copied data. */
    private static final class LogBlock {
        final Page[] pages = new Page[MAX_IO_SECTORS * Bio.SECTOR_SIZE / Page.SIZE];
        int pageCount;
        long sector;
        long nrSectors;
        long flags;
        byte[] mark;
        LogBlock next;
    }

    /** Per-bio data: the block reserved for a write or flush clone. */
    private static final class LogIo {
        final BioIter iter = new BioIter();
        LogBlock block;
    }

    private final Kernel kernel;
    private final BlockDevice device;
    private final BlockDevice logDevice;
    /** The writer's checksum state, reused for every entry (only the writer work uses it). */
    private final CRC32C entryChecksum = new CRC32C();
    private final String deviceName;
    private final String logDeviceName;
    private final int sectorSize;
    private final long logCapacityBytes;
    private final SpinLock lock;
    /**
     * Where the holder of ticket {@code t} waits: {@code turns[t % TURNS]}, so a release wakes the
     * waiter being served, not every waiting mapper (tickets {@code TURNS} apart share a queue and
     * only re-check).
     */
    private final WaitQueue[] turns = new WaitQueue[TURNS];
    private final Page[] freePages = new Page[POOL_PAGES];
    private final LogBlock[] allBlocks = new LogBlock[BLOCKS_MAX];
    private Page headerPage;
    /** The copy pool's and header page's line in the arena's ledger. */
    private Reservation ledgerLine;
    private BioSet logBios;
    private Workqueue workqueue;
    private Work writerWork;

    // Guarded by lock.
    private int freePageCount;
    private LogBlock freeBlocks;
    private int freeBlockCount;
    /**
     * Waiters for the pool are served in arrival order (tickets): with small and large writes
     * mixed, a large one woken with the others would otherwise find its pages taken by smaller
     * ones again and again, and its connection would stall for seconds (the soak saw 6-12 s). A
     * mapper that may not wait does not pass a waiter either; it requeues. Guarded by lock.
     */
    private long nextTicket;
    private long nowServing;
    private LogBlock queueHead;
    private LogBlock queueTail;
    private int queued;

    // Writer state (only the writer work touches these; the work never runs on two tasks at once).
    private final Logger log = LoggerFactory.getLogger(LogWritesTarget.class);
    private volatile boolean loggingEnabled = true;
    private volatile long loggedEntries;
    private volatile long nextSector;
    private volatile boolean superDirty = true;
    private volatile String stopReason = "";
    private volatile boolean logFailed;

    /** Parses {@code <dev> <log dev>}; takes the page pool, the log bio set and the writer queue. */
    public LogWritesTarget(TargetArgs args) throws TableException {
        super(args);
        args.requireCount(2, "<dev> <log dev>");
        this.kernel = args.kernel();
        this.device = args.device(1);
        this.deviceName = args.word(1);
        this.logDevice = args.device(2);
        this.logDeviceName = args.word(2);
        if (device == logDevice) {
            throw args.error(2, "is the data device itself");
        }
        if (args.length() > device.capacitySectors()) {
            throw args.error(1, "has " + device.capacitySectors() + " sectors, fewer than the target's " + args.length());
        }
        this.sectorSize = logDevice.limits().logicalBlockSize();
        if (sectorSize > Page.SIZE) {
            throw args.error(2, "has " + sectorSize + "-byte blocks; at most " + Page.SIZE + " are supported");
        }
        this.logCapacityBytes = logDevice.capacityBytes();
        if (logCapacityBytes < 2L * sectorSize) {
            throw args.error(2, "has room for no entry (" + logCapacityBytes + " bytes)");
        }
        this.nextSector = sectorSize / Bio.SECTOR_SIZE;
        String name = "log-writes/" + args.mappedDeviceName() + "@" + args.begin();
        this.lock = new SpinLock(name);
        for (int i = 0; i < TURNS; i++) {
            turns[i] = new WaitQueue(name + " log space");
        }
        for (int i = 0; i < BLOCKS_MAX; i++) {
            allBlocks[i] = new LogBlock();
            allBlocks[i].next = freeBlocks;
            freeBlocks = allBlocks[i];
        }
        freeBlockCount = BLOCKS_MAX;
        try {
            for (int i = 0; i < POOL_PAGES; i++) {
                // At start: one round of reclaim, then a clear error, never a wait for ever.
                Page p = kernel.pages().alloc(Gfp.KERNEL | Gfp.NORETRY);
                if (p == null) {
                    throw args.error("no memory for the " + POOL_PAGES + "-page copy pool ("
                            + kernel.pages().describeLedger() + ")");
                }
                freePages[freePageCount++] = p;
            }
            headerPage = kernel.pages().alloc(Gfp.KERNEL | Gfp.NORETRY);
            if (headerPage == null) {
                throw args.error("no memory for the log header page (" + kernel.pages().describeLedger() + ")");
            }
            ledgerLine = kernel.pages().record(name + " copy pool", POOL_PAGES + 1);
            logBios = new BioSet(kernel, name, 2, 2, null, false);
            writerWork = new Work(name + " writer", this::writeLog);
            workqueue = Workqueue.create(kernel, name, Workqueue.MEM_RECLAIM, 1);
        } catch (TableException | RuntimeException e) {
            close();
            throw e;
        }
        // Make the log valid (zero entries) before the first write.
        workqueue.queue(writerWork);
    }

    // ---- data path -----------------------------------------------------------------------------

    /** Remaps to the data device; reserves and fills a log block for writes, discards and flushes. */
    /** Reads are a plain remap to the data device (only writes are logged): references pass through. */
    @Override
    public boolean passesReadReference() {
        return true;
    }

    @Override
    public MapResult map(Bio clone, TargetIo io) {
        LogIo lio = io.perBioData();
        lio.block = null;
        BioOp op = clone.op();
        boolean logged = op.isWrite() && loggingEnabled;
        if (logged) {
            int pages = op.hasData() ? (clone.sizeBytes() + Page.SIZE - 1) / Page.SIZE : 0;
            boolean mayWait = !Submit.hasPending(Task.current());
            LogBlock block = reserve(pages, mayWait);
            if (block == null) {
                return MapResult.REQUEUE;
            }
            fill(block, clone, lio, pages);
            lio.block = block;
        }
        clone.setDevice(device);
        clone.setSector(clone.sizeBytes() > 0 ? targetOffset(clone) : 0);
        return MapResult.REMAPPED;
    }

    /** Records the clone's range, flags and data in the block. */
    private void fill(LogBlock block, Bio clone, LogIo lio, int pages) {
        block.sector = clone.sizeBytes() > 0 ? targetOffset(clone) : 0;
        block.nrSectors = clone.sectorCount();
        block.mark = null;
        long flags = 0;
        if (clone.op() == BioOp.FLUSH || clone.hasFlag(BioFlags.PREFLUSH)) {
            flags |= LogFormat.FLUSH;
        }
        if (clone.hasFlag(BioFlags.FUA)) {
            flags |= LogFormat.FUA;
        }
        if (clone.op() == BioOp.DISCARD || clone.op() == BioOp.WRITE_ZEROES) {
            flags |= LogFormat.DISCARD;
        }
        if (clone.op() == BioOp.FLUSH) {
            block.nrSectors = 0;
        }
        block.flags = flags;
        if (pages == 0) {
            return;
        }
        int pos = 0;
        BioIter it = lio.iter.reset(clone);
        while (it.next()) {
            int srcOffset = it.offset();
            int left = it.length();
            while (left > 0) {
                Page dst = block.pages[pos / Page.SIZE];
                int inPage = pos % Page.SIZE;
                int n = Math.min(left, Page.SIZE - inPage);
                dst.copyFrom(inPage, it.page(), srcOffset, n);
                srcOffset += n;
                left -= n;
                pos += n;
            }
        }
        if (pos != clone.sizeBytes()) {
            throw new IllegalStateException("log-writes copied " + pos + " of " + clone.sizeBytes() + " bytes of " + clone);
        }
        int padded = (pos + sectorSize - 1) / sectorSize * sectorSize;
        if (padded > pos) {
            block.pages[pos / Page.SIZE].zero(pos % Page.SIZE, padded - pos);
        }
    }

    /** The write completed: queue its block for the log on success, give it back on failure. */
    @Override
    public void endIo(Bio clone, TargetIo io, BioStatus status) {
        LogIo lio = io.perBioData();
        LogBlock block = lio.block;
        if (block == null) {
            return;
        }
        lio.block = null;
        if (status.isError()) {
            release(block);
        } else {
            enqueue(block);
        }
    }

    /**
     * Takes a block and {@code pages} pool pages; waits for them only if {@code mayWait}.
     *
     * @return the block with its pages, or null if they were not free and waiting was not allowed
     */
    private LogBlock reserve(int pages, boolean mayWait) {
        if (pages > POOL_PAGES / 2) {
            throw new IllegalStateException("log-writes clone of " + pages + " pages exceeds the limit of "
                    + POOL_PAGES / 2);
        }
        long ticket;
        lock.lock();
        try {
            if (nextTicket == nowServing) { // nobody waits: take what is free, if it is enough
                LogBlock block = takeLocked(pages);
                if (block != null || !mayWait) {
                    return block;
                }
            } else if (!mayWait) {
                return null; // others wait already: do not pass them
            }
            ticket = nextTicket++;
        } finally {
            lock.unlock();
        }
        turns[turn(ticket)].waitEvent(() -> isServedWithSpace(ticket, pages), "log-writes pool (" + pages + " pages)");
        LogBlock block;
        lock.lock();
        try {
            block = takeLocked(pages);
            nowServing++;
        } finally {
            lock.unlock();
        }
        wakeServed(); // the next ticket may find space too
        if (block == null) {
            throw new IllegalStateException("log-writes pool: ticket " + ticket + " was served without " + pages + " pages");
        }
        return block;
    }

    /** Wakes the waiter whose ticket is being served, if any. */
    private void wakeServed() {
        lock.lock();
        boolean waiting = nowServing != nextTicket;
        long serving = nowServing;
        lock.unlock();
        if (waiting) {
            turns[turn(serving)].wakeAll();
        }
    }

    private static int turn(long ticket) {
        return (int) (ticket % TURNS);
    }

    /** Whether {@code ticket} is the oldest waiter and its pages are free (no one else takes them). */
    private boolean isServedWithSpace(long ticket, int pages) {
        lock.lock();
        try {
            return nowServing == ticket && freeBlockCount > 0 && freePageCount >= pages;
        } finally {
            lock.unlock();
        }
    }

    /** Under the lock: a block with {@code pages} pool pages, or null if they are not free. */
    private LogBlock takeLocked(int pages) {
        if (freeBlockCount == 0 || freePageCount < pages) {
            return null;
        }
        LogBlock block = freeBlocks;
        freeBlocks = block.next;
        block.next = null;
        freeBlockCount--;
        for (int i = 0; i < pages; i++) {
            block.pages[i] = freePages[--freePageCount];
            freePages[freePageCount] = null;
        }
        block.pageCount = pages;
        return block;
    }

    /** Gives a block and its pages back and wakes waiting mappers. */
    private void release(LogBlock block) {
        lock.lock();
        for (int i = 0; i < block.pageCount; i++) {
            freePages[freePageCount++] = block.pages[i];
            block.pages[i] = null;
        }
        block.pageCount = 0;
        block.mark = null;
        block.next = freeBlocks;
        freeBlocks = block;
        freeBlockCount++;
        lock.unlock();
        wakeServed();
    }

    /** Appends a block to the writer's FIFO and kicks the writer (never blocks). */
    private void enqueue(LogBlock block) {
        lock.lock();
        block.next = null;
        if (queueTail == null) {
            queueHead = block;
        } else {
            queueTail.next = block;
        }
        queueTail = block;
        queued++;
        lock.unlock();
        workqueue.queue(writerWork);
    }

    private LogBlock dequeue() {
        lock.lock();
        try {
            LogBlock block = queueHead;
            if (block != null) {
                queueHead = block.next;
                if (queueHead == null) {
                    queueTail = null;
                }
                block.next = null;
                queued--;
            }
            return block;
        } finally {
            lock.unlock();
        }
    }

    // ---- log writer ------------------------------------------------------------------------------

    /** The writer work: logs up to a batch of entries, commits the super block, requeues if more. */
    private void writeLog() {
        for (int n = 0; n < WRITER_BATCH_MAX; n++) {
            LogBlock block = dequeue();
            if (block == null) {
                break;
            }
            boolean commit = (block.flags & (LogFormat.FLUSH | LogFormat.FUA | LogFormat.MARK)) != 0;
            try {
                if (loggingEnabled) {
                    logOne(block);
                }
            } finally {
                release(block);
            }
            if (commit && superDirty && !logFailed) {
                writeSuper();
            }
        }
        lock.lock();
        boolean more = queueHead != null;
        lock.unlock();
        if (more) {
            workqueue.queue(writerWork);
        } else if (superDirty && !logFailed) {
            // Also after the log filled up: the entries already written stay valid and counted.
            writeSuper();
        }
    }

    /** Writes one entry (header block, then its data) at the log's end and waits for it. */
    private void logOne(LogBlock block) {
        long dataBytes = LogFormat.dataBytes(block.nrSectors, block.flags, sectorSize);
        long entryBytes = sectorSize + dataBytes;
        long at = nextSector * Bio.SECTOR_SIZE;
        if (at + entryBytes > logCapacityBytes) {
            stop("log device " + logDeviceName + " is full at entry " + loggedEntries);
            return;
        }
        LogFormat.encodeEntry(headerPage.buffer(), sectorSize, block.sector, block.nrSectors, block.flags, block.mark);
        sealEntry(block, dataBytes, at);
        Bio bio = logBios.alloc(Gfp.NOIO, 1 + block.pageCount);
        bio.init(logDevice, BioOp.WRITE, 0, nextSector);
        bio.addPage(headerPage, sectorSize, 0);
        long left = dataBytes;
        for (int i = 0; i < block.pageCount && left > 0; i++) {
            int len = (int) Math.min(Page.SIZE, left);
            if (!bio.addPage(block.pages[i], len, 0)) {
                throw new IllegalStateException("log bio full at page " + i + " of " + block.pageCount);
            }
            left -= len;
        }
        if (left != 0) {
            bio.put();
            throw new IllegalStateException("log entry of " + dataBytes + " bytes has only " + block.pageCount + " pages");
        }
        BioStatus status = Submit.submitAndWaitStatus(bio);
        bio.put();
        if (status.isError()) {
            logFailed = true;
            stop("write to log device " + logDeviceName + " failed: " + status.errnoName());
            return;
        }
        nextSector += entryBytes / Bio.SECTOR_SIZE;
        loggedEntries++;
        superDirty = true;
    }

    /** Puts the entry's crc32c (header block, data with padding, log offset) into its header block. */
    private void sealEntry(LogBlock block, long dataBytes, long logOffset) {
        CRC32C crc = LogFormat.startEntryChecksum(entryChecksum, headerPage.buffer(), sectorSize);
        long left = dataBytes;
        for (int i = 0; i < block.pageCount && left > 0; i++) {
            int len = (int) Math.min(Page.SIZE, left);
            crc.update(block.pages[i].buffer().slice(0, len));
            left -= len;
        }
        int sum = LogFormat.finishEntryChecksum(crc, logOffset);
        headerPage.buffer().duplicate().order(ByteOrder.LITTLE_ENDIAN).putInt(LogFormat.entryChecksumOffset(sectorSize), sum);
    }

    /** Rewrites the super block with the entry count, after a preflush, with FUA. */
    private void writeSuper() {
        LogFormat.encodeSuper(headerPage.buffer(), loggedEntries, sectorSize);
        Bio bio = logBios.alloc(Gfp.NOIO, 1);
        bio.init(logDevice, BioOp.WRITE, BioFlags.PREFLUSH | BioFlags.FUA, LogFormat.SUPER_SECTOR);
        bio.addPage(headerPage, sectorSize, 0);
        BioStatus status = Submit.submitAndWaitStatus(bio);
        bio.put();
        if (status.isError()) {
            logFailed = true;
            stop("super block write to log device " + logDeviceName + " failed: " + status.errnoName());
            return;
        }
        superDirty = false;
    }

    /**
     * Logging stops for good (later writes still reach the data device, unlogged); said once in the
     * log, as dm-log-writes does, so a user who relies on the log for a replay hears of it then and
     * not when a mark is refused. The writer work's call: it may log.
     */
    private void stop(String why) {
        boolean was = loggingEnabled;
        loggingEnabled = false;
        stopReason = why;
        if (was) {
            log.warn("log-writes onto {}: logging stopped ({}); later writes reach the data device but not the log,"
                    + " the {} entries logged so far stay valid", logDeviceName, why, loggedEntries);
        }
    }

    // ---- control path ----------------------------------------------------------------------------

    /** {@code mark <name>}: appends a named mark after every write completed so far. */
    @Override
    public String message(String[] args) {
        if (args.length != 2 || !args[0].equals("mark")) {
            throw new IllegalArgumentException("target " + TYPE + " accepts 'mark <name>' (got '"
                    + String.join(" ", args) + "')");
        }
        byte[] name = LogFormat.markBytes(args[1], sectorSize);
        if (!loggingEnabled) {
            throw new IllegalStateException("log-writes: logging stopped (" + stopReason + "), mark " + args[1]
                    + " not recorded");
        }
        LogBlock block = reserve(0, true);
        block.sector = 0;
        block.nrSectors = 0;
        block.flags = LogFormat.MARK;
        block.mark = name;
        enqueue(block);
        return "";
    }

    /** Waits until every queued entry is on the log and the super block counts it. */
    public void sync() {
        while (true) {
            lock.lock();
            boolean idle = queueHead == null;
            lock.unlock();
            if (idle && !writerWork.isPending() && !writerWork.isRunning() && (!superDirty || logFailed)) {
                return;
            }
            workqueue.queue(writerWork);
            writerWork.flush();
        }
    }

    /** After every in-flight clone completed: commit the log so a suspended device has a complete one. */
    @Override
    public void postsuspend() {
        sync();
    }

    /** {@code <logged entries> <highest allocated sector>} (dm-log-writes's INFO status). */
    @Override
    public String statusInfo() {
        return loggedEntries + " " + (nextSector - 1);
    }

    @Override
    public String statusTable() {
        return deviceName + " " + logDeviceName;
    }

    @Override
    public long maxIoSectors(long offset) {
        return Math.min(length() - offset, MAX_IO_SECTORS);
    }

    @Override
    public int flushBioCount() {
        return 1;
    }

    @Override
    public List<BlockDevice> devices() {
        List<BlockDevice> out = new ArrayList<>(1);
        out.add(device);
        return out;
    }

    @Override
    protected Object newPerBioData() {
        return new LogIo();
    }

    /** Entries on the log device. */
    public long loggedEntries() {
        return loggedEntries;
    }

    /** Whether entries are still being recorded (false after the log filled up or failed). */
    public boolean isLogging() {
        return loggingEnabled;
    }

    /** Why logging stopped, or empty. */
    public String stopReason() {
        return stopReason;
    }

    /** Commits the log, destroys the writer queue, and gives every page back; copes with a half-built target. */
    @Override
    public void close() {
        if (workqueue != null) {
            sync();
            workqueue.close();
            workqueue = null;
        }
        String leak = queued != 0 || freeBlockCount != BLOCKS_MAX
                ? "log-writes closed with " + queued + " entries queued and " + (BLOCKS_MAX - freeBlockCount)
                        + " blocks out (their pages are lost to the pool)"
                : null;
        if (ledgerLine != null) {
            ledgerLine.close();
        }
        for (int i = 0; i < freePageCount; i++) {
            kernel.pages().free(freePages[i]);
            freePages[i] = null;
        }
        freePageCount = 0;
        if (headerPage != null) {
            kernel.pages().free(headerPage);
            headerPage = null;
        }
        if (logBios != null) {
            logBios.close();
            logBios = null;
        }
        if (leak != null) {
            throw new IllegalStateException(leak);
        }
    }
}
