package io.blkstack.dm.snapshot;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.concurrent.ThreadLocalRandom;
import java.util.zip.CRC32C;

/**
 * The {@code P} store: exceptions on the COW device in a crash-consistent format (in the manner of
 * dm's persistent store, not its bytes).
 *
 * <p><b>Layout</b> (chunk = the table's chunk size, all integers little-endian):
 * <pre>
 *   chunk 0            header, sector 0: magic "BLKSNAP1" (8 bytes), u32 version = 2,
 *                      u32 valid (1 / 0), u32 chunk size in sectors, u32 store tag (random, not 0),
 *                      u32 crc32c of the sector (this field as zero) and its sector number
 *   chunk 1            metadata area 0: E = chunkBytes / 16 slots of 16 bytes
 *   chunks 2 .. E+1    the data chunks area 0 describes, slot i for chunk 2 + i
 *   chunk E+2          metadata area 1, then its E data chunks, and so on
 * </pre>
 * A slot is {@code u64 origin chunk, u32 crc32c, u32 store tag}, the crc over the origin chunk, the
 * data chunk the slot stands for and the tag. A new store zeroes every metadata area before it
 * writes its header, so a slot is either all zeros (no exception) or an exception of this store
 * whose checksum matches; anything else is damage, and opening the store fails naming the area,
 * sector and slot. A header whose checksum fails is refused too, including one whose only fault is
 * its magic (the checksum computed with the right magic matches), so a damaged header is never
 * taken for an empty device. Format 1 (no checksums, areas not zeroed) is refused with a message:
 * its slots cannot be told from garbage, so it cannot be converted in place.
 *
 * <p><b>Crash consistency.</b> A data chunk is copied first; only when that write completed is the
 * metadata sector holding its slot rewritten (from the in-memory table, so earlier slots stay),
 * with PREFLUSH and FUA; only when that completed does the exception become visible and the origin
 * write waiting for it go ahead. A crash at any point therefore leaves each chunk either without an
 * exception (its origin chunk was not yet overwritten) or with a committed one whose data is the
 * complete old chunk. The metadata sector is the unit of atomicity, as in dm.
 *
 * <p>Reopening reads the header and every metadata area back; the next free chunk follows the
 * highest committed one (chunks allocated but never committed before a crash are not reused).
 */
final class PersistentStore extends ExceptionStore {

    static final String MAGIC = "BLKSNAP1";
    static final int VERSION = 2;
    /** The format before checksums, refused with a message. */
    static final int VERSION_UNCHECKSUMMED = 1;
    private static final int HEADER_CHECKSUM = 24;
    /** Bytes per metadata slot. */
    static final int SLOT_BYTES = 16;
    private static final int SLOTS_PER_SECTOR = Bio.SECTOR_SIZE / SLOT_BYTES;
    private static final int SECTORS_PER_PAGE = Page.SIZE >>> Bio.SECTOR_SHIFT;

    private final Kernel kernel;
    private final long originChunks;
    private final int slotsPerArea;
    private final long[] committedOld;
    /** The commit's runs of slot sectors, first and last sector, sorted and merged. */
    private final long[] dirtyFirst = new long[Snapshot.PENDING_MAX];
    private final long[] dirtyLast = new long[Snapshot.PENDING_MAX];
    private final BioSet ioSet;
    private Page page;
    private int tag;
    private boolean validOnOpen = true;
    private long nextFree;
    private boolean closed;

