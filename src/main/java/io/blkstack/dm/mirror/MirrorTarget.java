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
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Mempool;
import io.blkstack.mem.Page;
import io.blkstack.wq.Work;
import io.blkstack.wq.Workqueue;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * {@code mirror core <#log args> <region size> [sync|nosync] <#mirrors> [<dev> <offset>]+
 * [<#features> handle_errors]}: RAID-1 over N legs (dm-raid1 with an in-memory {@code core} log).
 * This class owns the data path (map, per-leg clones, their completions, read retries), the
 * status and the teardown; the table line is {@link MirrorTable}, the legs' health
 * {@link MirrorLegs}, the region log {@link RegionLog}, the rebuild and its write fence
 * {@link MirrorResync}.
 *
 * <p><b>Writes</b> (and discards, write-zeroes) go to every leg that is not failed, one clone per
 * leg from this target's bio set, each submitted before the next is allocated (the set has a
 * rescuer, so a clone sitting on the submit loop's pending list is rescued rather than waited
 * for: rule 1 of DESIGN.md section 1). The write completes when every leg answered; it succeeds
 * if at least one leg succeeded. <b>Reads</b> go to the first healthy leg. A leg that returns an
 * error is marked failed ({@code D} in the status) and I/O continues on the others; a failed read
 * is retried on the next healthy leg from the {@code MEM_RECLAIM} workqueue {@code kmirrord}
 * (the completion only queues it: completions never block nor allocate with waiting, rule 2).
 * Reads pass an offer to take them by reference ({@link io.blkstack.bio.ReadReference}): the leg
 * clone is marked as retried on error, so a failed leg does not abort the offer and the retry on
 * the next leg may still be held; only when no leg is left does the READ fail. (A leg device that
 * splits the leg clone and fails one piece aborts the offer from that piece: the READ then fails
 * with EIO although the retry could have read it, and nothing waits.)
 * Errors are always handled as with {@code handle_errors}; the feature is accepted and reproduced.
 *
 * <p><b>Regions.</b> A region a write changed while some leg missed it is out of sync.
 * {@code status INFO} is dm-raid1's: {@code <#mirrors> <dev>... <in-sync>/<total regions> 1
 * <health chars> 1 core}.
 *
 * <p><b>Rebuild.</b> {@code message rebuild <leg>} (or {@code recover}: the first failed leg)
 * copies the whole target from a healthy leg onto the leg on the {@code MEM_RECLAIM} workqueue
 * {@code kmirror-rebuild} while writes go on (see {@link MirrorResync}).
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

    private final MirrorTable table;
    private final MirrorLegs legs;
    private final RegionLog log;
    private final SpinLock lock;
    private final BioEndIo legEndIo = this::legDone;
    private final Work retryWork;

    // Guarded by lock.
    private final BioList retries = new BioList();

    private BioSet bioSet;
    private Mempool<Page> pagePool;
    private Workqueue retryQueue;
    private Workqueue rebuildQueue;
    private MirrorResync resync;

    private final AtomicLong readRetries = new AtomicLong();

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

    /** Parses the table line strictly ({@link MirrorTable}), then builds the pools and workqueues. */
    @SuppressWarnings("this-escape")
    public MirrorTarget(TargetArgs args) throws TableException {
        super(args);
        this.table = MirrorTable.parse(args);
        this.legs = new MirrorLegs(table.devices, table.names, table.offsets);
        // nosync declares the legs in sync from the start, which is what a new, empty log says anyway.
        this.log = new RegionLog(table.regionSectors, args.length());
        Kernel kernel = args.kernel();
        String name = args.mappedDeviceName() + "@" + args.begin();
        this.lock = new SpinLock("mirror " + name);
        this.retryWork = new Work("kmirrord " + name, this::runRetries);
        try {
            this.bioSet = new BioSet(kernel, "mirror-" + name, kernel.reserves().targetBios(), 1, LegIo::new, true);
            this.pagePool = new Mempool<>(kernel, "mirror-" + name + "-pages", REBUILD_PAGES, kernel.pages());
            this.retryQueue = Workqueue.create(kernel, "kmirrord/" + name, Workqueue.MEM_RECLAIM, 1);
            this.rebuildQueue = Workqueue.create(kernel, "kmirror-rebuild/" + name, Workqueue.MEM_RECLAIM, 1);
            this.resync = new MirrorResync(name, args.length(), legs, log, bioSet, pagePool, rebuildQueue, lock,
                    this::issueHeldWrite);
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    // ---- data path ---------------------------------------------------------------------------

    /**
     * Flushes go to their leg if it is healthy (a failed leg has nothing to make durable, and a
     * recovering one is made durable by its resync's closing flush); reads to the first healthy
     * leg; writes to every live leg.
     */
    @Override
    public boolean passesReadReference() {
        return true;
    }

    @Override
    public MapResult map(Bio clone, TargetIo io) {
        if (clone.op() == BioOp.FLUSH) {
            int leg = io.bioNumber();
            if (leg < 0 || leg >= legs.count()) {
                throw new IllegalStateException("mirror: flush clone number " + leg + " of " + legs.count());
            }
            if (!legs.isHealthy(leg)) {
                clone.endio();
                return MapResult.SUBMITTED;
            }
            clone.setDevice(legs.device(leg)).setSector(0);
            return MapResult.REMAPPED;
        }
        MirrorIo mio = io.perBioData();
        if (clone.op() == BioOp.READ) {
            int leg = legs.firstHealthy();
            if (leg < 0) {
                return MapResult.KILL;
            }
            mio.pending.set(1);
            issueLeg(clone, leg);
            return MapResult.SUBMITTED;
        }
        long start = targetOffset(clone);
        int admitted = resync.admitWrite(clone, start, start + clone.sectorCount());
        if (admitted == MirrorResync.HELD) {
            return MapResult.SUBMITTED; // the resync issues it once the chunk under the fence is copied
        }
        mio.epoch = admitted;
        issueWrite(clone, mio);
        return MapResult.SUBMITTED;
    }

    /**
     * A leg's flush failed: the leg is failed (dm-raid1 counts it as a write error), and the flush
     * succeeds while another leg is healthy, as a write does.
     */
    @Override
    public void endIo(Bio clone, TargetIo io, BioStatus status) {
        if (clone.op() != BioOp.FLUSH || !status.isError()) {
            return;
        }
        legs.markFailed(io.bioNumber());
        if (legs.firstHealthy() >= 0) {
            clone.resetStatus();
        }
    }

    @Override
    protected Object newPerBioData() {
        return new MirrorIo();
    }

    /** Sends one clone of {@code clone} to {@code leg}; submitted before the caller allocates another. */
    private void issueLeg(Bio clone, int leg) {
        Bio legBio = Bio.clone(clone, Gfp.NOIO, bioSet);
        LegIo lio = legBio.frontPad();
        lio.leg = leg;
        legBio.setDevice(legs.device(leg));
        legBio.setSector(legs.offset(leg) + targetOffset(clone));
        legBio.setEndIo(legEndIo);
        legBio.setPrivateData(clone);
        if (clone.op() == BioOp.READ) {
            legBio.markRetriedOnError(); // a failed leg is retried on the next one (readLegDone)
        }
        Submit.submitBio(legBio);
    }

    /** Sends a write the resync's fence held, admitted in {@code epoch} (from the resync's work). */
    private void issueHeldWrite(Bio clone, int epoch) {
        TargetIo tio = clone.frontPad();
        MirrorIo mio = tio.perBioData();
        mio.epoch = epoch;
        issueWrite(clone, mio);
    }

    /** Sends a write to every leg that is not failed; the bias count keeps it open until all are sent. */
    private void issueWrite(Bio clone, MirrorIo mio) {
        mio.pending.set(1);
        mio.succeeded.set(0);
        mio.legFailures.set(0);
        for (int i = 0; i < legs.count(); i++) {
            if (!legs.isFailed(i)) {
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
            legs.markFailed(leg);
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
        if (legs.firstHealthy() < 0) {
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
        if (mio.legFailures.get() > 0 || legs.anyFailed()) {
            long start = targetOffset(clone);
            log.markOutOfSync(start, start + Math.max(1, clone.sectorCount()));
        }
        if (mio.succeeded.get() == 0) {
            clone.setStatus(BioStatus.IOERR);
        }
        resync.writeDone(mio.epoch);
        clone.endio();
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
            int leg = legs.firstHealthy();
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

    // ---- control path ------------------------------------------------------------------------

    /** {@code rebuild <leg>} or {@code recover} (see {@link MirrorResync#message}); the reply is empty. */
    @Override
    public String message(String[] args) {
        return resync.message(args);
    }

    /**
     * Holes pass up from the leg reads are served from (the first healthy one), so block status
     * says what a read of the range returns; with no healthy leg every range reads as data (and
     * fails).
     */
    @Override
    public boolean knowsAllocation() {
        int leg = legs.firstHealthy();
        return leg >= 0 && legs.device(leg).knowsAllocation();
    }

    @Override
    public long allocatedExtent(long offset, long maxSectors) {
        int leg = legs.firstHealthy();
        return leg < 0 ? maxSectors : legs.device(leg).allocatedExtent(legs.offset(leg) + offset, maxSectors);
    }

    @Override
    public int flushBioCount() {
        return legs.count();
    }

    @Override
    public List<BlockDevice> devices() {
        return legs.devices();
    }

    /** dm-raid1's form: {@code <#mirrors> <dev>... <in-sync>/<total> 1 <A|D per leg> 1 core}. */
    @Override
    public String statusInfo() {
        StringBuilder sb = new StringBuilder().append(legs.count());
        for (int i = 0; i < legs.count(); i++) {
            sb.append(' ').append(legs.name(i));
        }
        sb.append(' ').append(log.inSyncRegions()).append('/').append(log.regionCount()).append(" 1 ");
        return sb.append(legs.healthChars()).append(" 1 core").toString();
    }

    /** The table line's arguments exactly as given. */
    @Override
    public String statusTable() {
        return table.format();
    }

    /** Regions no leg missed a write to. */
    public long inSyncRegions() {
        return log.inSyncRegions();
    }

    /** Whether leg {@code i} serves reads (healthy). */
    public boolean isLegHealthy(int i) {
        return legs.isHealthy(i);
    }

    /** Whether a rebuild is running or queued. */
    public boolean isRebuilding() {
        return resync.isRunning();
    }

    /** Waits until queued retries and any rebuild finished (the workqueues' flush). */
    public void flushWork() {
        rebuildQueue.flush();
        retryQueue.flush();
    }

    /** Leg errors seen since creation. */
    public long legErrors() {
        return legs.errors();
    }

    /** Reads retried on another leg since creation. */
    public long readRetries() {
        return readRetries.get();
    }

    /** Rebuilds completed since creation. */
    public long rebuildsDone() {
        return resync.rebuildsDone();
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
        resync = null;
        teardown.finish();
    }
}
