package io.blkstack.dm.thin.metadata;

import io.blkstack.bufio.Buffer;
import io.blkstack.bufio.BufferCache;
import io.blkstack.kernel.Mutex;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The metadata of one thin pool (the kernel's {@code dm-thin-metadata}): three copy-on-write
 * B-trees in metadata blocks, rooted in a superblock at block 0.
 *
 * <ul>
 *   <li>mapping tree: key {@code (device id << 40) | virtual block}, value
 *       {@code (data block << 24) | time};</li>
 *   <li>reference-count tree (the data space map): key data block, value its reference count,
 *       present only for counts above zero;</li>
 *   <li>device tree: key device id, value the time it was created.</li>
 * </ul>
 *
 * <p>Commit (crash consistency): write every dirty node and wait, flush the device, then write the
 * superblock and flush again. Until the superblock lands, the committed trees are intact because the
 * {@link MetadataSpace} never hands out a block they use, and data blocks freed in the transaction
 * are not reused before it commits either. So a crash at any instant reopens exactly the last
 * commit. Thin snapshots copy the origin's mapping entries and take a reference on every shared
 * data block (the kernel shares subtrees instead; copying is simpler and is O(mapped blocks)).
 *
 * <p><b>Checksums</b> (format 2). Every tree block and the superblock carry a crc32c of the rest of
 * the block and its block number ({@link BlockChecksum}); every read of a node verifies it, so
 * corruption is an error ({@link CorruptMetadataException} naming the block), never a wrong
 * mapping. Superblock: magic (8 bytes), version, node capacity, commit count, the three roots,
 * data blocks, data block sectors, time, then at byte 72 the checksum, at 76 the flags
 * ({@link #FLAG_NEEDS_CHECK}) and at 80 the transaction id. Format 1 (no checksums) is migrated
 * once, in place, when a pool opens it.
 *
 * <p><b>Transaction id</b> (dm-thin's {@code trans_id}): a number the user owns, 0 when formatted,
 * changed only by {@link #setTransactionId} ({@code set_transaction_id OLD NEW}, refused unless
 * OLD is the current id) and kept by every commit, so a volume manager can tell which of its
 * changes reached the pool after a crash. The commit count (one more per commit) is separate; it
 * says which commit a reopen found. Metadata written before the field existed has zeros there,
 * which reads as id 0.
 *
 * <p>All operations run under one kernel {@link Mutex} (the kernel's {@code root_lock}); they do
 * metadata I/O and so must run on workers or control tasks, never in a completion or the submit loop.
 */
public final class ThinMetadata {

    /** "blkthin1". */
    public static final long MAGIC = 0x626c6b7468696e31L;
    /** The format written: 2, with a crc32c in every tree block and in the superblock. */
    public static final int VERSION = 2;
    /** The format before checksums: read, and migrated to {@link #VERSION} when a pool opens it. */
    public static final int VERSION_UNCHECKSUMMED = 1;
    /** Superblock flag: a metadata error was hit (dm-thin's {@code needs_check}). */
    public static final int FLAG_NEEDS_CHECK = 1;
    /** The largest device id (ids use 23 bits of the mapping key). */
    public static final long DEVICE_ID_MAX = (1L << 23) - 1;
    /** The largest virtual block (40 bits of the mapping key). */
    public static final long VIRTUAL_BLOCK_MAX = (1L << 40) - 1;

    private static final int SB_MAGIC = 0;
    private static final int SB_VERSION = 8;
    private static final int SB_CAPACITY = 12;
    private static final int SB_COMMIT_COUNT = 16;
    private static final int SB_MAPPING_ROOT = 24;
    private static final int SB_REF_ROOT = 32;
    private static final int SB_DEVICE_ROOT = 40;
    private static final int SB_DATA_BLOCKS = 48;
    private static final int SB_DATA_BLOCK_SECTORS = 56;
    private static final int SB_TIME = 64;
    private static final int SB_CHECKSUM = 72;
    private static final int SB_FLAGS = 76;
    private static final int SB_TRANSACTION_ID = 80;

    private final BufferCache cache;
    private final MetadataSpace space;
    private final BTree tree;
    private final Mutex lock;
    private final long dataBlockCount;
    private final long dataBlockSectors;
    private BitSet dataUsedNow = new BitSet();
    private BitSet dataUsedCommitted = new BitSet();
    private long mappingRoot;
    private long refRoot;
    private long deviceRoot;
    private long commitCount;
    private long transactionId;
    private long time;
    private long dataSearchHint;
    private int version = VERSION;
    private int migratedFrom;
    private boolean needsCheck;

    private ThinMetadata(BufferCache cache, int capacity, long dataBlockCount, long dataBlockSectors) {
        this.cache = cache;
        this.space = new MetadataSpace(cache.blockCount());
        this.tree = new BTree(cache, space, capacity);
        this.lock = new Mutex("thin metadata " + cache.device().name());
        this.dataBlockCount = dataBlockCount;
        this.dataBlockSectors = dataBlockSectors;
    }

    /** Writes empty metadata (three empty trees and a superblock) and commits it. */
    public static ThinMetadata format(BufferCache cache, long dataBlockCount, long dataBlockSectors, int capacity) {
        if (dataBlockCount <= 0 || dataBlockCount > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("thin metadata: data block count " + dataBlockCount + " outside 1.." + Integer.MAX_VALUE);
        }
        ThinMetadata md = new ThinMetadata(cache, capacity, dataBlockCount, dataBlockSectors);
        md.lock.lock();
        try {
            md.mappingRoot = md.tree.create();
            md.refRoot = md.tree.create();
            md.deviceRoot = md.tree.create();
            md.commitLocked();
        } finally {
            md.lock.unlock();
        }
        return md;
    }

    /** The fields of a superblock as read, after its magic, version and checksum were checked. */
    private record Superblock(int version, int capacity, long commitCount, long mappingRoot, long refRoot,
            long deviceRoot, long dataBlocks, long dataBlockSectors, long time, int flags, long transactionId) {
    }

    /**
     * Reads and checks the superblock: magic, a version this code knows (1 is read without
     * checksums, for migration), and for version 2 its crc32c.
     *
     * @throws CorruptMetadataException naming what is wrong
     */
    private static Superblock readSuperblock(BufferCache cache) {
        Buffer sb = cache.read(MetadataSpace.SUPERBLOCK);
        try {
            long magic = sb.getLong(SB_MAGIC);
            if (magic != MAGIC) {
                throw new CorruptMetadataException("superblock magic 0x" + Long.toHexString(magic) + ", expected 0x"
                        + Long.toHexString(MAGIC) + " (metadata block 0: not thin metadata, never formatted, or damaged)");
            }
            int version = sb.getInt(SB_VERSION);
            if (version != VERSION && version != VERSION_UNCHECKSUMMED) {
                throw new CorruptMetadataException("superblock (metadata block 0): version " + version + ": this blkstack reads version "
                        + VERSION + " (and migrates version " + VERSION_UNCHECKSUMMED + ")");
            }
            if (version == VERSION) {
                BlockChecksum.verify(sb, SB_CHECKSUM, MetadataSpace.SUPERBLOCK, "superblock (metadata block 0)");
            }
            return new Superblock(version, sb.getInt(SB_CAPACITY), sb.getLong(SB_COMMIT_COUNT), sb.getLong(SB_MAPPING_ROOT),
                    sb.getLong(SB_REF_ROOT), sb.getLong(SB_DEVICE_ROOT), sb.getLong(SB_DATA_BLOCKS),
                    sb.getLong(SB_DATA_BLOCK_SECTORS), sb.getLong(SB_TIME), version == VERSION ? sb.getInt(SB_FLAGS) : 0,
                    version == VERSION ? sb.getLong(SB_TRANSACTION_ID) : 0);
        } finally {
            cache.release(sb);
        }
    }

    /**
     * Opens committed metadata: reads the superblock and rebuilds space accounting by walking the
     * trees, verifying every block's checksum. Metadata of format 1 (no checksums) is migrated in
     * place once: each tree block gets its checksum in the field format 1 left zero, then a
     * format-2 superblock is committed; {@link #migratedFrom()} says so, for the caller's message.
     *
     * @throws CorruptMetadataException naming the first block that fails its check
     */
    public static ThinMetadata open(BufferCache cache) {
        return open(cache, true);
    }

    /** As {@link #open(BufferCache)}; with {@code migrate} false (read-only tools) format 1 is read as it is. */
    public static ThinMetadata open(BufferCache cache, boolean migrate) {
        Superblock sb = readSuperblock(cache);
        int capacity = sb.capacity();
        long commits = sb.commitCount();
        long mroot = sb.mappingRoot();
        long rroot = sb.refRoot();
        long droot = sb.deviceRoot();
        long dataBlocks = sb.dataBlocks();
        long sectors = sb.dataBlockSectors();
        long t = sb.time();
        ThinMetadata md = new ThinMetadata(cache, capacity, dataBlocks, sectors);
        md.version = sb.version();
        md.needsCheck = (sb.flags() & FLAG_NEEDS_CHECK) != 0;
        md.tree.setChecksums(sb.version() == VERSION);
        md.lock.lock();
        try {
            md.commitCount = commits;
            md.transactionId = sb.transactionId();
            md.mappingRoot = mroot;
            md.refRoot = rroot;
            md.deviceRoot = droot;
            md.time = t;
            for (long root : new long[] {mroot, rroot, droot}) {
                md.tree.walkBlocks(root, md.space::markUsed);
            }
            md.space.commit();
            md.tree.forEach(rroot, 0, Long.MAX_VALUE, (block, count) -> {
                md.dataUsedNow.set(md.checkDataBlock(block));
                return true;
            });
            md.dataUsedCommitted = (BitSet) md.dataUsedNow.clone();
            if (md.version == VERSION_UNCHECKSUMMED && migrate) {
                md.migrateLocked();
            }
        } finally {
            md.lock.unlock();
        }
        return md;
    }

    /** Format 1 to 2: checksums into every tree block in place, then a format-2 superblock. */
    private void migrateLocked() {
        for (long b = 1; b < space.blockCount(); b++) {
            if (space.inUse(b)) {
                tree.reseal(b);
            }
        }
        tree.setChecksums(true);
        commitLocked();
        migratedFrom = VERSION_UNCHECKSUMMED;
        version = VERSION;
    }

    /** The format version this metadata was opened with, or migrated from, 0 if it was not migrated. */
    public int migratedFrom() {
        return migratedFrom;
    }

    /** The on-disk format version: {@value #VERSION}, or 1 when a read-only tool opened old metadata. */
    public int version() {
        return version;
    }

    /**
     * Whether the superblock carries the {@code needs_check} flag (dm-thin's): the pool hit a
     * metadata error and must not be written before {@code blkstack thin check} passes.
     */
    public boolean needsCheck() {
        return needsCheck;
    }

    /**
     * Sets or clears {@code needs_check} in the committed superblock, keeping everything else of the
     * last commit (and, if a commit's superblock write failed after its nodes were flushed, that
     * commit, whose trees are complete). Waits for I/O.
     *
     * @throws io.blkstack.bufio.MetadataIoException if the superblock cannot be written
     */
    public void setNeedsCheck(boolean on) {
        lock.lock();
        try {
            Buffer sb = cache.read(MetadataSpace.SUPERBLOCK);
            try {
                int flags = sb.getInt(SB_FLAGS);
                sb.putInt(SB_FLAGS, on ? flags | FLAG_NEEDS_CHECK : flags & ~FLAG_NEEDS_CHECK);
                BlockChecksum.seal(sb, SB_CHECKSUM, MetadataSpace.SUPERBLOCK);
                cache.markDirty(sb);
            } finally {
                cache.release(sb);
            }
            needsCheck = on;
            cache.writeDirtyBuffersWait();
            cache.flushDevice(0);
        } finally {
            lock.unlock();
        }
    }

    /**
     * Checks the committed metadata on {@code cache}'s device without writing it: the superblock,
     * then every block of the three trees (naming each one that fails its checksum or shape, not
     * only the first), and when all blocks are sound, {@link #check()}'s consistency rules. A set
     * {@code needs_check} flag is a problem too.
     *
     * @return the problems, empty when clean
     */
    public static List<String> checkCommitted(BufferCache cache) {
        Superblock sb;
        try {
            sb = readSuperblock(cache);
        } catch (CorruptMetadataException e) {
            return List.of(e.getMessage());
        }
        List<String> problems = new ArrayList<>();
        ThinMetadata md;
        try {
            md = new ThinMetadata(cache, sb.capacity(), sb.dataBlocks(), sb.dataBlockSectors());
        } catch (IllegalArgumentException e) {
            return List.of("superblock: " + e.getMessage());
        }
        md.tree.setChecksums(sb.version() == VERSION);
        BitSet seen = new BitSet();
        seen.set((int) MetadataSpace.SUPERBLOCK);
        md.tree.scan(sb.mappingRoot(), "mapping", seen, problems);
        md.tree.scan(sb.refRoot(), "reference count", seen, problems);
        md.tree.scan(sb.deviceRoot(), "device", seen, problems);
        if (problems.isEmpty()) {
            try {
                problems.addAll(open(cache, false).check());
            } catch (CorruptMetadataException e) {
                problems.add(e.getMessage());
            }
        }
        if ((sb.flags() & FLAG_NEEDS_CHECK) != 0) {
            problems.add("needs_check flag set: the pool hit a metadata error; it opens read-only until"
                    + " 'blkstack thin check --clear-needs-check' finds the metadata otherwise clean");
        }
        return problems;
    }

    // ---- devices ---------------------------------------------------------------------------------

    /** Creates an empty thin device. */
    public void createThin(long devId) {
        checkDevice(devId);
        lock.lock();
        try {
            if (tree.lookup(deviceRoot, devId, -1) >= 0) {
                throw new IllegalArgumentException("thin device " + devId + " already exists");
            }
            deviceRoot = tree.insert(deviceRoot, devId, time);
        } finally {
            lock.unlock();
        }
    }

    /** Creates {@code snapId} sharing every mapped block of {@code originId}. */
    public void createSnap(long snapId, long originId) {
        checkDevice(snapId);
        checkDevice(originId);
        lock.lock();
        try {
            if (tree.lookup(deviceRoot, originId, -1) < 0) {
                throw new IllegalArgumentException("snapshot origin " + originId + " does not exist");
            }
            if (tree.lookup(deviceRoot, snapId, -1) >= 0) {
                throw new IllegalArgumentException("thin device " + snapId + " already exists");
            }
            time++;
            deviceRoot = tree.insert(deviceRoot, snapId, time);
            List<long[]> batch = new ArrayList<>();
            long next = 0;
            while (true) {
                batch.clear();
                collect(originId, next, 256, batch);
                if (batch.isEmpty()) {
                    break;
                }
                for (long[] e : batch) {
                    mappingRoot = tree.insert(mappingRoot, key(snapId, e[0]), value(e[1], time));
                    incRefLocked(e[1]);
                }
                next = batch.get(batch.size() - 1)[0] + 1;
            }
        } finally {
            lock.unlock();
        }
    }

    /** Deletes a thin device: unmaps every block (dropping its references) and forgets the id. */
    public void deleteThin(long devId) {
        checkDevice(devId);
        lock.lock();
        try {
            if (tree.lookup(deviceRoot, devId, -1) < 0) {
                throw new IllegalArgumentException("thin device " + devId + " does not exist");
            }
            List<long[]> batch = new ArrayList<>();
            while (true) {
                batch.clear();
                collect(devId, 0, 256, batch);
                if (batch.isEmpty()) {
                    break;
                }
                for (long[] e : batch) {
                    mappingRoot = tree.remove(mappingRoot, key(devId, e[0]));
                    decRefLocked(e[1]);
                }
            }
            deviceRoot = tree.remove(deviceRoot, devId);
        } finally {
            lock.unlock();
        }
    }

    /** Whether the device exists. */
    public boolean deviceExists(long devId) {
        lock.lock();
        try {
            return tree.lookup(deviceRoot, devId, -1) >= 0;
        } finally {
            lock.unlock();
        }
    }

    /** Up to {@code max} (virtual block, data block) pairs of a device from {@code fromBlock} on. */
    private void collect(long devId, long fromBlock, int max, List<long[]> out) {
        tree.forEach(mappingRoot, key(devId, fromBlock), key(devId, VIRTUAL_BLOCK_MAX), (k, v) -> {
            out.add(new long[] {k & VIRTUAL_BLOCK_MAX, v >>> 24});
            return out.size() < max;
        });
    }

    // ---- mappings --------------------------------------------------------------------------------

    /** The data block mapped at {@code vblock} of {@code devId}, or -1 for a hole. */
    public long lookup(long devId, long vblock) {
        lock.lock();
        try {
            long v = tree.lookup(mappingRoot, key(devId, vblock), -1);
            return v < 0 ? -1 : v >>> 24;
        } finally {
            lock.unlock();
        }
    }

    /** Mapped (virtual block, data block) pairs of a device in {@code [from, to]}, at most {@code max}. */
    public List<long[]> mappings(long devId, long from, long to, int max) {
        lock.lock();
        try {
            List<long[]> out = new ArrayList<>();
            tree.forEach(mappingRoot, key(devId, from), key(devId, Math.min(to, VIRTUAL_BLOCK_MAX)), (k, v) -> {
                out.add(new long[] {k & VIRTUAL_BLOCK_MAX, v >>> 24});
                return out.size() < max;
            });
            return out;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Maps {@code vblock} to {@code dataBlock}, whose reference the caller already holds (from
     * {@link #allocDataBlock}); a replaced mapping drops its reference.
     */
    public void insertMapping(long devId, long vblock, long dataBlock) {
        checkDevice(devId);
        checkVirtual(vblock);
        checkDataBlock(dataBlock);
        lock.lock();
        try {
            mappingRoot = tree.insert(mappingRoot, key(devId, vblock), value(dataBlock, time));
            if (!tree.lastInsertWasNew()) {
                decRefLocked(tree.lastInsertOldValue() >>> 24);
            }
        } finally {
            lock.unlock();
        }
    }

    /** Unmaps {@code vblock} (discard) and drops the reference; returns the data block it had, or -1. */
    public long removeMapping(long devId, long vblock) {
        lock.lock();
        try {
            long old = tree.lookup(mappingRoot, key(devId, vblock), -1);
            if (old < 0) {
                return -1;
            }
            mappingRoot = tree.remove(mappingRoot, key(devId, vblock));
            decRefLocked(old >>> 24);
            return old >>> 24;
        } finally {
            lock.unlock();
        }
    }

    // ---- data space -------------------------------------------------------------------------------

    /**
     * Allocates a free data block in {@code [from, to)} with reference count 1, or returns -1. A
     * block is free only if no mapping uses it now and none did at the last commit.
     */
    public long allocDataBlock(long from, long to) {
        lock.lock();
        try {
            int end = (int) Math.min(to, dataBlockCount);
            int b = (int) Math.max(0, from);
            while (b < end) {
                int freeNow = dataUsedNow.nextClearBit(b);
                int free = dataUsedCommitted.nextClearBit(freeNow);
                if (free == freeNow) { // clear in both
                    if (free >= end) {
                        break;
                    }
                    // Not used now: no reference count in the tree, so the first one goes in without a lookup.
                    refRoot = tree.insert(refRoot, free, 1);
                    if (!tree.lastInsertWasNew()) {
                        throw new IllegalStateException("data block " + free + " is free but has reference count "
                                + tree.lastInsertOldValue());
                    }
                    dataUsedNow.set(free);
                    return free;
                }
                b = free; // freeNow was used at the commit: go on from the next block free there
            }
            return -1;
        } finally {
            lock.unlock();
        }
    }

    /** Drops a reference the caller holds (an allocation that was not mapped after all). */
    public void releaseDataBlock(long block) {
        lock.lock();
        try {
            decRefLocked(block);
        } finally {
            lock.unlock();
        }
    }

    /** The reference count of a data block. */
    public long refCount(long block) {
        lock.lock();
        try {
            return tree.lookup(refRoot, block, 0);
        } finally {
            lock.unlock();
        }
    }

    /** Whether {@code block} is free for allocation (not used now, not used at the last commit). */
    public boolean isDataBlockFree(long block) {
        return !dataUsedNow.get((int) block) && !dataUsedCommitted.get((int) block);
    }

    private void incRefLocked(long block) {
        long count = tree.lookup(refRoot, block, 0);
        refRoot = tree.insert(refRoot, block, count + 1);
        dataUsedNow.set((int) block);
    }

    private void decRefLocked(long block) {
        long count = tree.lookup(refRoot, block, 0);
        if (count <= 0) {
            throw new IllegalStateException("reference count of data block " + block + " is " + count + ", cannot drop");
        }
        if (count == 1) {
            refRoot = tree.remove(refRoot, block);
            dataUsedNow.clear((int) block);
        } else {
            refRoot = tree.insert(refRoot, block, count - 1);
        }
    }

    // ---- commit ---------------------------------------------------------------------------------

    /** Commits the transaction: nodes, flush, superblock, flush. */
    public void commit() {
        lock.lock();
        try {
            commitLocked();
        } finally {
            lock.unlock();
        }
    }

    private void commitLocked() {
        cache.writeDirtyBuffersWait();
        cache.flushDevice(0);
        Buffer sb = cache.newBuffer(MetadataSpace.SUPERBLOCK);
        try {
            sb.putLong(SB_MAGIC, MAGIC);
            sb.putInt(SB_VERSION, VERSION);
            sb.putInt(SB_CAPACITY, tree.capacity());
            sb.putLong(SB_COMMIT_COUNT, commitCount + 1);
            sb.putLong(SB_MAPPING_ROOT, mappingRoot);
            sb.putLong(SB_REF_ROOT, refRoot);
            sb.putLong(SB_DEVICE_ROOT, deviceRoot);
            sb.putLong(SB_DATA_BLOCKS, dataBlockCount);
            sb.putLong(SB_DATA_BLOCK_SECTORS, dataBlockSectors);
            sb.putLong(SB_TIME, time);
            sb.putInt(SB_FLAGS, needsCheck ? FLAG_NEEDS_CHECK : 0);
            sb.putLong(SB_TRANSACTION_ID, transactionId);
            BlockChecksum.seal(sb, SB_CHECKSUM, MetadataSpace.SUPERBLOCK);
            cache.markDirty(sb);
        } finally {
            cache.release(sb);
        }
        cache.writeDirtyBuffersWait();
        cache.flushDevice(0);
        commitCount++;
        space.commit();
        dataUsedCommitted = (BitSet) dataUsedNow.clone();
    }

    /** How many commits this metadata has had (one more per commit; says which commit a reopen found). */
    public long commitCount() {
        return commitCount;
    }

    /** The transaction id (dm-thin's, set by the user; kept by commits): committed or set in this transaction. */
    public long transactionId() {
        return transactionId;
    }

    /**
     * dm-thin's {@code set_transaction_id OLD NEW}: the id becomes {@code newId} if it is
     * {@code oldId} now; the next commit writes it to the superblock.
     *
     * @throws IllegalArgumentException naming the current id when {@code oldId} is not it, or
     *     when an id is negative (ids are unsigned 63-bit here)
     */
    public void setTransactionId(long oldId, long newId) {
        if (oldId < 0 || newId < 0) {
            throw new IllegalArgumentException("transaction ids are 0.." + Long.MAX_VALUE + ", not " + oldId + " "
                    + newId);
        }
        lock.lock();
        try {
            if (oldId != transactionId) {
                throw new IllegalArgumentException("set_transaction_id " + oldId + " " + newId
                        + ": the current transaction id is " + transactionId + ", not " + oldId);
            }
            transactionId = newId;
        } finally {
            lock.unlock();
        }
    }

    public long dataBlockCount() {
        return dataBlockCount;
    }

    public long dataBlockSectors() {
        return dataBlockSectors;
    }

    /** Data blocks referenced by the current transaction. */
    public long usedDataBlocks() {
        return dataUsedNow.cardinality();
    }

    public long usedMetadataBlocks() {
        return space.usedBlocks();
    }

    public long metadataBlockCount() {
        return space.blockCount();
    }

    /** The mapping, reference-count and device tree roots of the current transaction (tests). */
    long[] roots() {
        return new long[] {mappingRoot, refRoot, deviceRoot};
    }

    /** The B-tree layer, for the split runner (seed 004). */
    public BTree tree() {
        return tree;
    }

    /**
     * Checks the metadata of the current transaction: tree structure, every mapping's device
     * exists, reference counts equal the number of mappings of each data block.
     *
     * @return the problems found, empty when consistent
     */
    public List<String> check() {
        lock.lock();
        try {
            List<String> problems = new ArrayList<>();
            for (long root : new long[] {mappingRoot, refRoot, deviceRoot}) {
                try {
                    tree.check(root);
                } catch (CorruptMetadataException e) {
                    problems.add(e.getMessage());
                }
            }
            if (!problems.isEmpty()) {
                return problems;
            }
            Map<Long, Long> counted = new HashMap<>();
            tree.forEach(mappingRoot, 0, Long.MAX_VALUE, (k, v) -> {
                long dev = k >>> 40;
                if (tree.lookup(deviceRoot, dev, -1) < 0 && problems.size() < 20) {
                    problems.add("mapping of block " + (k & VIRTUAL_BLOCK_MAX) + " for missing device " + dev);
                }
                counted.merge(v >>> 24, 1L, Long::sum);
                return true;
            });
            Map<Long, Long> stored = new HashMap<>();
            tree.forEach(refRoot, 0, Long.MAX_VALUE, (b, c) -> {
                stored.put(b, c);
                return true;
            });
            for (Map.Entry<Long, Long> e : counted.entrySet()) {
                long have = stored.getOrDefault(e.getKey(), 0L);
                if (have < e.getValue() && problems.size() < 20) {
                    problems.add("data block " + e.getKey() + ": " + e.getValue() + " mappings but reference count " + have);
                }
            }
            for (Map.Entry<Long, Long> e : stored.entrySet()) {
                long mapped = counted.getOrDefault(e.getKey(), 0L);
                if (mapped == 0 && problems.size() < 20) {
                    problems.add("data block " + e.getKey() + ": reference count " + e.getValue() + " but no mapping (leaked)");
                }
                if (e.getKey() >= dataBlockCount) {
                    problems.add("data block " + e.getKey() + " beyond the data device (" + dataBlockCount + " blocks)");
                }
                if (!dataUsedNow.get(e.getKey().intValue())) {
                    problems.add("data block " + e.getKey() + " referenced but free in the allocator");
                }
            }
            if (dataUsedNow.cardinality() != stored.size()) {
                problems.add("allocator counts " + dataUsedNow.cardinality() + " used data blocks, reference counts "
                        + stored.size());
            }
            return problems;
        } finally {
            lock.unlock();
        }
    }

    // ---- keys -----------------------------------------------------------------------------------

    static long key(long devId, long vblock) {
        return (devId << 40) | vblock;
    }

    private static long value(long dataBlock, long t) {
        return (dataBlock << 24) | (t & 0xFFFFFF);
    }

    private static void checkDevice(long devId) {
        if (devId < 0 || devId > DEVICE_ID_MAX) {
            throw new IllegalArgumentException("thin device id " + devId + " outside 0.." + DEVICE_ID_MAX);
        }
    }

    private static void checkVirtual(long vblock) {
        if (vblock < 0 || vblock > VIRTUAL_BLOCK_MAX) {
            throw new IllegalArgumentException("virtual block " + vblock + " outside 0.." + VIRTUAL_BLOCK_MAX);
        }
    }

    private int checkDataBlock(long block) {
        if (block < 0 || block >= dataBlockCount) {
            throw new IllegalArgumentException("data block " + block + " outside 0.." + (dataBlockCount - 1));
        }
        return (int) block;
    }
}
