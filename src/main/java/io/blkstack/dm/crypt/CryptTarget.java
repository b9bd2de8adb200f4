package io.blkstack.dm.crypt;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioFlags;
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
import io.blkstack.dm.crypt.XtsCipher;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Teardown;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Mempool;
import io.blkstack.mem.Page;
import io.blkstack.wq.Work;
import io.blkstack.wq.Workqueue;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * {@code crypt <cipher> <key> <iv_offset> <dev> <offset> [<#opt_params> <opt_params>]}: transparent
 * encryption (dm-crypt) with {@code aes-xts-plain64} only. The key is hex, 32 or 64 bytes
 * (XTS-AES-128 / -256). Optional parameters: {@code sector_size:<bytes>} (512..4096, a power of
 * two: the encryption unit) and {@code iv_large_sectors} (IVs count {@code sector_size} units
 * instead of 512-byte sectors, as in dm-crypt; without it a 4096-byte unit's IV is the number of
 * its first 512-byte sector). The IV of a unit is {@code plain64}: the little-endian sector number
 * of the unit within the target plus {@code iv_offset}. Bios not aligned to the unit are killed,
 * as dm-crypt does.
 *
 * <p><b>Writes</b> never touch the caller's pages: a clone is taken over and queued to the write
 * workqueue ({@code kcryptd}), whose single work item encrypts it piece by piece into pages from
 * the target's own page {@link Mempool} ({@link #PIECE_PAGES} in reserve) and submits each piece
 * before it allocates the next (rule 1 of DESIGN.md section 1, and seed 002's golden rule: the
 * previous unit is in flight before the next is allocated). Being the only task that allocates
 * from the page pool, the work never holds part of a piece while another holder waits for the
 * rest (what dm-crypt's {@code bio_alloc_lock} ensures). A piece's completion only frees its
 * pages back to the pool (never blocks) and counts down the clone.
 *
 * <p><b>Reads</b> go to the device through a clone of this target's bio set; the completion does
 * no crypto (it runs in atomic context): it queues the clone to the {@code MEM_RECLAIM} read
 * workqueue, which decrypts it in place and ends it.
 *
 * <p><b>Status.</b> {@code TABLE} reproduces the line including the key, as {@code dmsetup table
 * --showkeys} does (so a reload from it works); callers that print tables for people should mask
 * it. {@code INFO} never shows the key: the cipher, the device, the unit size and counters.
 */
public final class CryptTarget extends Target {

    /** The table type name. */
    public static final String TYPE = "crypt";
    /** The only cipher specification supported. */
    public static final String CIPHER = "aes-xts-plain64";
    /** Pages in one encrypted write piece, and in the page pool's reserve (64 KiB). */
    public static final int PIECE_PAGES = 16;
    /** Clones one work run handles before requeueing itself. */
    static final int WORK_BATCH_MAX = 16;

    private final String keyText;
    private final long ivOffset;
    private final BlockDevice device;
    private final String deviceName;
    private final long offsetSectors;
    private final List<String> optionalWords;
    private final int unitBytes;
    private final int unitSectors;
    private final boolean ivLargeSectors;

    private BioSet bioSet;
    private Mempool<Page> pagePool;
    private Workqueue writeQueue;
    private Workqueue readQueue;
    private final XtsCipher writeCipher;
    private final XtsCipher readCipher;
    private final byte[] writeScratch = new byte[XtsCipher.UNIT_BYTES_MAX];
    private final byte[] readScratch = new byte[XtsCipher.UNIT_BYTES_MAX];
    private final SegmentCursor writeCursor = new SegmentCursor();
    private final SegmentCursor readIn = new SegmentCursor();
    private final SegmentCursor readOut = new SegmentCursor();
    private final Page[] piecePages = new Page[PIECE_PAGES];

    private final SpinLock lock;
    private final BioList writeList = new BioList(); // guarded by lock
    private final BioList readList = new BioList(); // guarded by lock
    private final Work writeWork;
    private final Work readWork;
    private final BioEndIo readEndIo = this::readDone;
    private final BioEndIo pieceEndIo = this::pieceDone;

    private final AtomicLong readsDone = new AtomicLong();
    private final AtomicLong writesDone = new AtomicLong();
    private final AtomicLong piecesSubmitted = new AtomicLong();

    /** Per-clone state: pieces of a write still in flight (plus one while the work builds them). */
    static final class CryptIo {
        final AtomicInteger pending = new AtomicInteger();
    }

    /** Parses the table line strictly, then builds the pools and the workqueues. */
    @SuppressWarnings("this-escape")
    public CryptTarget(TargetArgs args) throws TableException {
        super(args);
        args.requireCountAtLeast(5, "<cipher> <key> <iv_offset> <dev> <offset> [<#opt_params> <opt_params>]");
        if (!CIPHER.equals(args.word(1))) {
            throw args.error(1, "is not a supported cipher (only " + CIPHER + ")");
        }
        this.keyText = args.word(2);
        byte[] key = parseHexKey(args, 2);
        this.ivOffset = args.unsigned(3, "is not an IV offset in sectors");
        this.device = args.device(4);
        this.deviceName = args.word(4);
        this.offsetSectors = args.sector(5);
        int unit = Bio.SECTOR_SIZE;
        boolean large = false;
        List<String> opts = new ArrayList<>();
        if (args.count() > 5) {
            int n = args.intInRange(6, 0, 8, "the number of optional parameters");
            if (args.count() != 6 + n) {
                throw args.error(args.count() + " argument(s), expected " + (6 + n) + " for " + n
                        + " optional parameter(s)");
            }
            opts.add(args.word(6));
            for (int i = 7; i < 7 + n; i++) {
                String w = args.word(i);
                opts.add(w);
                if (w.startsWith("sector_size:")) {
                    unit = parseSectorSize(args, i, w.substring("sector_size:".length()));
                } else if (w.equals("iv_large_sectors")) {
                    large = true;
                } else {
                    throw args.error(i, "is not a supported optional parameter (sector_size:<bytes>, iv_large_sectors)");
                }
            }
        }
        this.optionalWords = List.copyOf(opts);
        this.unitBytes = unit;
        this.unitSectors = unit / Bio.SECTOR_SIZE;
        this.ivLargeSectors = large;
        if (args.length() % unitSectors != 0) {
            throw args.error("target length " + args.length() + " is not a multiple of sector_size " + unit + " bytes");
        }
        if (offsetSectors % unitSectors != 0) {
            throw args.error(5, "is not a multiple of sector_size " + unit + " bytes");
        }
        args.requireArea(5, device, offsetSectors, args.length());
        this.writeCipher = new XtsCipher(key);
        this.readCipher = new XtsCipher(key);
        java.util.Arrays.fill(key, (byte) 0);
        Kernel kernel = args.kernel();
        String name = args.mappedDeviceName() + "@" + args.begin();
        this.lock = new SpinLock("crypt " + name);
        this.writeWork = new Work("kcryptd write " + name, this::runWrites);
        this.readWork = new Work("kcryptd read " + name, this::runReads);
        try {
            this.bioSet = new BioSet(kernel, "crypt-" + name, kernel.reserves().targetBios(), 2, null, true);
            this.pagePool = new Mempool<>(kernel, "crypt-" + name + "-pages", PIECE_PAGES, kernel.pages());
            this.writeQueue = Workqueue.create(kernel, "kcryptd-write/" + name, Workqueue.MEM_RECLAIM, 1);
            this.readQueue = Workqueue.create(kernel, "kcryptd/" + name, Workqueue.MEM_RECLAIM, 1);
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    /** The key argument as bytes: 64 or 128 hex digits. */
    private static byte[] parseHexKey(TargetArgs args, int index) throws TableException {
        String hex = args.word(index);
        if (hex.length() != 64 && hex.length() != 128) {
            throw args.error(index, "is not a hex key of 32 or 64 bytes (" + hex.length() + " hex digits)");
        }
        byte[] key = new byte[hex.length() / 2];
        for (int i = 0; i < key.length; i++) {
            int hi = Character.digit(hex.charAt(2 * i), 16);
            int lo = Character.digit(hex.charAt(2 * i + 1), 16);
            if (hi < 0 || lo < 0) {
                throw new TableException(0, TYPE, index, "<key>", "is not a hex key (bad digit at " + (2 * i) + ")");
            }
            key[i] = (byte) ((hi << 4) | lo);
        }
        return key;
    }

    /** {@code sector_size:<bytes>}: 512..4096, a power of two. */
    private static int parseSectorSize(TargetArgs args, int index, String value) throws TableException {
        int bytes;
        try {
            bytes = Integer.parseInt(value);
        } catch (NumberFormatException e) {
            throw args.error(index, "sector_size is not a number");
        }
        if (bytes < Bio.SECTOR_SIZE || bytes > Page.SIZE || Integer.bitCount(bytes) != 1) {
            throw args.error(index, "sector_size must be a power of two in " + Bio.SECTOR_SIZE + ".." + Page.SIZE);
        }
        return bytes;
    }

    // ---- data path ---------------------------------------------------------------------------

    /** Flushes are remapped; reads and writes are taken over; anything else is killed. */
    @Override
    public MapResult map(Bio clone, TargetIo io) {
        clone.refuseReadReference(); // decrypts in the READ's pages: must have them filled
        if (clone.op() == BioOp.FLUSH || (clone.sizeBytes() == 0 && clone.op() != BioOp.DISCARD
                && clone.op() != BioOp.WRITE_ZEROES)) {
            clone.setDevice(device).setSector(0);
            return MapResult.REMAPPED;
        }
        if (clone.op() != BioOp.READ && clone.op() != BioOp.WRITE) {
            return MapResult.KILL;
        }
        long offset = targetOffset(clone);
        if (offset % unitSectors != 0 || clone.sectorCount() % unitSectors != 0
                || clone.sizeBytes() % Bio.SECTOR_SIZE != 0) {
            return MapResult.KILL;
        }
        if (clone.op() == BioOp.READ) {
            Bio lower = Bio.clone(clone, Gfp.NOIO, bioSet);
            lower.setDevice(device).setSector(offsetSectors + offset);
            lower.setEndIo(readEndIo);
            lower.setPrivateData(clone);
            Submit.submitBio(lower);
            return MapResult.SUBMITTED;
        }
        CryptIo cio = io.perBioData();
        cio.pending.set(1);
        lock.lock();
        writeList.add(clone);
        lock.unlock();
        writeQueue.queue(writeWork);
        return MapResult.SUBMITTED;
    }

    @Override
    protected Object newPerBioData() {
        return new CryptIo();
    }

    /** The IV sector of the unit starting {@code targetSector} 512-byte sectors into the target. */
    long ivSector(long targetSector) {
        long s = targetSector + ivOffset;
        return ivLargeSectors ? s / unitSectors : s;
    }

    /** The write work: encrypts and submits queued write clones, a batch at a time. */
    private void runWrites() {
        for (int n = 0; n < WORK_BATCH_MAX; n++) {
            lock.lock();
            Bio clone = writeList.pop();
            lock.unlock();
            if (clone == null) {
                return;
            }
            encryptAndSubmit(clone);
        }
        requeueIfPending(writeList, writeQueue, writeWork);
    }

    /**
     * Encrypts one write clone into pieces of at most {@link #PIECE_PAGES} pool pages; each piece
     * is submitted (and, outside any submit loop, in flight) before the next one's pages are taken.
     */
    private void encryptAndSubmit(Bio clone) {
        TargetIo tio = clone.frontPad();
        CryptIo cio = tio.perBioData();
        long targetSector = targetOffset(clone);
        int flags = clone.flags() & BioFlags.FUA;
        writeCursor.reset(clone);
        while (writeCursor.remaining() > 0) {
            int pieceBytes = Math.min(writeCursor.remaining(), PIECE_PAGES * Page.SIZE);
            int pages = (pieceBytes + Page.SIZE - 1) / Page.SIZE;
            Bio piece = bioSet.alloc(Gfp.NOIO, pages);
            piece.init(device, BioOp.WRITE, flags, offsetSectors + targetSector);
            takePages(pages);
            for (int p = 0; p < pages; p++) {
                int len = Math.min(Page.SIZE, pieceBytes - p * Page.SIZE);
                for (int at = 0; at < len; at += unitBytes) {
                    writeCursor.copyOut(writeScratch, 0, unitBytes);
                    writeCipher.encrypt(writeScratch, 0, unitBytes, ivSector(targetSector));
                    piecePages[p].buffer().put(at, writeScratch, 0, unitBytes);
                    targetSector += unitSectors;
                }
                if (!piece.addPage(piecePages[p], len, 0)) {
                    throw new IllegalStateException("crypt: piece of " + pages + " pages overflowed its vec array");
                }
                piecePages[p] = null;
            }
            piece.setEndIo(pieceEndIo);
            piece.setPrivateData(clone);
            cio.pending.incrementAndGet();
            piecesSubmitted.incrementAndGet();
            Submit.submitBio(piece);
        }
        writeDone(clone, cio);
    }

    /** Takes {@code pages} pages from the pool into {@link #piecePages}; blocks on the reserve if needed. */
    private void takePages(int pages) {
        for (int i = 0; i < pages; i++) {
            piecePages[i] = pagePool.alloc(Gfp.NOIO);
        }
    }

    /** A piece finished (atomic context): pages back to the pool, error to the clone, count down. */
    private void pieceDone(Bio piece) {
        Bio clone = (Bio) piece.privateData();
        BioStatus status = piece.status();
        for (int i = 0; i < piece.vecCount(); i++) {
            pagePool.free(piece.vecs()[i].page());
        }
        piece.put();
        if (status.isError()) {
            clone.setStatus(status);
        }
        TargetIo tio = clone.frontPad();
        writeDone(clone, tio.perBioData());
    }

    /** Drops one count of the write; the last ends the clone. */
    private void writeDone(Bio clone, CryptIo cio) {
        int left = cio.pending.decrementAndGet();
        if (left < 0) {
            throw new IllegalStateException("crypt: write " + clone + " completed " + (-left) + " time(s) too often");
        }
        if (left == 0) {
            writesDone.incrementAndGet();
            clone.endio();
        }
    }

    /** The lower read finished (atomic context): on success hand the clone to the read work. */
    private void readDone(Bio lower) {
        Bio clone = (Bio) lower.privateData();
        BioStatus status = lower.status();
        lower.put();
        if (status.isError()) {
            clone.setStatus(status);
            clone.endio();
            return;
        }
        lock.lock();
        readList.add(clone);
        lock.unlock();
        readQueue.queue(readWork);
    }

    /** The read work: decrypts queued read clones in place and ends them. */
    private void runReads() {
        for (int n = 0; n < WORK_BATCH_MAX; n++) {
            lock.lock();
            Bio clone = readList.pop();
            lock.unlock();
            if (clone == null) {
                return;
            }
            decryptInPlace(clone);
            readsDone.incrementAndGet();
            clone.endio();
        }
        requeueIfPending(readList, readQueue, readWork);
    }

    /** Decrypts every unit of the clone's range where it lies. */
    private void decryptInPlace(Bio clone) {
        long targetSector = targetOffset(clone);
        readIn.reset(clone);
        readOut.reset(clone);
        while (readIn.remaining() > 0) {
            readIn.copyOut(readScratch, 0, unitBytes);
            readCipher.decrypt(readScratch, 0, unitBytes, ivSector(targetSector));
            readOut.copyIn(readScratch, 0, unitBytes);
            targetSector += unitSectors;
        }
    }

    private void requeueIfPending(BioList list, Workqueue queue, Work work) {
        lock.lock();
        boolean more = !list.isEmpty();
        lock.unlock();
        if (more) {
            queue.queue(work);
        }
    }

    // ---- control path ------------------------------------------------------------------------

    @Override
    public int flushBioCount() {
        return 1;
    }

    @Override
    public List<BlockDevice> devices() {
        return List.of(device);
    }

    /** The cipher, the device, the unit and counters; never the key. */
    @Override
    public String statusInfo() {
        return CIPHER + " " + deviceName + " " + offsetSectors + " sector_size:" + unitBytes + " reads "
                + readsDone.get() + " writes " + writesDone.get() + " pieces " + piecesSubmitted.get();
    }

    /** The table line as loaded, key included (as {@code dmsetup table --showkeys}). */
    @Override
    public String statusTable() {
        StringBuilder sb = new StringBuilder().append(CIPHER).append(' ').append(keyText).append(' ')
                .append(ivOffset).append(' ').append(deviceName).append(' ').append(offsetSectors);
        for (String w : optionalWords) {
            sb.append(' ').append(w);
        }
        return sb.toString();
    }

    /** Drains and destroys the workqueues, then the pools (which check that everything came back). */
    @Override
    public void close() {
        Teardown teardown = new Teardown();
        for (AutoCloseable c : new AutoCloseable[] {writeQueue, readQueue, pagePool, bioSet}) {
            teardown.close(c);
        }
        writeQueue = null;
        readQueue = null;
        pagePool = null;
        bioSet = null;
        teardown.finish();
    }
}
