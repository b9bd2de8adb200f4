package io.blkstack.dm.mirror;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioList;
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
import io.blkstack.kernel.Teardown;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Mempool;
import io.blkstack.mem.Page;
import io.blkstack.wq.Work;
import io.blkstack.wq.Workqueue;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * {@code mirror core <#log args> <region size> [sync|nosync] <#mirrors> [<dev> <offset>]+
 * [<#features> handle_errors]}: RAID-1 over N legs (dm-raid1 with an in-memory {@code core} log).
 *
 * <p><b>Writes</b> (and discards, write-zeroes) go to every leg that is not failed, one clone per
 * leg from this target's bio set, each submitted before the next is allocated (the set has a
 * rescuer, so a clone sitting on the submit loop's pending list is rescued rather than waited
 * for: rule 1 of DESIGN.md section 1). The write completes when every leg answered; it succeeds
 * if at least one leg succeeded. <b>Reads</b> go to the first healthy leg. A leg that returns an
 * error is marked failed ({@code D} in the status) and I/O continues on the others; a failed read
 * is retried on the next healthy leg from the {@code MEM_RECLAIM} workqueue {@code kmirrord}
 * (the completion only queues it: completions never block nor allocate with waiting, rule 2).
 * Errors are always handled as with {@code handle_errors}; the feature is accepted and reproduced.
 *
 * <p><b>Regions.</b> The core log keeps one bit per region: a region a write changed while some
 * leg missed it is out of sync. {@code status INFO} is dm-raid1's: {@code <#mirrors> <dev>...
 * <in-sync>/<total regions> 1 <health chars> 1 core}.
 *
 * <p><b>Rebuild.</b> {@code message rebuild <leg>} (or {@code recover}: every failed leg) copies the
 * whole target from a healthy leg to the leg on the {@code MEM_RECLAIM} workqueue
 * {@code kmirror-rebuild}, chunk by chunk through {@link #REBUILD_PAGES} pages of the target's own
 * page pool, each bio waited for before the next. Writes keep reaching the recovering leg. For
 * each chunk the copy raises a fence: writes overlapping it are held (not failed, not busy-retried)
 * and issued by the copy when the chunk is done; writes already in flight are drained first
 * (two-epoch counters), so a copy never overwrites newer data with older. When the copy finishes
 * the leg is healthy again and the regions are in sync.
 */
public final class MirrorTarget extends Target {

    /** The table type name. */
    public static final String TYPE = "mirror";
    /** The most legs one mirror takes (dm-raid1's limit). */
    public static final int LEGS_MAX = 9;
    /** Pages the rebuild copies per bio (64 KiB), held in the target's page pool. */
    public static final int REBUILD_PAGES = 16;
    /** Read retries one work run handles before requeueing itself. */
    static final int RETRY_BATCH_MAX = 16;

    private static final int HEALTHY = 0;
    private static final int FAILED = 1;
    private static final int RECOVERING = 2;

    private final long regionSectors;
    private final String syncWord;
    private final int legCount;
    private final BlockDevice[] legs;
    private final String[] legNames;
    private final long[] legOffsets;
    private final boolean handleErrors;
    private final long regionCount;

    private final AtomicIntegerArray legState;
    private final AtomicLongArray outOfSync;
    private final SpinLock lock;
    private final WaitQueue drained;
    private final AtomicIntegerArray epochWrites = new AtomicIntegerArray(2);
    private final BioEndIo legEndIo = this::legDone;
    private final Work retryWork;
    private final Work rebuildWork;

    // Guarded by lock.
    private final BioList retries = new BioList();
    private final BioList held = new BioList();
    private int epoch;
    private long fenceStart = -1;
    private long fenceEnd = -1;
    private int rebuildLeg = -1;

    private BioSet bioSet;
    private Mempool<Page> pagePool;
    private Workqueue retryQueue;
    private Workqueue rebuildQueue;

    private final AtomicLong legErrors = new AtomicLong();
    private final AtomicLong readRetries = new AtomicLong();
    private final AtomicLong rebuildsDone = new AtomicLong();
    private volatile long rebuildProgress;

    /** The per-leg clone's state (front pad of this target's bio set). */
    static final class LegIo {
        int leg;
    }

    /** Per-clone state of the mapped device's clone. */
    static final class MirrorIo {
        final AtomicInteger pending = new AtomicInteger();
        final AtomicInteger succeeded = new AtomicInteger();
        final AtomicInteger legFailures = new AtomicInteger();
        int epoch;
    }

    /** Parses the table line strictly, then builds the pools and workqueues. */
    @SuppressWarnings("this-escape")
    public MirrorTarget(TargetArgs args) throws TableException {
        super(args);
        String usage = "core <#log args> <region size> [sync|nosync] <#mirrors> [<dev> <offset>]+ [<#features> handle_errors]";
        args.requireCountAtLeast(5, usage);
        if (!"core".equals(args.word(1))) {
            throw args.error(1, "is not a supported log type (only core)");
        }
        int logArgs = args.intInRange(2, 1, 2, "the number of log arguments");
        this.regionSectors = args.unsigned(3, "is not a region size in sectors");
        if (regionSectors == 0 || Long.bitCount(regionSectors) != 1) {
            throw args.error(3, "region size must be a power of two number of sectors");
        }
        int next = 4;
        if (logArgs == 2) {
            String w = args.word(4);
            if (!w.equals("sync") && !w.equals("nosync")) {
                throw args.error(4, "is not a core log argument (sync or nosync)");
            }
            this.syncWord = w;
            next = 5;
        } else {
            this.syncWord = null;
        }
        if (args.count() < next + 1) {
            throw args.error(args.count() + " argument(s): missing <#mirrors>: " + usage);
        }
        this.legCount = args.intInRange(next, 2, LEGS_MAX, "the number of mirrors");
        int firstDev = next + 1;
        int afterLegs = firstDev + 2 * legCount; // the 1-based index of <#features>, if present
        if (args.count() < afterLegs - 1) {
            throw args.error(args.count() + " argument(s), expected " + (afterLegs - 1) + " for " + legCount
                    + " mirror(s): " + usage);
        }
        this.legs = new BlockDevice[legCount];
        this.legNames = new String[legCount];
        this.legOffsets = new long[legCount];
        for (int i = 0; i < legCount; i++) {
            int devArg = firstDev + 2 * i;
            legs[i] = args.device(devArg);
            legNames[i] = args.word(devArg);
            legOffsets[i] = args.sector(devArg + 1);
            args.requireArea(devArg + 1, legs[i], legOffsets[i], args.length());
        }
        boolean errors = false;
        if (args.count() >= afterLegs) {
            int features = args.intInRange(afterLegs, 0, 1, "the number of features");
            if (args.count() != afterLegs + features) {
                throw args.error(args.count() + " argument(s), expected " + (afterLegs + features) + " with "
                        + features + " feature(s)");
            }
            if (features == 1) {
                if (!"handle_errors".equals(args.word(afterLegs + 1))) {
                    throw args.error(afterLegs + 1, "is not a supported feature (handle_errors)");
                }
                errors = true;
            }
        }
        this.handleErrors = errors;
        this.regionCount = (args.length() + regionSectors - 1) / regionSectors;
        this.legState = new AtomicIntegerArray(legCount);
        this.outOfSync = new AtomicLongArray((int) Math.min(Integer.MAX_VALUE, (regionCount + 63) / 64));
        if ("nosync".equals(syncWord)) {
            // nosync: the legs are declared in sync from the start, which is what an empty log says anyway.
            rebuildProgress = args.length();
        }
        Kernel kernel = args.kernel();
        String name = args.mappedDeviceName() + "@" + args.begin();
        this.lock = new SpinLock("mirror " + name);
        this.drained = new WaitQueue("mirror " + name + " writes drained");
        this.retryWork = new Work("kmirrord " + name, this::runRetries);
        this.rebuildWork = new Work("kmirror rebuild " + name, this::runRebuild);
        try {
            this.bioSet = new BioSet(kernel, "mirror-" + name, kernel.reserves().targetBios(), 1, LegIo::new, true);
            this.pagePool = new Mempool<>(kernel, "mirror-" + name + "-pages", REBUILD_PAGES, kernel.pages());
            this.retryQueue = Workqueue.create(kernel, "kmirrord/" + name, Workqueue.MEM_RECLAIM, 1);
            this.rebuildQueue = Workqueue.create(kernel, "kmirror-rebuild/" + name, Workqueue.MEM_RECLAIM, 1);
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    // ---- data path ---------------------------------------------------------------------------

    /** Flushes go to their leg; reads to the first healthy leg; writes to every live leg. */
    @Override
    public MapResult map(Bio clone, TargetIo io) {
        if (clone.op() == BioOp.FLUSH) {
            int leg = io.bioNumber();
            if (leg < 0 || leg >= legCount) {
                throw new IllegalStateException("mirror: flush clone number " + leg + " of " + legCount);
            }
            if (legState.get(leg) == FAILED) {
                clone.endio(); // a dead leg has nothing to make durable
                return MapResult.SUBMITTED;
            }
            clone.setDevice(legs[leg]).setSector(0);
            return MapResult.REMAPPED;
        }
        MirrorIo mio = io.perBioData();
        if (clone.op() == BioOp.READ) {
            int leg = firstHealthy();
            if (leg < 0) {
                return MapResult.KILL;
            }
            mio.pending.set(1);
            issueLeg(clone, leg);
            return MapResult.SUBMITTED;
        }
        long start = targetOffset(clone);
        long end = start + clone.sectorCount();
        lock.lock();
        if (start < fenceEnd && fenceStart < end) {
            held.add(clone); // the rebuild issues it once the chunk is copied
            lock.unlock();
            return MapResult.SUBMITTED;
        }
        mio.epoch = epoch;
        epochWrites.incrementAndGet(mio.epoch);
        lock.unlock();
        issueWrite(clone, mio);
        return MapResult.SUBMITTED;
    }

    @Override
    protected Object newPerBioData() {
        return new MirrorIo();
    }

    /** The first healthy leg, or -1. */
    private int firstHealthy() {
        for (int i = 0; i < legCount; i++) {
            if (legState.get(i) == HEALTHY) {
                return i;
            }
        }
        return -1;
    }

    /** Sends one clone of {@code clone} to {@code leg}; submitted before the caller allocates another. */
    private void issueLeg(Bio clone, int leg) {
        Bio legBio = Bio.clone(clone, Gfp.NOIO, bioSet);
        LegIo lio = legBio.frontPad();
        lio.leg = leg;
        legBio.setDevice(legs[leg]);
        legBio.setSector(legOffsets[leg] + targetOffset(clone));
        legBio.setEndIo(legEndIo);
        legBio.setPrivateData(clone);
        Submit.submitBio(legBio);
    }

    /** Sends a write to every leg that is not failed; the bias count keeps it open until all are sent. */
    private void issueWrite(Bio clone, MirrorIo mio) {
        mio.pending.set(1);
        mio.succeeded.set(0);
        mio.legFailures.set(0);
        for (int i = 0; i < legCount; i++) {
            if (legState.get(i) != FAILED) {
                mio.pending.incrementAndGet();
                issueLeg(clone, i);
            }
        }
        writeLegDone(clone, mio);
    }

    /** A leg clone finished (atomic context). */
    private void legDone(Bio legBio) {
        Bio clone = (Bio) legBio.privateData();
        LegIo lio = legBio.frontPad();
        int leg = lio.leg;
        BioStatus status = legBio.status();
        legBio.put();
        TargetIo tio = clone.frontPad();
        MirrorIo mio = tio.perBioData();
        if (status.isError()) {
            markFailed(leg);
        }
        if (clone.op() == BioOp.READ) {
            readLegDone(clone, status);
            return;
        }
        if (status.isError()) {
            mio.legFailures.incrementAndGet();
        } else {
            mio.succeeded.incrementAndGet();
        }
        writeLegDone(clone, mio);
    }

    /** A read answered: done, or queued for a retry on the next healthy leg (never retried here). */
    private void readLegDone(Bio clone, BioStatus status) {
        if (!status.isError()) {
            clone.endio();
            return;
        }
        if (firstHealthy() < 0) {
            clone.setStatus(status);
            clone.endio();
            return;
        }
        readRetries.incrementAndGet();
        lock.lock();
        retries.add(clone);
        lock.unlock();
        retryQueue.queue(retryWork);
    }

    /** Counts down a write; the last answer ends it: OK if any leg took it. */
    private void writeLegDone(Bio clone, MirrorIo mio) {
        int left = mio.pending.decrementAndGet();
        if (left < 0) {
            throw new IllegalStateException("mirror: write " + clone + " answered " + (-left) + " time(s) too often");
        }
        if (left > 0) {
            return;
        }
        if (mio.legFailures.get() > 0 || anyLegFailed()) {
            long start = targetOffset(clone);
            markOutOfSync(start, start + Math.max(1, clone.sectorCount()));
        }
        if (mio.succeeded.get() == 0) {
            clone.setStatus(BioStatus.IOERR);
        }
        if (epochWrites.decrementAndGet(mio.epoch) == 0) {
            drained.wakeAll();
        }
        clone.endio();
    }

    /** Marks a leg failed after an error (a recovering leg too: its rebuild then stops). */
    private void markFailed(int leg) {
        legErrors.incrementAndGet();
        legState.set(leg, FAILED);
    }

    /** Whether some leg is failed (a recovering leg receives writes, so it does not count). */
    private boolean anyLegFailed() {
        for (int i = 0; i < legCount; i++) {
            if (legState.get(i) == FAILED) {
                return true;
            }
        }
        return false;
    }

    private void markOutOfSync(long start, long end) {
        for (long r = start / regionSectors; r < regionCount && r * regionSectors < end; r++) {
            int word = (int) (r >>> 6);
            long bit = 1L << (r & 63);
            outOfSync.getAndUpdate(word, v -> v | bit);
        }
    }

    private void markInSync(long start, long end) {
        for (long r = start / regionSectors; r < regionCount && r * regionSectors < end; r++) {
            if (r * regionSectors < start || Math.min((r + 1) * regionSectors, length()) > end) {
                continue; // only regions the range covers entirely
            }
            int word = (int) (r >>> 6);
            long bit = 1L << (r & 63);
            outOfSync.getAndUpdate(word, v -> v & ~bit);
        }
    }

    /** Regions no leg missed a write to. */
    public long inSyncRegions() {
        long out = 0;
        for (int i = 0; i < outOfSync.length(); i++) {
            out += Long.bitCount(outOfSync.get(i));
        }
        return regionCount - out;
    }

    /** The retry work: sends each failed read to the first healthy leg, or fails it. */
    private void runRetries() {
        for (int n = 0; n < RETRY_BATCH_MAX; n++) {
            lock.lock();
            Bio clone = retries.pop();
            lock.unlock();
            if (clone == null) {
                return;
            }
            int leg = firstHealthy();
            if (leg < 0) {
                clone.setStatus(BioStatus.IOERR);
                clone.endio();
                continue;
            }
            issueLeg(clone, leg);
        }
        lock.lock();
        boolean more = !retries.isEmpty();
        lock.unlock();
        if (more) {
            retryQueue.queue(retryWork);
        }
    }

    // ---- rebuild -----------------------------------------------------------------------------

    /**
     * {@code rebuild <leg>} copies a healthy leg onto the leg; {@code recover} rebuilds the first
     * failed leg. The copy runs on the rebuild workqueue; the reply is empty.
     */
    @Override
    public String message(String[] args) {
        int leg;
        if (args.length == 1 && args[0].equals("recover")) {
            leg = -1;
            for (int i = 0; i < legCount && leg < 0; i++) {
                if (legState.get(i) == FAILED) {
                    leg = i;
                }
            }
            if (leg < 0) {
                return "";
            }
        } else if (args.length == 2 && args[0].equals("rebuild")) {
            try {
                leg = Integer.parseInt(args[1]);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("mirror: rebuild leg '" + args[1] + "' is not a number");
            }
            if (leg < 0 || leg >= legCount) {
                throw new IllegalArgumentException("mirror: rebuild leg " + leg + " not in 0.." + (legCount - 1));
            }
        } else {
            throw new IllegalArgumentException("mirror: unknown message '" + String.join(" ", args)
                    + "' (rebuild <leg> | recover)");
        }
        lock.lock();
        try {
            if (rebuildLeg >= 0) {
                throw new IllegalArgumentException("mirror: leg " + rebuildLeg + " is already being rebuilt");
            }
            boolean source = false;
            for (int i = 0; i < legCount; i++) {
                source |= i != leg && legState.get(i) == HEALTHY;
            }
            if (!source) {
                throw new IllegalArgumentException("mirror: no healthy leg to rebuild leg " + leg + " from");
            }
            rebuildLeg = leg;
            legState.set(leg, RECOVERING);
            rebuildProgress = 0;
        } finally {
            lock.unlock();
        }
        markOutOfSync(0, length());
        rebuildQueue.queue(rebuildWork);
        return "";
    }

    /** The rebuild work: copies the target chunk by chunk onto the recovering leg, then marks it healthy. */
    private void runRebuild() {
        int leg = rebuildLeg;
        Page[] pages = new Page[REBUILD_PAGES];
        boolean ok = true;
        try {
            for (int i = 0; i < REBUILD_PAGES; i++) {
                pages[i] = pagePool.alloc(Gfp.NOIO);
            }
            long chunk = (long) REBUILD_PAGES * Page.SIZE / Bio.SECTOR_SIZE;
            for (long pos = 0; pos < length() && ok; pos += chunk) {
                long n = Math.min(chunk, length() - pos);
                raiseFence(pos, pos + n);
                ok = copyChunk(leg, pos, (int) n, pages);
                lowerFence();
                if (ok) {
                    rebuildProgress = pos + n;
                    if (!anyOtherLegDown(leg)) {
                        markInSync(pos, pos + n);
                    }
                }
            }
        } finally {
            for (Page p : pages) {
                if (p != null) {
                    pagePool.free(p);
                }
            }
            lock.lock();
            if (ok && legState.get(leg) == RECOVERING) {
                legState.set(leg, HEALTHY);
                rebuildsDone.incrementAndGet();
            }
            rebuildLeg = -1;
            lock.unlock();
        }
    }

    private boolean anyOtherLegDown(int leg) {
        for (int i = 0; i < legCount; i++) {
            if (i != leg && legState.get(i) != HEALTHY) {
                return true;
            }
        }
        return false;
    }

    /** Holds new writes to {@code [start, end)} and waits until every write issued before is done. */
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
            TargetIo tio = clone.frontPad();
            MirrorIo mio = tio.perBioData();
            lock.lock();
            mio.epoch = epoch;
            epochWrites.incrementAndGet(mio.epoch);
            lock.unlock();
            issueWrite(clone, mio);
        }
    }

    /** Reads the chunk from a healthy leg (trying the next on error) and writes it to {@code leg}. */
    private boolean copyChunk(int leg, long pos, int sectors, Page[] pages) {
        while (true) {
            int source = -1;
            for (int i = 0; i < legCount && source < 0; i++) {
                if (i != leg && legState.get(i) == HEALTHY) {
                    source = i;
                }
            }
            if (source < 0 || legState.get(leg) != RECOVERING) {
                return false;
            }
            BioStatus read = copyIo(source, BioOp.READ, pos, sectors, pages);
            if (read.isError()) {
                markFailed(source);
                continue;
            }
            BioStatus write = copyIo(leg, BioOp.WRITE, pos, sectors, pages);
            if (write.isError()) {
                markFailed(leg);
                return false;
            }
            return true;
        }
    }

    /** One synchronous bio of the copy over the rebuild pages. */
    private BioStatus copyIo(int leg, BioOp op, long pos, int sectors, Page[] pages) {
        int bytes = sectors * Bio.SECTOR_SIZE;
        int count = (bytes + Page.SIZE - 1) / Page.SIZE;
        Bio bio = bioSet.alloc(Gfp.NOIO, count);
        bio.init(legs[leg], op, 0, legOffsets[leg] + pos);
        for (int i = 0; i < count; i++) {
            bio.addPage(pages[i], Math.min(Page.SIZE, bytes - i * Page.SIZE), 0);
        }
        BioStatus status = Submit.submitAndWaitStatus(bio);
        bio.put();
        return status;
    }

    // ---- control path ------------------------------------------------------------------------

    @Override
    public int flushBioCount() {
        return legCount;
    }

    @Override
    public List<BlockDevice> devices() {
        return new ArrayList<>(List.of(legs));
    }

    /** dm-raid1's form: {@code <#mirrors> <dev>... <in-sync>/<total> 1 <A|D per leg> 1 core}. */
    @Override
    public String statusInfo() {
        StringBuilder sb = new StringBuilder().append(legCount);
        for (String n : legNames) {
            sb.append(' ').append(n);
        }
        sb.append(' ').append(inSyncRegions()).append('/').append(regionCount).append(" 1 ");
        for (int i = 0; i < legCount; i++) {
            sb.append(legState.get(i) == HEALTHY ? 'A' : 'D');
        }
        return sb.append(" 1 core").toString();
    }

    @Override
    public String statusTable() {
        StringBuilder sb = new StringBuilder("core ").append(syncWord == null ? 1 : 2).append(' ').append(regionSectors);
        if (syncWord != null) {
            sb.append(' ').append(syncWord);
        }
        sb.append(' ').append(legCount);
        for (int i = 0; i < legCount; i++) {
            sb.append(' ').append(legNames[i]).append(' ').append(legOffsets[i]);
        }
        if (handleErrors) {
            sb.append(" 1 handle_errors");
        }
        return sb.toString();
    }

    /** Whether leg {@code i} serves reads (healthy). */
    public boolean isLegHealthy(int i) {
        return legState.get(i) == HEALTHY;
    }

    /** Whether a rebuild is running or queued. */
    public boolean isRebuilding() {
        lock.lock();
        try {
            return rebuildLeg >= 0;
        } finally {
            lock.unlock();
        }
    }

    /** Waits until queued retries and any rebuild finished (the workqueues' flush). */
    public void flushWork() {
        rebuildQueue.flush();
        retryQueue.flush();
    }

    /** Leg errors seen since creation. */
    public long legErrors() {
        return legErrors.get();
    }

    /** Reads retried on another leg since creation. */
    public long readRetries() {
        return readRetries.get();
    }

    /** Rebuilds completed since creation. */
    public long rebuildsDone() {
        return rebuildsDone.get();
    }

    /** Drains the workqueues (a running rebuild finishes), then closes the pools. */
    @Override
    public void close() {
        Teardown teardown = new Teardown();
        for (AutoCloseable c : new AutoCloseable[] {rebuildQueue, retryQueue, pagePool, bioSet}) {
            teardown.close(c);
        }
        rebuildQueue = null;
        retryQueue = null;
        pagePool = null;
        bioSet = null;
        teardown.finish();
    }
}