    /**
     * Opens the store on {@code cow}: reads an existing header and exception table back, or writes
     * a new header. Waits for I/O; call from a control path.
     *
     * @throws IllegalArgumentException if the device holds a store of another chunk size or version,
     *     or cannot hold a header, one area and one data chunk
     */
    @SuppressWarnings("this-escape")
    PersistentStore(Kernel kernel, String name, BlockDevice cow, int chunkSectors, long originChunks) {
        super(cow, chunkSectors);
        this.kernel = kernel;
        this.originChunks = originChunks;
        this.slotsPerArea = (chunkSectors << Bio.SECTOR_SHIFT) / SLOT_BYTES;
        if (cowChunks < 3) {
            throw new IllegalArgumentException("COW device " + cow.name() + " holds " + cowChunks
                    + " chunk(s) of " + chunkSectors + " sectors; a persistent store needs at least 3");
        }
        if (Snapshot.PENDING_MAX >= slotsPerArea) {
            throw new IllegalStateException("pending exceptions " + Snapshot.PENDING_MAX + " must stay below the "
                    + slotsPerArea + " slots of an area");
        }
        this.committedOld = new long[Math.toIntExact(cowChunks)];
        Arrays.fill(committedOld, -1);
        this.ioSet = new BioSet(kernel, "snapshot-meta-" + name, 1, 1, null, false);
        try {
            this.page = kernel.pages().alloc(Gfp.KERNEL | Gfp.NORETRY); // at start: fail, never wait for ever
            if (page == null) {
                throw new IllegalStateException("snapshot " + name + ": no page for the metadata buffer");
            }
            open();
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    /** Reads the header; a device without one gets a fresh store (areas zeroed, then the header). */
    private void open() {
        requireOk(io(BioOp.READ, 0, 0, Bio.SECTOR_SIZE), "read of the header");
        ByteBuffer b = page.buffer().duplicate().order(ByteOrder.LITTLE_ENDIAN);
        byte[] magic = new byte[MAGIC.length()];
        b.get(0, magic);
        if (!Arrays.equals(magic, magicBytes())) {
            int stored = b.getInt(HEADER_CHECKSUM);
            b.put(0, magicBytes());
            if (stored != 0 && stored == headerChecksum(b)) {
                throw new IllegalArgumentException("COW device " + cow.name() + ": header (sector 0) of a snapshot store"
                        + " has a damaged magic; refusing to start a new store over it");
            }
            int t = 0;
            while (t == 0) {
                t = ThreadLocalRandom.current().nextInt();
            }
            tag = t;
            nextFree = 2;
            zeroAreas();
            requireOk(writeHeader(true), "write of a new header");
            return;
        }
        int version = b.getInt(8);
        if (version == VERSION_UNCHECKSUMMED) {
            throw new IllegalArgumentException("COW device " + cow.name() + " holds a snapshot store of format "
                    + VERSION_UNCHECKSUMMED + " (no checksums), which this blkstack cannot convert in place; recreate the"
                    + " snapshot on a zeroed COW device (or read it with the blkstack that wrote it)");
        }
        if (version == VERSION) {
            int stored = b.getInt(HEADER_CHECKSUM);
            int computed = headerChecksum(b);
            if (stored != computed) {
                throw new IllegalArgumentException("COW device " + cow.name() + ": header (sector 0): checksum mismatch"
                        + " (stored 0x" + Integer.toHexString(stored) + ", computed 0x" + Integer.toHexString(computed) + ")");
            }
        }
        int valid = b.getInt(12);
        int onDiskChunk = b.getInt(16);
        if (version != VERSION) {
            throw new IllegalArgumentException("COW device " + cow.name() + ": header (sector 0): store version " + version
                    + ", this blkstack reads version " + VERSION);
        }
        if (onDiskChunk != chunkSectors) {
            throw new IllegalArgumentException("COW device " + cow.name() + " holds a store with chunk size "
                    + onDiskChunk + ", not " + chunkSectors);
        }
        tag = b.getInt(20);
        validOnOpen = valid == 1;
        readAreas();
    }

    /** The crc32c of the header sector in the page, its checksum field taken as zero, and sector 0. */
    private int headerChecksum(ByteBuffer b) {
        CRC32C crc = new CRC32C();
        crc.update(b.slice(0, HEADER_CHECKSUM));
        crc.update(b.slice(HEADER_CHECKSUM + 4, Bio.SECTOR_SIZE - HEADER_CHECKSUM - 4));
        updateLong(crc, 0);
        return (int) crc.getValue();
    }

    /** The crc32c of one exception slot: its origin chunk, the data chunk it stands for, its tag. */
    private static int slotChecksum(long oldChunk, long dataChunk, int slotTag) {
        CRC32C crc = new CRC32C();
        updateLong(crc, oldChunk);
        updateLong(crc, dataChunk);
        updateLong(crc, slotTag);
        return (int) crc.getValue();
    }

    private static void updateLong(CRC32C crc, long v) {
        for (int i = 0; i < Long.BYTES; i++) {
            crc.update((int) (v >>> (8 * i)) & 0xFF);
        }
    }

    /** Writes zeros over every metadata area (a new store), a page at a time, then flushes. */
    private void zeroAreas() {
        page.zero(0, Page.SIZE);
        int pagesPerArea = Math.max(1, (chunkSectors << Bio.SECTOR_SHIFT) / Page.SIZE);
        int bytes = Math.min(Page.SIZE, chunkSectors << Bio.SECTOR_SHIFT);
        for (long area = 0; metadataChunk(area) < cowChunks; area++) {
            long meta = metadataChunk(area);
            for (int p = 0; p < pagesPerArea; p++) {
                requireOk(io(BioOp.WRITE, 0, (meta << chunkShift) + (long) p * SECTORS_PER_PAGE, bytes),
                        "zeroing of metadata area " + area);
            }
        }
    }

    /** Scans every metadata area and loads the valid slots; a damaged slot fails the open. */
    private void readAreas() {
        long highest = 1;
        int pagesPerArea = (chunkSectors << Bio.SECTOR_SHIFT) / Page.SIZE;
        int slotsPerPage = Page.SIZE / SLOT_BYTES;
        ByteBuffer b = page.buffer().duplicate().order(ByteOrder.LITTLE_ENDIAN);
        for (long area = 0; metadataChunk(area) < cowChunks; area++) {
            long meta = metadataChunk(area);
            for (int p = 0; p < pagesPerArea; p++) {
                long sector = (meta << chunkShift) + (long) p * SECTORS_PER_PAGE;
                requireOk(io(BioOp.READ, 0, sector, Page.SIZE), "read of metadata area " + area);
                for (int s = 0; s < slotsPerPage; s++) {
                    long data = meta + 1 + (long) p * slotsPerPage + s;
                    int at = s * SLOT_BYTES;
                    long old = b.getLong(at);
                    int checksum = b.getInt(at + 8);
                    int slotTag = b.getInt(at + 12);
                    if (old == 0 && checksum == 0 && slotTag == 0) {
                        continue;
                    }
                    if (slotTag != tag || checksum != slotChecksum(old, data, slotTag) || data >= cowChunks || old < 0
                            || old >= originChunks || exceptions.get(old) >= 0) {
                        throw new IllegalArgumentException("COW device " + cow.name() + ": metadata area " + area
                                + ", sector " + (sector + (long) at / Bio.SECTOR_SIZE) + ", slot of chunk " + data
                                + " is damaged (" + describeBadSlot(old, checksum, slotTag, data) + ")");
                    }
                    exceptions.put(old, data);
                    committedOld[(int) data] = old;
                    highest = Math.max(highest, data);
                }
            }
        }
        nextFree = highest + 1;
        if (isMetadata(nextFree)) {
            nextFree++;
        }
    }

    private String describeBadSlot(long old, int checksum, int slotTag, long data) {
        if (slotTag != tag) {
            return "tag 0x" + Integer.toHexString(slotTag) + ", the store's is 0x" + Integer.toHexString(tag);
        }
        if (checksum != slotChecksum(old, data, slotTag)) {
            return "checksum mismatch";
        }
        return "origin chunk " + old + " outside 0.." + (originChunks - 1) + " or already mapped";
    }

    private long metadataChunk(long area) {
        return 1 + area * (slotsPerArea + 1);
    }

    private boolean isMetadata(long chunk) {
        return chunk >= 1 && (chunk - 1) % (slotsPerArea + 1) == 0;
    }

    @Override
    long allocate() {
        long chunk = nextFree;
        if (chunk >= cowChunks) {
            return -1;
        }
        nextFree = chunk + 1;
        if (isMetadata(nextFree)) {
            nextFree++;
        }
        return chunk;
    }

    /** The sector holding the metadata slot of data chunk {@code data}. */
    private long slotSector(long data) {
        long area = (data - 1) / (slotsPerArea + 1);
        long slot = (data - 1) % (slotsPerArea + 1) - 1;
        if (slot < 0) {
            throw new IllegalStateException("chunk " + data + " is a metadata chunk, not data");
        }
        return (metadataChunk(area) << chunkShift) + slot / SLOTS_PER_SECTOR;
    }

    @Override
    int allocatableRun(int maxChunks) {
        int n = 0;
        for (long c = nextFree; n < maxChunks && c < cowChunks && !isMetadata(c); c++) {
            n++;
        }
        return n;
    }

    /**
     * Rewrites the slot sectors of the batch's runs from the in-memory table. A run's COW chunks lie
     * in one area (see {@link #allocatableRun}), so its slots are adjacent sectors; the runs' sector
     * ranges are merged and written up to a page at a time. The first write carries PREFLUSH (the
     * copied data is durable before any slot that points at it) and the last PREFLUSH and FUA (every
     * slot written before it, and itself, are durable before an exception becomes visible).
     */
    @Override
    BioStatus commit(PendingException[] batch, int count) {
        int runs = 0;
        for (int i = 0; i < count; i++) {
            PendingException pe = batch[i];
            for (int c = 0; c < pe.chunkCount; c++) {
                committedOld[Math.toIntExact(pe.newChunk + c)] = pe.oldChunk + c;
            }
            long first = slotSector(pe.newChunk);
            long last = slotSector(pe.newChunk + pe.chunkCount - 1);
            int at = runs++;
            while (at > 0 && dirtyFirst[at - 1] > first) {
                dirtyFirst[at] = dirtyFirst[at - 1];
                dirtyLast[at] = dirtyLast[at - 1];
                at--;
            }
            dirtyFirst[at] = first;
            dirtyLast[at] = last;
        }
        int merged = 0;
        for (int r = 0; r < runs; r++) {
            if (merged > 0 && dirtyFirst[r] <= dirtyLast[merged - 1] + 1) {
                dirtyLast[merged - 1] = Math.max(dirtyLast[merged - 1], dirtyLast[r]);
            } else {
                dirtyFirst[merged] = dirtyFirst[r];
                dirtyLast[merged] = dirtyLast[r];
                merged++;
            }
        }
        int writes = 0;
        for (int r = 0; r < merged; r++) {
            writes += (int) ((dirtyLast[r] - dirtyFirst[r]) / SECTORS_PER_PAGE + 1);
        }
        int done = 0;
        for (int r = 0; r < merged; r++) {
            for (long sector = dirtyFirst[r]; sector <= dirtyLast[r]; sector += SECTORS_PER_PAGE) {
                int sectors = (int) Math.min(SECTORS_PER_PAGE, dirtyLast[r] - sector + 1);
                done++;
                int flags = done == writes ? BioFlags.PREFLUSH | BioFlags.FUA : done == 1 ? BioFlags.PREFLUSH : 0;
                BioStatus s = writeSlotSectors(sector, sectors, flags);
                if (s.isError()) {
                    return s;
                }
            }
        }
        return BioStatus.OK;
    }

    /** Rewrites {@code sectors} adjacent metadata sectors from {@code first} from the in-memory table. */
    private BioStatus writeSlotSectors(long first, int sectors, int flags) {
        ByteBuffer b = page.buffer().duplicate().order(ByteOrder.LITTLE_ENDIAN);
        page.zero(0, sectors * Bio.SECTOR_SIZE);
        for (int i = 0; i < sectors; i++) {
            long sector = first + i;
            long metaSector = sector - (sector & (chunkSectors - 1));
            long meta = metaSector >>> chunkShift;
            long firstSlot = (sector - metaSector) * SLOTS_PER_SECTOR;
            for (int s = 0; s < SLOTS_PER_SECTOR; s++) {
                long data = meta + 1 + firstSlot + s;
                if (data < cowChunks && committedOld[(int) data] >= 0) {
                    int at = i * Bio.SECTOR_SIZE + s * SLOT_BYTES;
                    b.putLong(at, committedOld[(int) data]);
                    b.putInt(at + 8, slotChecksum(committedOld[(int) data], data, tag));
                    b.putInt(at + 12, tag);
                }
            }
        }
        return io(BioOp.WRITE, flags, first, sectors * Bio.SECTOR_SIZE);
    }

    @Override
    BioStatus persistInvalid() {
        return writeHeader(false);
    }

    /** The magic as the header stores it (a new array: callers may not share one). */
    private static byte[] magicBytes() {
        return MAGIC.getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    }

    /** Writes the header sector durably. */
    private BioStatus writeHeader(boolean valid) {
        ByteBuffer b = page.buffer().duplicate().order(ByteOrder.LITTLE_ENDIAN);
        page.zero(0, Bio.SECTOR_SIZE);
        b.put(0, magicBytes());
        b.putInt(8, VERSION);
        b.putInt(12, valid ? 1 : 0);
        b.putInt(16, chunkSectors);
        b.putInt(20, tag);
        b.putInt(HEADER_CHECKSUM, headerChecksum(b));
        return io(BioOp.WRITE, BioFlags.PREFLUSH | BioFlags.FUA, 0, Bio.SECTOR_SIZE);
    }

    /** One synchronous I/O of the metadata page's first {@code bytes} bytes at {@code sector}. */
    private BioStatus io(BioOp op, int flags, long sector, int bytes) {
        Bio bio = ioSet.alloc(Gfp.NOIO, 1);
        bio.init(cow, op, flags, sector);
        bio.addPage(page, bytes, 0);
        BioStatus status = Submit.submitAndWaitStatus(bio);
        bio.put();
        return status;
    }

    private void requireOk(BioStatus status, String what) {
        if (status.isError()) {
            throw new IllegalArgumentException("COW device " + cow.name() + ": " + what + " failed with "
                    + status.errnoName());
        }
    }

    @Override
    boolean validOnOpen() {
        return validOnOpen;
    }

    @Override
    long sectorsAllocated() {
        return nextFree << chunkShift;
    }

    @Override
    long metadataSectors() {
        long areas = (nextFree - 2) / (slotsPerArea + 1) + 1;
        return (areas + 1) << chunkShift;
    }

    @Override
    void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (page != null) {
            kernel.pages().free(page);
            page = null;
        }
        ioSet.close();
    }
}
