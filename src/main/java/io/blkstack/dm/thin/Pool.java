package io.blkstack.dm.thin;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioList;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioState;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.bufio.Buffer;
import io.blkstack.bufio.BufferCache;
import io.blkstack.bufio.MetadataIoException;
import io.blkstack.dm.TargetIo;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Mutex;
import io.blkstack.kernel.SpinLock;
import io.blkstack.mem.Reservation;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import io.blkstack.dm.thin.metadata.AllocationGroups;
import io.blkstack.dm.thin.metadata.BTree;
import io.blkstack.dm.thin.metadata.CorruptMetadataException;
import io.blkstack.dm.thin.metadata.MetadataFullException;
import io.blkstack.dm.thin.metadata.ThinMetadata;
import io.blkstack.wq.DelayedWork;
import io.blkstack.wq.Work;
import io.blkstack.wq.Workqueue;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The runtime of one thin pool (dm-thin's {@code struct pool}): its metadata (through a
 * {@link BufferCache} on the metadata device), allocation groups over the data device, the open
 * thin devices, and one {@code MEM_RECLAIM} workqueue whose worker does everything that may block.
 *
 * <p><b>Data path.</b> {@code map} of a thin device remaps reads and writes of provisioned,
 * unshared blocks at once and zero-fills reads of holes; everything else (first writes, writes to
 * shared blocks, FUA writes, discards, flushes) is {@link #defer deferred} on an intrusive list
 * (no allocation; bounded by the clones the thin devices' bio sets hold) and handled by the
 * worker. Provisioning: reserve a block in an allocation group (under the group's lock), zero the
 * rest of the block (or copy the shared original), point the clone at the new block and submit
 * it with the pool's completion callback; that callback only moves the clone to the prepared list
 * (rule 2 of DESIGN.md section 1), and the worker inserts the mapping and then completes the
 * clone. The worker never waits on a bio queued behind itself: it is not inside a submit loop when
 * it waits for its own copy I/O, and the workqueue's rescuer keeps it moving under memory pressure.
 *
 * <p><b>Commits.</b> {@link #commit} flushes the data device and then commits the metadata (which
 * writes nodes, flushes, writes the superblock and flushes). It runs for every FLUSH and FUA bio
 * before the bio completes, for every message, and from a delayed work at most
 * {@link #COMMIT_PERIOD_NANOS} after the first uncommitted change. Data blocks freed in a
 * transaction return to their allocation group only after it committed, so a crash never finds a
 * committed mapping pointing at a block that was reused.
 *
 * <p><b>Metadata errors.</b> A metadata error (I/O, full, corrupt) fails the bio that hit it and
 * switches the pool to read-only with {@code needs_check} ({@link #metadataFailed}). A failed
 * write-back of a dirty metadata block (the buffer cache's shrinker work) hits no bio: the cache
 * reports it to the next commit, so the pool stays {@code rw} until then, at most one commit period
 * (dm-thin hears of dm-bufio's {@code async_write_error} the same way). Nothing is lost by waiting:
 * a dirty node is never one the committed trees use (nodes are copied on write), and no write
 * since the last commit was promised durable.
 *
 * <p><b>Locks.</b> {@code metaLock} (a mutex) serialises the pool's metadata updates with commits
 * and the list of blocks freed in the transaction; the order is {@code metaLock}, then a group
 * lock, then the metadata's own mutex. The spin lock guards the bio lists only.
 *
 * <p><b>Freed blocks and I/O in flight.</b> A data block freed by a discard, a delete or a broken
 * share is reused only after the transaction that freed it committed <em>and</em> every clone that
 * was in flight at that commit has completed ({@link DeferredSet}, dm-thin's {@code all_io_ds}):
 * a fast-path READ or WRITE remapped to the block before the discard may still be reading or
 * writing it, and a READ held by reference (sent from the file after its mapping) would otherwise
 * carry the next owner's data. So thin reads may be passed by reference.
 */
public final class Pool {

    /** The pool's mode as the status reports it. */
    public enum Mode {
        RW("rw"), READ_ONLY("ro"), OUT_OF_DATA_SPACE("out_of_data_space");

        private final String word;

        Mode(String word) {
            this.word = word;
        }

        /** The status word. */
        public String word() {
            return word;
        }
    }

    /**
     * The optional features of a pool table line.
     *
     * @param noSpaceTimeoutNanos how long writes wait for data space before they fail with
     *     ENOSPC (dm-thin's {@code no_space_timeout}); 0 waits for ever; ignored under
     *     {@code errorIfNoSpace}, which fails them at once
     */
    public record Features(boolean skipBlockZeroing, boolean ignoreDiscard, boolean errorIfNoSpace, boolean readOnly,
            long noSpaceTimeoutNanos) {

        /** Checks the timeout. */
        public Features {
            if (noSpaceTimeoutNanos < 0) {
                throw new IllegalArgumentException("no_space_timeout of " + noSpaceTimeoutNanos + " ns is negative");
            }
        }

        /** No feature set (the default no_space_timeout). */
        public static Features none() {
            return new Features(false, false, false, false, NO_SPACE_TIMEOUT_DEFAULT_NANOS);
        }
    }

    /** How long writes wait for data space unless the table says otherwise: 60 s, as dm-thin. */
    public static final long NO_SPACE_TIMEOUT_DEFAULT_NANOS = 60_000_000_000L;

    /** Metadata block size in bytes. */
    public static final int METADATA_BLOCK_SIZE = 4096;
    /** The longest a change waits for its commit without a flush: 1 s. */
    public static final long COMMIT_PERIOD_NANOS = 1_000_000_000L;
    /** Bios the worker handles in one run before yielding. */
    static final int BATCH_MAX = 16;
    /** Allocation groups the data space is cut into (fewer for small pools). */
    static final int GROUPS_MAX = 8;

    private final Kernel kernel;
    private final String name;
    private final BlockDevice metadataDevice;
    private final BlockDevice dataDevice;
    private final int blockSectors;
    private final int blockShift;
    private final long lowWaterBlocks;
    private final Features features;

    private BufferCache cache;
    private ThinMetadata metadata;
    private AllocationGroups groups;
    private Workqueue workqueue;
    private BioSet ioSet;
    private Page[] copyPages;
    /** The copy buffer's line in the arena's ledger. */
    private Reservation copyLedgerLine;
    private final Work work;
    private final DelayedWork commitTimer;
    /** A commit asked for off the worker ({@link #commitOnWorker}), run on it. */
    private final Work commitNow;
    /** What the last {@link #commitNow} returned. */
    private volatile BioStatus commitNowStatus = BioStatus.OK;
    private final DelayedWork noSpaceTimer;
    /** Names the out-of-space queue as the holder of the bios on it (for the checker and the watchdog). */
    private final Object noSpaceHolder;
    private final BioEndIo provisionEndIo = this::provisionDone;
    /** The worker's batch of completed provisionings (one worker at a time: the queue's maxActive is 1). */
    private final Bio[] finishing = new Bio[BATCH_MAX];

    private final SpinLock lock;
    private final Mutex metaLock;
    // Guarded by lock.
    private final BioList deferred = new BioList();
    private final BioList prepared = new BioList();
    private final BioList parked = new BioList();
    private final BioList noSpace = new BioList();
    // Guarded by metaLock.
    private final List<Long> freedInTransaction = new ArrayList<>();
    /** Committed free blocks waiting for the I/O that was in flight when they were freed. */
    private final ArrayDeque<FreedBatch> freedAwaitingIo = new ArrayDeque<>();
    private final Map<Long, ThinDevice> open = new HashMap<>();
    private boolean dirty;
    /** The data I/O in flight through the thin devices, by generation (dm-thin's {@code all_io_ds}). */
    private final DeferredSet allIo;
    /** Whether {@link #freedAwaitingIo} holds a batch (read without {@code metaLock} by I/O completions). */
    private volatile boolean awaitingIo;

    /** Blocks a commit freed, reusable once every I/O of generation {@code barrier} and older has ended. */
    private record FreedBatch(long barrier, List<Long> blocks) {
    }

    private volatile Mode mode = Mode.RW;
    /** Mode changes, no-space and metadata trouble: one line each (SLF4J, {@code io.blkstack.dm.thin.Pool}). */
    private final Logger log = LoggerFactory.getLogger(Pool.class);
    /**
     * Whether writes that need a block fail at once when there is none: the table's
     * {@code error_if_no_space}, or set when {@code no_space_timeout} expired (as dm-thin flips
     * {@code pf.error_if_no_space}); back to the table's value when space comes back. Changed
     * under {@code lock}, together with the out-of-space list.
     */
    private volatile boolean errorIfNoSpace;
    private volatile long noSpaceTimeoutNanos;
    /** When the pool last ran out of data space (kernel clock), for explanations. */
    private volatile long outOfSpaceSinceNanos;
    private volatile boolean belowLowWater;
    private volatile boolean noSpaceLogged;
    int refs;
    private boolean closed;

    private Pool(Kernel kernel, String name, BlockDevice metadataDevice, BlockDevice dataDevice, int blockSectors,
            long lowWaterBlocks, Features features) {
        this.kernel = kernel;
        this.name = name;
        this.metadataDevice = metadataDevice;
        this.dataDevice = dataDevice;
        this.blockSectors = blockSectors;
        this.blockShift = Integer.numberOfTrailingZeros(blockSectors);
        this.lowWaterBlocks = lowWaterBlocks;
        this.features = features;
        this.lock = new SpinLock("thin-pool " + name);
        this.metaLock = new Mutex("thin-pool " + name + " metadata");
        this.allIo = new DeferredSet("thin-pool " + name);
        this.work = new Work("thin-pool " + name + " worker", this::process);
        this.commitTimer = new DelayedWork("thin-pool " + name + " commit", this::periodicCommit);
        this.commitNow = new Work("thin-pool " + name + " commit now", () -> commitNowStatus = commit());
        this.noSpaceTimer = new DelayedWork("thin-pool " + name + " no_space_timeout", this::noSpaceTimedOut);
        this.noSpaceHolder = new Object() {
            @Override
            public String toString() {
                return describeNoSpaceQueue();
            }
        };
        this.errorIfNoSpace = features.errorIfNoSpace();
        this.noSpaceTimeoutNanos = features.noSpaceTimeoutNanos();
    }

    /** The kernel this pool lives in (the registry's table is per kernel). */
    Kernel kernel() {
        return kernel;
    }

    /**
     * Opens the pool's metadata (formatting it if the metadata device's block 0 is all zeros),
     * builds the allocation groups, the workqueue and the copy buffer. Waits for I/O: control path.
     *
     * @throws IllegalArgumentException if the metadata is corrupt or does not fit the data device
     */
    public static Pool open(Kernel kernel, String name, BlockDevice metadataDevice, BlockDevice dataDevice,
            int blockSectors, long lowWaterBlocks, Features features) {
        if (blockSectors < 8 || blockSectors > 2048 || Integer.bitCount(blockSectors) != 1) {
            throw new IllegalArgumentException("block size " + blockSectors + " sectors is not a power of two in 8..2048");
        }
        Pool p = new Pool(kernel, name, metadataDevice, dataDevice, blockSectors, lowWaterBlocks, features);
        try {
            p.build();
        } catch (RuntimeException e) {
            p.close();
            throw e;
        }
        return p;
    }

    private void build() {
        long dataBlocks = dataDevice.capacitySectors() >>> blockShift;
        if (dataBlocks <= 0) {
            throw new IllegalArgumentException("data device " + dataDevice.name() + " is smaller than one block of "
                    + blockSectors + " sectors");
        }
        cache = new BufferCache(metadataDevice, METADATA_BLOCK_SIZE);
        if (hasSuperblock(cache)) {
            metadata = openMetadata();
            if (metadata.dataBlockSectors() != blockSectors) {
                throw new IllegalArgumentException("metadata on " + metadataDevice.name() + " was formatted with blocks of "
                        + metadata.dataBlockSectors() + " sectors, the table says " + blockSectors);
            }
            if (metadata.dataBlockCount() > dataBlocks) {
                throw new IllegalArgumentException("metadata on " + metadataDevice.name() + " maps " + metadata.dataBlockCount()
                        + " data blocks, data device " + dataDevice.name() + " has only " + dataBlocks);
            }
        } else {
            metadata = ThinMetadata.format(cache, dataBlocks, blockSectors, BTree.maxCapacity(METADATA_BLOCK_SIZE));
        }
        long groupBlocks = Math.max(64, (metadata.dataBlockCount() + GROUPS_MAX - 1) / GROUPS_MAX);
        groups = new AllocationGroups(kernel, metadata, groupBlocks);
        metadata.tree().setSplitRunner(groups);
        workqueue = Workqueue.create(kernel, "kthinpool/" + name, Workqueue.MEM_RECLAIM, 1);
        int pages = (blockSectors << Bio.SECTOR_SHIFT) / Page.SIZE;
        ioSet = new BioSet(kernel, "thin-pool-" + name, 2, 2, null, false);
        copyPages = new Page[pages];
        for (int i = 0; i < pages; i++) {
            // Control path, but it must not wait for ever: a page the arena cannot give after one
            // round of reclaim is a pool that does not fit the memory, said at start.
            copyPages[i] = kernel.pages().alloc(Gfp.KERNEL | Gfp.NORETRY);
            if (copyPages[i] == null) {
                throw new IllegalArgumentException("no memory for the " + pages + "-page copy buffer ("
                        + kernel.pages().describeLedger() + "): give serve more memory");
            }
        }
        copyLedgerLine = kernel.pages().record("thin-pool " + name + " copy buffer", pages);
        if (features.readOnly()) {
            mode = Mode.READ_ONLY;
        } else if (metadata.needsCheck()) {
            mode = Mode.READ_ONLY;
            log.warn("thin-pool " + name + ": metadata on " + metadataDevice.name() + " has needs_check"
                    + " set (a metadata error was hit); serving read-only until 'blkstack thin check"
                    + " --clear-needs-check' passes");
        }
        checkLowWater();
    }

    /**
     * Opens existing metadata. Metadata that fails a check (a checksum, a node's shape) is refused:
     * neither read-write nor read-only, since a bad node may hide mappings (dm-thin's
     * {@code needs_check}, with the block named). Format-1 metadata is migrated once, with a message,
     * unless the pool is {@code read_only}.
     */
    private ThinMetadata openMetadata() {
        ThinMetadata md;
        try {
            md = ThinMetadata.open(cache, !features.readOnly()); // a read_only pool reads format 1 as it is
        } catch (CorruptMetadataException e) {
            throw new IllegalArgumentException("metadata on " + metadataDevice.name() + " fails its check: " + e.getMessage()
                    + "; refusing to open pool " + name + " (run 'blkstack thin check' on it)", e);
        }
        if (md.migratedFrom() != 0) {
            log.warn("thin-pool " + name + ": metadata on " + metadataDevice.name() + " migrated from"
                    + " format " + md.migratedFrom() + " to format " + ThinMetadata.VERSION + " (crc32c checksums on every"
                    + " block); blkstack versions before it cannot open it any more");
        }
        return md;
    }

    /**
     * Whether block 0 holds anything: only an all-zero block 0 is formatted (as dm-thin does), so a
     * superblock with a damaged magic is refused by the check instead of being formatted over.
     */
    private static boolean hasSuperblock(BufferCache cache) {
        Buffer sb = cache.read(0);
        try {
            for (int off = 0; off < sb.size(); off += Long.BYTES) {
                if (sb.getLong(off) != 0) {
                    return true;
                }
            }
            return false;
        } finally {
            cache.release(sb);
        }
    }

    // ---- thin devices (control path) --------------------------------------------------------------

    /**
     * Opens thin device {@code devId} covering {@code virtualBlocks} blocks. A device the metadata
     * does not have is created first (a blkstack convenience, see {@code ThinTarget}): empty, or
     * as a snapshot of {@code snapOf} when that is 0 or more.
     */
    public ThinDevice openThin(long devId, long virtualBlocks, long snapOf) {
        boolean created = false;
        ThinDevice dev;
        metaLock.lock();
        try {
            if (!metadata.deviceExists(devId)) {
                if (mode == Mode.READ_ONLY) {
                    throw new IllegalArgumentException("thin device " + devId + " does not exist and pool " + name + " is read-only");
                }
                if (snapOf >= 0) {
                    createSnapLocked(devId, snapOf);
                } else {
                    metadata.createThin(devId);
                }
                created = true;
                dirty = true;
            }
            dev = open.get(devId);
            if (dev != null) {
                if (dev.virtualBlocks() != virtualBlocks) {
                    throw new IllegalArgumentException("thin device " + devId + " is already open with " + dev.virtualBlocks()
                            + " blocks, not " + virtualBlocks);
                }
            } else {
                dev = new ThinDevice(devId, virtualBlocks);
                loadIndex(dev);
                open.put(devId, dev);
            }
            dev.openCount++;
        } finally {
            metaLock.unlock();
        }
        if (created) {
            requireOk(commitOnWorker(), "commit after creating thin device " + devId);
        }
        return dev;
    }

    /** Reads the device's mappings into its index, marking blocks with other references shared. */
    private void loadIndex(ThinDevice dev) {
        long from = 0;
        while (from < dev.virtualBlocks()) {
            List<long[]> batch = metadata.mappings(dev.devId(), from, dev.virtualBlocks() - 1, 1024);
            if (batch.isEmpty()) {
                return;
            }
            for (long[] m : batch) {
                boolean shared = metadata.refCount(m[1]) > 1;
                dev.setEntry(m[0], ThinDevice.pack(m[1], shared ? ThinDevice.SHARED : 0));
            }
            from = batch.get(batch.size() - 1)[0] + 1;
        }
    }

    /** Drops one opener of a thin device. */
    public void closeThin(ThinDevice dev) {
        metaLock.lock();
        try {
            if (--dev.openCount == 0) {
                open.remove(dev.devId());
            }
        } finally {
            metaLock.unlock();
        }
    }

    /**
     * Handles a pool message: {@code create_thin ID}, {@code create_snap ID ORIGIN_ID},
     * {@code delete ID}, {@code set_transaction_id OLD NEW} (refused unless OLD is the current id);
     * each is committed before the reply, as dm-thin's {@code pool_message} does.
     */
    public String message(String[] args) {
        String verb = args[0];
        if (mode == Mode.READ_ONLY) {
            throw new IllegalArgumentException("thin-pool " + name + " is read-only; refusing '" + String.join(" ", args) + "'");
        }
        metaLock.lock();
        try {
            switch (verb) {
                case "create_thin" -> {
                    requireWords(args, 2, "create_thin <dev id>");
                    long id = deviceId(args, 1);
                    metadata.createThin(id);
                }
                case "create_snap" -> {
                    requireWords(args, 3, "create_snap <dev id> <origin id>");
                    createSnapLocked(deviceId(args, 1), deviceId(args, 2));
                }
                case "delete" -> {
                    requireWords(args, 2, "delete <dev id>");
                    deleteLocked(deviceId(args, 1));
                }
                case "set_transaction_id" -> {
                    requireWords(args, 3, "set_transaction_id <current id> <new id>");
                    metadata.setTransactionId(transactionId(args, 1), transactionId(args, 2));
                }
                default -> throw new IllegalArgumentException("thin-pool: unknown message '" + String.join(" ", args)
                        + "' (create_thin, create_snap, delete, set_transaction_id)");
            }
            dirty = true;
        } finally {
            metaLock.unlock();
        }
        requireOk(commitOnWorker(), "commit after '" + String.join(" ", args) + "'");
        return "";
    }

    private void createSnapLocked(long snapId, long originId) {
        if (open.containsKey(snapId)) {
            throw new IllegalArgumentException("thin device " + snapId + " is open");
        }
        metadata.createSnap(snapId, originId);
        ThinDevice origin = open.get(originId);
        if (origin != null) {
            origin.markAllShared();
        }
    }

    private void deleteLocked(long devId) {
        if (open.containsKey(devId)) {
            throw new IllegalArgumentException("thin device " + devId + " is open; remove its thin target first");
        }
        if (!metadata.deviceExists(devId)) {
            throw new IllegalArgumentException("thin device " + devId + " does not exist");
        }
        List<long[]> mapped = metadata.mappings(devId, 0, ThinMetadata.VIRTUAL_BLOCK_MAX, Integer.MAX_VALUE);
        metadata.deleteThin(devId);
        for (long[] m : mapped) {
            if (metadata.refCount(m[1]) == 0) {
                freedInTransaction.add(m[1]);
            }
        }
    }

    private static void requireWords(String[] args, int n, String usage) {
        if (args.length != n) {
            throw new IllegalArgumentException("thin-pool: '" + String.join(" ", args) + "': usage " + usage);
        }
    }

    private static long deviceId(String[] args, int i) {
        try {
            long id = Long.parseLong(args[i]);
            if (id < 0 || id > ThinMetadata.DEVICE_ID_MAX) {
                throw new NumberFormatException();
            }
            return id;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("thin-pool: '" + args[i] + "' is not a device id (0.." + ThinMetadata.DEVICE_ID_MAX + ")");
        }
    }

    private static long transactionId(String[] args, int i) {
        try {
            long id = Long.parseLong(args[i]);
            if (id < 0) {
                throw new NumberFormatException();
            }
            return id;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("thin-pool: '" + args[i] + "' is not a transaction id (0.."
                    + Long.MAX_VALUE + ")");
        }
    }

    private static void requireOk(BioStatus status, String what) {
        if (status.isError()) {
            throw new IllegalArgumentException(what + " failed: " + status.errnoName());
        }
    }

    // ---- data path: deferral (atomic context) -------------------------------------------------------

    /**
     * A thin device's clone enters the pool's in-flight I/O before it reads its block's mapping;
     * returns the generation to give {@link #leaveIo} when it completes. Never blocks.
     */
    public long enterIo() {
        return allIo.enter();
    }

    /**
     * A clone that {@link #enterIo entered} completed (atomic context): if that lets blocks freed
     * under it be reused, the worker hands them back.
     */
    public void leaveIo(long generation) {
        if (allIo.leave(generation) && awaitingIo) {
            workqueue.queue(work);
        }
    }

    /** Hands a clone to the worker; never blocks. */
    public void defer(Bio clone) {
        lock.lock();
        deferred.add(clone);
        lock.unlock();
        workqueue.queue(work);
    }

    /** The pool's completion of a data write it submitted: only queue the clone for the worker (rule 2). */
    private void provisionDone(Bio clone) {
        lock.lock();
        prepared.add(clone);
        lock.unlock();
        workqueue.queue(work);
    }

    // ---- the worker ------------------------------------------------------------------------------

    /**
     * The worker: completes prepared provisionings first, as one batch (their mapping inserts
     * under one metadata lock, one commit for the FUA writes among them), then handles deferred
     * bios, at most {@link #BATCH_MAX} bios in all before yielding.
     */
    private void process() {
        if (awaitingIo) {
            releaseFreedAfterIo();
        }
        int count = 0;
        lock.lock();
        for (Bio b; count < BATCH_MAX && (b = prepared.pop()) != null; ) {
            finishing[count++] = b;
        }
        lock.unlock();
        if (count > 0) {
            finishBatch(count);
        }
        for (int n = count; n < BATCH_MAX; n++) {
            lock.lock();
            Bio bio = deferred.pop();
            lock.unlock();
            if (bio == null) {
                break;
            }
            try {
                handle(bio);
            } catch (MetadataFullException | MetadataIoException | CorruptMetadataException e) {
                metadataFailed(e);
                fail(bio, BioStatus.IOERR);
            }
        }
        lock.lock();
        boolean more = !prepared.isEmpty() || !deferred.isEmpty();
        lock.unlock();
        if (more) {
            workqueue.queue(work);
        }
    }

    /** Handles one deferred clone by its operation. */
    private void handle(Bio clone) {
        TargetIo tio = clone.frontPad();
        ThinBioState st = tio.perBioData();
        if (clone.sizeBytes() == 0) {
            BioStatus s = commit();
            if (s.isError()) {
                clone.setStatus(s);
            }
            clone.endio();
            return;
        }
        if (mode == Mode.READ_ONLY) {
            fail(clone, BioStatus.IOERR);
            return;
        }
        switch (clone.op()) {
            case DISCARD -> discard(clone, st);
            case WRITE, WRITE_ZEROES -> write(clone, st);
            default -> fail(clone, BioStatus.NOTSUPP);
        }
    }

    /** A write the fast path could not take: provision, break sharing, or (FUA) just track it. */
    private void write(Bio clone, ThinBioState st) {
        ThinDevice dev = st.device;
        long entry = dev.entry(st.vblock);
        if ((entry & ThinDevice.BUSY) != 0) {
            park(clone);
            return;
        }
        long block = ThinDevice.dataBlockOf(entry);
        if (block >= 0 && (entry & ThinDevice.SHARED) != 0 && refCount(block) <= 1) {
            entry = ThinDevice.pack(block, 0);
            dev.setEntry(st.vblock, entry);
        }
        if (block >= 0 && (entry & ThinDevice.SHARED) == 0) {
            // In flight to a block that stays mapped: the worker is the only one that unmaps, so
            // entering here, after the entry was read, is in time for the next discard's barrier.
            st.ioGeneration = allIo.enter();
            remap(clone, block);
            if (clone.hasFlag(BioFlags.FUA)) {
                hook(clone, st);
            }
            Submit.submitBio(clone);
            return;
        }
        if (block < 0 && clone.op() == BioOp.WRITE_ZEROES) {
            clone.endio(); // a hole reads as zeros already
            return;
        }
        long fresh = allocate(clone, dev, st.vblock);
        if (fresh < 0) {
            return;
        }
        st.newBlock = fresh;
        st.oldBlock = block;
        dev.setEntry(st.vblock, block < 0 ? ThinDevice.BUSY : ThinDevice.pack(block, ThinDevice.SHARED | ThinDevice.BUSY));
        boolean partial = clone.sectorCount() < blockSectors;
        if (partial && block >= 0) {
            BioStatus s = blockIo(BioOp.READ, block);
            if (!s.isError()) {
                s = blockIo(BioOp.WRITE, fresh);
            }
            if (s.isError()) {
                hook(clone, st);
                clone.setStatus(s);
                finishOne(clone);
                return;
            }
        }
        remap(clone, fresh);
        hook(clone, st);
        if (partial && block < 0 && !features.skipBlockZeroing()) {
            zeroUncovered(clone, fresh);
        }
        Submit.submitBio(clone);
    }

    /**
     * Zeroes the parts of new block {@code fresh} that the (remapped, hooked) clone does not write,
     * alongside the clone (dm-thin's overwrite optimisation, taken one step further: a write that
     * covers the whole block zeroes nothing, and a partial one zeroes only what it leaves out, so
     * the block never holds the data of its previous owner). The zeroing bios are chained to the
     * clone, so the pool's completion, and with it the mapping insert, runs only after the data and
     * the zeros are all on the device; an error of either fails the clone and the block is given
     * back. The ranges are disjoint from the clone's, so their order does not matter.
     *
     * <p>Each zeroing bio is submitted before the next is allocated (rule 1 of DESIGN.md section
     * 1); the worker is outside any submit loop here, and the pool's bio set gets its bios back when
     * the device completes them, without the worker.
     */
    private void zeroUncovered(Bio clone, long fresh) {
        long blockStart = fresh << blockShift;
        long blockEnd = blockStart + blockSectors;
        long headSectors = clone.sector() - blockStart;
        long tailSectors = blockEnd - clone.endSector();
        if (headSectors < 0 || tailSectors < 0 || headSectors + tailSectors >= blockSectors) {
            throw new IllegalStateException("thin-pool " + name + ": clone " + clone + " is not a partial write inside block "
                    + fresh);
        }
        if (headSectors > 0) {
            zeroChained(clone, blockStart, headSectors);
        }
        if (tailSectors > 0) {
            zeroChained(clone, clone.endSector(), tailSectors);
        }
    }

    /** Submits a WRITE_ZEROES of {@code sectors} at {@code sector} of the data device, chained to {@code parent}. */
    private void zeroChained(Bio parent, long sector, long sectors) {
        Bio bio = ioSet.alloc(Gfp.NOIO, 0);
        bio.init(dataDevice, BioOp.WRITE_ZEROES, 0, sector);
        bio.setSizeBytes(Math.toIntExact(sectors << Bio.SECTOR_SHIFT));
        Bio.chain(bio, parent);
        Submit.submitBio(bio);
    }

    /**
     * Allocates a data block for the clone from an allocation group (holding the group's lock).
     * Out of space, a commit that frees blocks is tried once; then the clone fails with NOSPC
     * ({@code error_if_no_space}) or waits on the out-of-space list. Returns -1 when the clone was
     * taken care of that way.
     */
    private long allocate(Bio clone, ThinDevice dev, long vblock) {
        int preferred = (int) ((dev.devId() * 7 + (vblock >>> 4)) % Math.max(1, groups.groupCount()));
        for (int attempt = 0; attempt < 2; attempt++) {
            boolean freeAfterCommit;
            metaLock.lock();
            try {
                try (AllocationGroups.Hold hold = groups.reserve(1, preferred)) {
                    if (hold != null) {
                        long b = hold.allocate();
                        dirty = true;
                        scheduleCommit();
                        checkLowWater();
                        return b;
                    }
                }
                freeAfterCommit = !freedInTransaction.isEmpty();
            } finally {
                metaLock.unlock();
            }
            if (!freeAfterCommit || commit().isError()) {
                break;
            }
        }
        outOfSpace(clone);
        return -1;
    }

    /**
     * No data space: fail with NOSPC, or queue until a commit frees blocks. Entering the
     * out-of-data-space mode arms the {@code no_space_timeout} timer (dm-thin's
     * {@code set_pool_mode}), so a queued write waits at most that long: every wait has an end
     * unless the table asked for {@code no_space_timeout=0}.
     */
    private void outOfSpace(Bio clone) {
        boolean entered = false;
        if (mode == Mode.RW) {
            mode = Mode.OUT_OF_DATA_SPACE;
            outOfSpaceSinceNanos = kernel.scheduler().nanoTime();
            entered = true;
            logModeChange(Mode.RW, Mode.OUT_OF_DATA_SPACE, "no free data block");
        }
        boolean fail;
        lock.lock();
        fail = errorIfNoSpace;
        if (!fail) {
            clone.setState(BioState.QUEUED, noSpaceHolder);
            noSpace.add(clone);
        }
        lock.unlock();
        long timeout = noSpaceTimeoutNanos;
        if (entered && !fail && timeout > 0 && !closed) {
            workqueue.queueDelayed(noSpaceTimer, timeout);
        }
        if (!noSpaceLogged) {
            noSpaceLogged = true;
            log.warn("thin-pool " + name + ": out of data space: "
                    + (fail ? "failing writes that need a block with ENOSPC"
                            : timeout > 0 ? "queueing writes that need a block for at most " + seconds(timeout)
                                    + " s (no_space_timeout)"
                                    : "queueing writes that need a block until blocks are freed (no_space_timeout=0)"));
        }
        if (fail) {
            fail(clone, BioStatus.NOSPC);
        }
    }

    /**
     * The {@code no_space_timeout} work (dm-thin's {@code do_no_space_timeout}): if the pool is
     * still out of data space, writes that need a block fail with ENOSPC from now on, and so do
     * those queued, until a commit frees blocks. A run left over from an earlier shortage (its
     * timer fired just before space came back, and the pool ran out again since) re-arms for the
     * rest of the current one instead.
     */
    private void noSpaceTimedOut() {
        BioList expired = new BioList();
        long timeout = noSpaceTimeoutNanos;
        long left = outOfSpaceSinceNanos + timeout - kernel.scheduler().nanoTime();
        lock.lock();
        boolean act = mode == Mode.OUT_OF_DATA_SPACE && !errorIfNoSpace && timeout > 0;
        boolean early = act && left > 0;
        if (act && !early) {
            errorIfNoSpace = true;
            for (Bio b = noSpace.pop(); b != null; b = noSpace.pop()) {
                expired.add(b);
            }
        }
        lock.unlock();
        if (early && !closed) {
            workqueue.queueDelayed(noSpaceTimer, left);
        }
        if (!act || early) {
            return;
        }
        kernel.counters().get("thin.no-space-timeouts").incrementAndGet();
        log.warn("thin-pool " + name + ": no_space_timeout of " + seconds(noSpaceTimeoutNanos)
                + " s expired: failing " + expired.size() + " queued write(s) and new ones that need space with ENOSPC");
        for (Bio b = expired.pop(); b != null; b = expired.pop()) {
            fail(b, BioStatus.NOSPC);
        }
    }

    /**
     * Fails every write waiting for data space with {@code status} now (a server whose drain
     * deadline passed). Later writes are not affected. Returns how many were failed. Never blocks.
     */
    public int failWaitingForSpace(BioStatus status) {
        BioList failed = new BioList();
        lock.lock();
        for (Bio b = noSpace.pop(); b != null; b = noSpace.pop()) {
            failed.add(b);
        }
        lock.unlock();
        int n = 0;
        for (Bio b = failed.pop(); b != null; b = failed.pop()) {
            fail(b, status);
            n++;
        }
        return n;
    }

    /** Sets the {@code no_space_timeout}; 0 waits for ever. Takes effect the next time the pool runs out of space. */
    public void setNoSpaceTimeoutNanos(long nanos) {
        if (nanos < 0) {
            throw new IllegalArgumentException("no_space_timeout of " + nanos + " ns is negative");
        }
        noSpaceTimeoutNanos = nanos;
    }

    /** The {@code no_space_timeout} in nanoseconds; 0 waits for ever. */
    public long noSpaceTimeoutNanos() {
        return noSpaceTimeoutNanos;
    }

    /** The out-of-space queue as a holder: what waits there, since when, and until when. */
    private String describeNoSpaceQueue() {
        long timeout = noSpaceTimeoutNanos;
        long waited = kernel.scheduler().nanoTime() - outOfSpaceSinceNanos;
        return "thin-pool " + name + "'s out-of-data-space queue (" + groups.freeBlocks() + " free of "
                + metadata.dataBlockCount() + " data blocks, out of space for " + waited / 1_000_000 + " ms, "
                + (timeout > 0 ? "no_space_timeout " + seconds(timeout) + " s" : "no_space_timeout=0: waits until blocks are freed")
                + ")";
    }

    private static String seconds(long nanos) {
        return nanos % 1_000_000_000L == 0 ? Long.toString(nanos / 1_000_000_000L)
                : String.format(java.util.Locale.ROOT, "%.3f", nanos / 1e9);
    }

    /** Discards whole blocks: unmap and drop the reference; partial-block discards are no-ops. */
    private void discard(Bio clone, ThinBioState st) {
        ThinDevice dev = st.device;
        long entry = dev.entry(st.vblock);
        if ((entry & ThinDevice.BUSY) != 0) {
            park(clone);
            return;
        }
        if (clone.sectorCount() == blockSectors && ThinDevice.dataBlockOf(entry) >= 0) {
            metaLock.lock();
            try {
                long old = metadata.removeMapping(dev.devId(), st.vblock);
                if (old >= 0 && metadata.refCount(old) == 0) {
                    freedInTransaction.add(old);
                }
                dev.setEntry(st.vblock, 0);
                dirty = true;
            } finally {
                metaLock.unlock();
            }
            scheduleCommit();
        }
        clone.endio();
    }

    /** One pool-submitted write completed on the worker outside a batch (a failed copy). */
    private void finishOne(Bio clone) {
        finishing[0] = clone;
        finishBatch(1);
    }

    /**
     * Pool-submitted writes completed (now on the worker), {@code finishing[0..count)}: inserts or
     * undoes their mappings under one hold of the metadata lock, commits once if any of them is a
     * FUA write, and completes them. A metadata error fails the clone that hit it (its block stays
     * busy: the pool is read-only from then on).
     */
    private void finishBatch(int count) {
        boolean provisioned = false;
        boolean fua = false;
        metaLock.lock();
        try {
            for (int i = 0; i < count; i++) {
                Bio clone = finishing[i];
                TargetIo tio = clone.frontPad();
                ThinBioState st = tio.perBioData();
                boolean ok = !clone.status().isError();
                fua |= ok && clone.hasFlag(BioFlags.FUA);
                if (st.newBlock < 0) {
                    continue;
                }
                provisioned = true;
                try {
                    updateMapping(st, ok);
                } catch (MetadataFullException | MetadataIoException | CorruptMetadataException e) {
                    metadataFailed(e);
                    clone.setStatus(BioStatus.IOERR);
                }
            }
        } finally {
            metaLock.unlock();
        }
        if (provisioned) {
            scheduleCommit();
            unpark();
        }
        BioStatus committed = fua ? commit() : BioStatus.OK;
        for (int i = 0; i < count; i++) {
            Bio clone = finishing[i];
            finishing[i] = null;
            if (committed.isError() && clone.hasFlag(BioFlags.FUA) && !clone.status().isError()) {
                clone.setStatus(committed);
            }
            TargetIo tio = clone.frontPad();
            unhookAndEnd(clone, tio.perBioData());
        }
    }

    /** Under {@code metaLock}: inserts the new block's mapping ({@code ok}) or gives the block back. */
    private void updateMapping(ThinBioState st, boolean ok) {
        ThinDevice dev = st.device;
        if (ok) {
            metadata.insertMapping(dev.devId(), st.vblock, st.newBlock);
            if (st.oldBlock >= 0 && metadata.refCount(st.oldBlock) == 0) {
                freedInTransaction.add(st.oldBlock);
            }
            dev.setEntry(st.vblock, ThinDevice.pack(st.newBlock, 0));
        } else {
            metadata.releaseDataBlock(st.newBlock);
            freedInTransaction.add(st.newBlock);
            dev.setEntry(st.vblock, st.oldBlock < 0 ? 0 : ThinDevice.pack(st.oldBlock, ThinDevice.SHARED));
        }
        dirty = true;
    }

    // ---- commit -------------------------------------------------------------------------------------

    /**
     * {@link #commit} for a caller that is not the pool's worker (a message, a thin device created
     * on first use, close): run on the worker and waited for. A commit must not run beside the
     * worker: between its data flush and its metadata commit the worker could insert the mapping
     * of a write that completed after the flush began, and the metadata would then make durable
     * a mapping whose data (and zeroing) may not be, so that after a power cut the volume could
     * read the block's previous owner's data. dm-thin flushes the data device inside its metadata
     * commit, under the lock that inserts take, for the same reason. On the worker (its queue runs
     * one item at a time) no insert comes between the two.
     */
    private BioStatus commitOnWorker() {
        workqueue.queue(commitNow); // false if already pending: that run starts after this call too
        commitNow.flush();
        return commitNowStatus;
    }

    /**
     * Makes every completed write durable: flushes the data device, commits the metadata if it
     * changed, then returns the blocks freed in the committed transaction to their groups and
     * retries writes waiting for space. Waits for I/O. Runs on the pool's worker: other callers
     * use {@link #commitOnWorker}, so that no mapping is inserted between the two steps.
     */
    BioStatus commit() {
        if (mode == Mode.READ_ONLY) {
            return BioStatus.OK;
        }
        BioStatus s = flushData();
        if (s.isError()) {
            return s;
        }
        List<Long> freed;
        metaLock.lock();
        try {
            if (dirty) {
                metadata.commit();
                dirty = false;
            }
            freed = freedInTransaction.isEmpty() ? List.of() : new ArrayList<>(freedInTransaction);
            freedInTransaction.clear();
        } catch (MetadataIoException | MetadataFullException | CorruptMetadataException e) {
            metadataFailed(e);
            return BioStatus.IOERR;
        } finally {
            metaLock.unlock();
        }
        if (!freed.isEmpty()) {
            // Reusable once the I/O that could still read the old mappings has ended (a READ held
            // by reference ends after its payload was sent); queued first, so the check below also
            // sees I/O that ended before the flag was up.
            long barrier = allIo.barrier();
            metaLock.lock();
            freedAwaitingIo.add(new FreedBatch(barrier, freed));
            awaitingIo = true;
            metaLock.unlock();
            releaseFreedAfterIo();
        }
        return BioStatus.OK;
    }

    /**
     * Hands the batches of freed blocks whose I/O has all ended to their groups (worker or
     * commit: process context).
     */
    private void releaseFreedAfterIo() {
        List<Long> ready = null;
        metaLock.lock();
        try {
            while (!freedAwaitingIo.isEmpty() && allIo.passed(freedAwaitingIo.peekFirst().barrier())) {
                List<Long> blocks = freedAwaitingIo.pollFirst().blocks();
                if (ready == null) {
                    ready = new ArrayList<>(blocks);
                } else {
                    ready.addAll(blocks);
                }
            }
            awaitingIo = !freedAwaitingIo.isEmpty();
        } finally {
            metaLock.unlock();
        }
        if (ready != null) {
            blocksReleased(ready);
        }
    }

    /** Committed free blocks go back to their groups; writes waiting for space are retried. */
    private void blocksReleased(List<Long> freed) {
        for (long b : freed) {
            groups.blockFreed(b);
        }
        checkLowWater();
        lock.lock();
        boolean waiting = !noSpace.isEmpty();
        for (Bio b = noSpace.pop(); b != null; b = noSpace.pop()) {
            b.setState(BioState.IN_FLIGHT, this);
            deferred.add(b);
        }
        boolean backToRw = mode == Mode.OUT_OF_DATA_SPACE;
        if (backToRw) {
            mode = Mode.RW;
            errorIfNoSpace = features.errorIfNoSpace();
            noSpaceLogged = false;
        }
        lock.unlock();
        if (backToRw) {
            logModeChange(Mode.OUT_OF_DATA_SPACE, Mode.RW, freed.size() + " data block(s) freed");
        }
        noSpaceTimer.cancelTimer();
        if (waiting) {
            workqueue.queue(work);
        }
    }

    /** The delayed work: commits what changed since the last commit. */
    private void periodicCommit() {
        if (dirty) {
            commit();
        }
    }

    private void scheduleCommit() {
        if (!closed) {
            workqueue.queueDelayed(commitTimer, COMMIT_PERIOD_NANOS);
        }
    }

    /**
     * A metadata error (I/O, full, corrupt): read-only from now on, and {@code needs_check} in the
     * committed superblock so the next start does not write either (dm-thin's abort_transaction and
     * set_needs_check). Setting the flag is best effort: the device may be what failed.
     */
    private void metadataFailed(RuntimeException e) {
        if (mode != Mode.READ_ONLY) {
            logModeChange(mode, Mode.READ_ONLY, "metadata failure");
            mode = Mode.READ_ONLY;
            log.warn("thin-pool " + name + ": metadata failure, switching to read-only: " + e.getMessage());
            try {
                metadata.setNeedsCheck(true);
            } catch (MetadataIoException | CorruptMetadataException again) {
                log.warn("thin-pool " + name + ": could not set needs_check: " + again.getMessage());
            }
        }
    }

    /** One log line per mode change, in dm-thin's status words. */
    private void logModeChange(Mode from, Mode to, String why) {
        log.info("thin-pool {}: mode {} -> {} ({})", name, from.word(), to.word(), why);
    }

    private void checkLowWater() {
        boolean below = groups.freeBlocks() <= lowWaterBlocks;
        if (below && !belowLowWater) {
            log.warn("thin-pool " + name + ": reached low water mark of " + lowWaterBlocks
                    + " free data blocks (" + groups.freeBlocks() + " free)");
        }
        belowLowWater = below;
    }

    // ---- worker I/O helpers ---------------------------------------------------------------------------

    /** Flushes the data device and waits. */
    private BioStatus flushData() {
        Bio bio = ioSet.alloc(Gfp.NOIO, 0);
        bio.init(dataDevice, BioOp.FLUSH, 0, 0);
        BioStatus s = Submit.submitAndWaitStatus(bio);
        bio.put();
        return s;
    }

    /** Reads a whole data block into the copy pages, writes them to one, or zeroes one; waits. */
    private BioStatus blockIo(BioOp op, long block) {
        Bio bio = ioSet.alloc(Gfp.NOIO, op == BioOp.WRITE_ZEROES ? 0 : copyPages.length);
        bio.init(dataDevice, op, 0, block << blockShift);
        if (op == BioOp.WRITE_ZEROES) {
            bio.setSizeBytes(blockSectors << Bio.SECTOR_SHIFT);
        } else {
            for (Page p : copyPages) {
                if (!bio.addPage(p, Page.SIZE, 0)) {
                    throw new IllegalStateException("copy bio of " + copyPages.length + " pages refused a page");
                }
            }
        }
        BioStatus s = Submit.submitAndWaitStatus(bio);
        bio.put();
        return s;
    }

    private void remap(Bio clone, long block) {
        long within = clone.sector() & (blockSectors - 1);
        clone.setDevice(dataDevice).setSector((block << blockShift) + within);
    }

    /** Installs the pool's completion so the worker sees the clone before its original does. */
    private void hook(Bio clone, ThinBioState st) {
        st.savedEndIo = clone.endIo();
        clone.setEndIo(provisionEndIo);
    }

    private void unhookAndEnd(Bio clone, ThinBioState st) {
        if (st.savedEndIo != null) {
            clone.setEndIo(st.savedEndIo);
            st.savedEndIo = null;
        }
        clone.endio();
    }

    private void fail(Bio clone, BioStatus status) {
        TargetIo tio = clone.frontPad();
        ThinBioState st = tio.perBioData();
        clone.setStatus(status);
        unhookAndEnd(clone, st);
    }

    private void park(Bio clone) {
        lock.lock();
        parked.add(clone);
        lock.unlock();
    }

    /** Moves every parked bio back to the deferred list (a provisioning they waited for is done). */
    private void unpark() {
        lock.lock();
        for (Bio b = parked.pop(); b != null; b = parked.pop()) {
            deferred.add(b);
        }
        lock.unlock();
    }

    private long refCount(long block) {
        metaLock.lock();
        try {
            return metadata.refCount(block);
        } finally {
            metaLock.unlock();
        }
    }

    // ---- status -------------------------------------------------------------------------------------

    /**
     * The dm-style status line: {@code <transaction id> <used>/<total metadata blocks>
     * <used>/<total data blocks> - rw|ro|out_of_data_space discard_passdown|ignore_discard
     * queue_if_no_space|error_if_no_space - low_water|-}.
     */
    public String statusInfo() {
        metaLock.lock();
        try {
            return metadata.transactionId() + " " + metadata.usedMetadataBlocks() + "/" + metadata.metadataBlockCount() + " "
                    + metadata.usedDataBlocks() + "/" + metadata.dataBlockCount() + " - " + mode.word() + " "
                    + (features.ignoreDiscard() ? "ignore_discard" : "discard_passdown") + " "
                    + (errorIfNoSpace ? "error_if_no_space" : "queue_if_no_space") + " - "
                    + (belowLowWater ? "low_water" : "-");
        } finally {
            metaLock.unlock();
        }
    }

    /** Runs {@link ThinMetadata#check} on the current transaction. */
    public List<String> check() {
        metaLock.lock();
        try {
            return metadata.check();
        } finally {
            metaLock.unlock();
        }
    }

    /** Waits until the worker has nothing queued (tests and suspend). */
    public void drain() {
        workqueue.flush();
    }

    public String name() {
        return name;
    }

    public Mode mode() {
        return mode;
    }

    public Features features() {
        return features;
    }

    public int blockSectors() {
        return blockSectors;
    }

    public BlockDevice metadataDevice() {
        return metadataDevice;
    }

    public BlockDevice dataDevice() {
        return dataDevice;
    }

    /** Whether free data blocks are at or below the low-water mark. */
    public boolean belowLowWater() {
        return belowLowWater;
    }

    /** The metadata (tests). */
    public ThinMetadata metadata() {
        return metadata;
    }

    /** Bios waiting for data space. */
    public int waitingForSpace() {
        lock.lock();
        try {
            return noSpace.size();
        } finally {
            lock.unlock();
        }
    }

    /**
     * Drains the worker, commits, fails whatever still waits (for space), and releases everything;
     * copes with a half-built pool.
     */
    public void close() {
        if (closed) {
            return;
        }
        if (workqueue != null) {
            workqueue.flush();
            if (metadata != null && mode != Mode.READ_ONLY) {
                commitOnWorker();
            }
        }
        closed = true;
        if (workqueue != null) {
            commitTimer.cancelTimer();
            commitTimer.cancel();
            noSpaceTimer.cancelTimer();
            noSpaceTimer.cancel();
            workqueue.close();
        }
        lock.lock();
        BioList left = new BioList();
        for (BioList l : new BioList[] {noSpace, parked, deferred, prepared}) {
            for (Bio b = l.pop(); b != null; b = l.pop()) {
                left.add(b);
            }
        }
        lock.unlock();
        for (Bio b = left.pop(); b != null; b = left.pop()) {
            fail(b, BioStatus.IOERR);
        }
        if (groups != null) {
            groups.close();
        }
        if (copyLedgerLine != null) {
            copyLedgerLine.close();
        }
        if (copyPages != null) {
            for (Page p : copyPages) {
                if (p != null) {
                    kernel.pages().free(p);
                }
            }
        }
        if (ioSet != null) {
            ioSet.close();
        }
        if (cache != null) {
            cache.close();
        }
    }

    @Override
    public String toString() {
        return "thin-pool " + name;
    }
}
