package io.blkstack.dm.snapshot;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import io.blkstack.wq.Work;
import io.blkstack.wq.Workqueue;

/**
 * Copies regions between devices in the background (the kernel's {@code kcopyd}). A job is one
 * contiguous range of any length (a run of adjacent chunks is one job); the service cuts it into
 * pieces of at most {@link #PIECE_PAGES_MAX} pages and keeps as many pieces in flight, of as many
 * jobs, as its reserve has slots. A piece reads the source into its slot's pages and writes them
 * to the destination; a piece whose source range is a hole (when the job allows it) reads nothing
 * and becomes one WRITE_ZEROES of the destination, as long as the hole goes on within the job (no
 * pages move, so the piece size does not bound it). A job's completion runs when its last piece
 * finished.
 *
 * <p><b>The reserve, admitted up front.</b> The service's pages are taken from the arena when it is
 * built and cut into slots of one piece each; it never allocates a page afterwards, so what it can
 * hold is fixed and counted before the NBD server computes its payload budget from what the stack
 * left (DESIGN.md section 3, "Admission, not hope"). A slot is taken whole or not at all (no job
 * holds part of the reserve while it waits for the rest: rule 1 of DESIGN.md section 1). The bios
 * come from the service's own {@link BioSet}, whose reserve holds one bio per slot, and a slot has
 * at most one bio at a time, so those allocations never wait for long either.
 *
 * <p><b>No waiting on itself.</b> All work runs on the service's own {@code MEM_RECLAIM} workqueue,
 * one item ({@link #dispatch}): it issues the writes of pieces whose reads completed, then starts
 * new pieces while slots are free, and returns when there are none; a finishing piece gives its
 * slot back and queues the dispatcher again. The workqueue therefore never sleeps on a slot that
 * only its own later work would free (rule 4), and completions only queue (rule 2).
 */
public final class CopyService implements AutoCloseable {

    /** The largest piece: 64 KiB, kcopyd's sub-job size. */
    public static final int PIECE_PAGES_MAX = 16;
    /** Pieces the dispatcher starts or advances in one run before yielding the worker. */
    static final int DISPATCH_BATCH_MAX = 16;

    /** One piece's slot: its share of the reserve and the piece it carries. */
    private static final class Slot {
        final Page[] pages;
        CopyJob job;
        long offsetSectors;
        int sectors;
        /** The piece is a WRITE_ZEROES of a hole. */
        boolean zeroes;
        /** On the ready list for its read (a refused WRITE_ZEROES), not its write. */
        boolean readNext;
        /**
         * Sectors of the piece after the current step: a hole piece is one WRITE_ZEROES however long,
         * but if the destination refuses it the piece is copied through the slot's pages, a slot's
         * worth per step.
         */
        long restSectors;
        Slot next;

        Slot(int pageCount) {
            this.pages = new Page[pageCount];
        }
    }

    private final Kernel kernel;
    private final String name;
    private final int piecePages;
    private final Slot[] slots;
    private final BioSet bios;
    private final Workqueue workqueue;
    private final Work dispatchWork;
    private final SpinLock lock;
    private final BioEndIo readEndIo = this::readDone;
    private final BioEndIo writeEndIo = this::writeDone;

    // Guarded by lock.
    private CopyJob head;
    private CopyJob tail;
    private Slot free;
    private Slot ready;
    private int jobsActive;
    private int jobsQueued;
    private boolean closed;

    /**
     * A service whose reserve is {@code reservePages} pages of the arena, cut into slots of
     * {@code min(reservePages, PIECE_PAGES_MAX)} pages.
     *
     * @throws IllegalArgumentException if the arena cannot give the reserve now
     */
    public CopyService(Kernel kernel, String name, int reservePages) {
        if (reservePages < 1) {
            throw new IllegalArgumentException("copy service " + name + ": reserve of " + reservePages + " pages");
        }
        this.kernel = kernel;
        this.name = name;
        this.piecePages = Math.min(reservePages, PIECE_PAGES_MAX);
        this.slots = new Slot[reservePages / piecePages];
        this.lock = new SpinLock("kcopyd " + name);
        this.dispatchWork = new Work("kcopyd " + name + " dispatch", this::dispatch);
        BioSet set = null;
        Workqueue wq = null;
        try {
            for (int i = 0; i < slots.length; i++) {
                slots[i] = new Slot(piecePages);
                for (int p = 0; p < piecePages; p++) {
                    // Built on a control path; a reserve the arena cannot give is said at start.
                    Page page = kernel.pages().alloc(Gfp.KERNEL | Gfp.NORETRY);
                    if (page == null) {
                        throw new IllegalArgumentException("copy service " + name + ": no memory for its reserve of "
                                + reservePages + " pages (page arena of " + kernel.pages().totalPages() + " pages, "
                                + kernel.pages().freePages() + " free): give serve more memory");
                    }
                    slots[i].pages[p] = page;
                }
                slots[i].next = free;
                free = slots[i];
            }
            set = new BioSet(kernel, "kcopyd-" + name, slots.length, slots.length, null, false);
            wq = Workqueue.create(kernel, "kcopyd/" + name, Workqueue.MEM_RECLAIM, 1);
        } catch (RuntimeException e) {
            if (set != null) {
                set.close();
            }
            freePages();
            throw e;
        }
        this.bios = set;
        this.workqueue = wq;
    }

    /** Pages a service built with {@code reservePages} keeps: whole slots only. */
    public static int pagesKept(int reservePages) {
        int piece = Math.min(reservePages, PIECE_PAGES_MAX);
        return reservePages / piece * piece;
    }

    /** Queues {@code job}; its {@link CopyJob#copyDone} runs when it finished. Never blocks. */
    public void copy(CopyJob job) {
        if (job.sectors <= 0 || (job.sectors & (Page.SIZE / Bio.SECTOR_SIZE - 1)) != 0) {
            throw new IllegalArgumentException("copy service " + name + ": job of " + job.sectors
                    + " sectors is not a positive number of whole pages");
        }
        job.status = BioStatus.OK;
        job.assignedSectors = 0;
        job.piecesInFlight = 0;
        lock.lock();
        try {
            if (closed) {
                throw new IllegalStateException("copy service " + name + " is closed");
            }
            job.next = null;
            if (tail == null) {
                head = job;
            } else {
                tail.next = job;
            }
            tail = job;
            jobsQueued++;
        } finally {
            lock.unlock();
        }
        workqueue.queue(dispatchWork);
    }

    /**
     * The dispatcher: the next step of pieces on the ready list first (the write after a read, or
     * the read of a hole whose WRITE_ZEROES was refused), then new pieces while slots are free.
     */
    private void dispatch() {
        for (int n = 0; n < DISPATCH_BATCH_MAX; n++) {
            Slot slot;
            boolean write;
            lock.lock();
            try {
                slot = ready;
                write = slot != null;
                if (write) {
                    ready = slot.next;
                } else {
                    slot = assignPieceLocked();
                    if (slot == null) {
                        return;
                    }
                }
                slot.next = null;
            } finally {
                lock.unlock();
            }
            if (write) {
                BioOp op = slot.readNext ? BioOp.READ : BioOp.WRITE;
                slot.readNext = false;
                Submit.submitBio(pieceBio(slot, op));
            } else {
                startPiece(slot);
            }
        }
        workqueue.queue(dispatchWork);
    }

    /** Under the lock: a free slot with the next piece of the oldest job, or null if either is missing. */
    private Slot assignPieceLocked() {
        CopyJob job = head;
        Slot slot = free;
        if (job == null || slot == null) {
            return null;
        }
        free = slot.next;
        if (job.assignedSectors == 0) {
            jobsQueued--;
            jobsActive++;
        }
        int pieceSectors = (int) Math.min(job.sectors - job.assignedSectors, stepSectors());
        slot.job = job;
        slot.offsetSectors = job.assignedSectors;
        slot.sectors = pieceSectors;
        slot.zeroes = false;
        slot.restSectors = 0;
        job.assignedSectors += pieceSectors;
        job.piecesInFlight++;
        leaveQueueIfAssignedLocked(job);
        return slot;
    }

    /**
     * Under the lock: a job whose every sector is assigned to a piece leaves the queue. Only the
     * head can be (the dispatcher assigns the oldest job's pieces in order).
     */
    private void leaveQueueIfAssignedLocked(CopyJob job) {
        if (job.assignedSectors != job.sectors) {
            return;
        }
        if (head != job) {
            throw new IllegalStateException("copy service " + name + ": job assigned in part is not the queue's head");
        }
        head = job.next;
        if (head == null) {
            tail = null;
        }
        job.next = null;
    }

    /**
     * Starts a new piece: a WRITE_ZEROES if its source is a hole the job may skip, else its read. A
     * hole piece takes the rest of the hole with it, as far as the job goes and no later piece was
     * assigned: one WRITE_ZEROES (one question to the source) however many pieces the hole spans.
     */
    private void startPiece(Slot slot) {
        CopyJob job = slot.job;
        long from = job.sourceSector + slot.offsetSectors;
        if (job.skipHoles) {
            long hole = holeSectors(job, from, job.sectors - slot.offsetSectors);
            if (hole >= slot.sectors) {
                lock.lock();
                try {
                    extendLocked(slot, hole - slot.sectors);
                } finally {
                    lock.unlock();
                }
                slot.zeroes = true;
                Bio bio = bios.alloc(Gfp.NOIO, 0);
                bio.init(job.destination, BioOp.WRITE_ZEROES, 0, job.destinationSector + slot.offsetSectors);
                bio.setSizeBytes(Math.toIntExact(slot.sectors << Bio.SECTOR_SHIFT));
                bio.setPrivateData(slot);
                bio.setEndIo(writeEndIo);
                Submit.submitBio(bio);
                return;
            }
        }
        Submit.submitBio(pieceBio(slot, BioOp.READ));
    }

    /**
     * Under the lock: grows the slot's piece by up to {@code sectors} if it is the last one assigned
     * of its job (the dispatcher assigns in order, so it is unless a later piece was taken); a job
     * assigned in full leaves the queue.
     */
    private void extendLocked(Slot slot, long sectors) {
        CopyJob job = slot.job;
        long extra = Math.min(sectors, job.sectors - job.assignedSectors);
        if (extra <= 0 || job.assignedSectors != slot.offsetSectors + slot.sectors) {
            return;
        }
        slot.sectors += Math.toIntExact(extra);
        job.assignedSectors += Math.toIntExact(extra);
        leaveQueueIfAssignedLocked(job);
    }

    /**
     * How many of the source's {@code max} sectors from {@code from} are hole before the first data,
     * asked run by run (a device may cut its answer at its own boundaries, a stripe's chunk for one);
     * each step advances by at least a sector, so the loop ends within {@code max}.
     */
    private static long holeSectors(CopyJob job, long from, long max) {
        if (!job.source.knowsAllocation()) {
            return 0;
        }
        long end = from + max;
        long at = from;
        while (at < end) {
            long run = job.source.allocatedExtent(at, end - at);
            if (run >= 0) {
                break;
            }
            at = Math.min(end, at - run);
        }
        return at - from;
    }

    /** A bio over the slot's pages for its piece of the source (READ) or the destination (WRITE). */
    private Bio pieceBio(Slot slot, BioOp op) {
        CopyJob job = slot.job;
        int pageCount = (slot.sectors << Bio.SECTOR_SHIFT) / Page.SIZE;
        Bio bio = bios.alloc(Gfp.NOIO, pageCount);
        if (op == BioOp.READ) {
            bio.init(job.source, op, 0, job.sourceSector + slot.offsetSectors);
        } else {
            bio.init(job.destination, op, 0, job.destinationSector + slot.offsetSectors);
        }
        for (int i = 0; i < pageCount; i++) {
            if (!bio.addPage(slot.pages[i], Page.SIZE, 0)) {
                throw new IllegalStateException("copy bio full at page " + i + " of " + pageCount);
            }
        }
        bio.setPrivateData(slot);
        bio.setEndIo(op == BioOp.READ ? readEndIo : writeEndIo);
        return bio;
    }

    /** Read completion (atomic): the write is issued by the dispatcher. */
    private void readDone(Bio bio) {
        Slot slot = (Slot) bio.privateData();
        BioStatus status = bio.status();
        bio.put();
        if (status.isError()) {
            pieceDone(slot, status);
            return;
        }
        lock.lock();
        try {
            slot.next = ready;
            ready = slot;
        } finally {
            lock.unlock();
        }
        workqueue.queue(dispatchWork);
    }

    /**
     * Write completion (atomic). A WRITE_ZEROES the destination does not support is done again as a
     * copy: the piece goes back to the dispatcher as a read of the hole.
     */
    private void writeDone(Bio bio) {
        Slot slot = (Slot) bio.privateData();
        BioStatus status = bio.status();
        bio.put();
        if (slot.zeroes && status == BioStatus.NOTSUPP) {
            slot.zeroes = false;
            int step = Math.min(slot.sectors, stepSectors());
            slot.restSectors = slot.sectors - step;
            slot.sectors = step;
            readNextStep(slot);
            return;
        }
        if (!status.isError() && slot.restSectors > 0) {
            slot.offsetSectors += slot.sectors;
            slot.sectors = (int) Math.min(slot.restSectors, stepSectors());
            slot.restSectors -= slot.sectors;
            readNextStep(slot);
            return;
        }
        pieceDone(slot, status);
    }

    /** Sectors the slot's pages carry: one step of a copied piece. */
    private int stepSectors() {
        return piecePages * (Page.SIZE / Bio.SECTOR_SIZE);
    }

    /** Queues the slot for the dispatcher to read its (next) step (atomic context). */
    private void readNextStep(Slot slot) {
        lock.lock();
        try {
            slot.readNext = true;
            slot.next = ready;
            ready = slot;
        } finally {
            lock.unlock();
        }
        workqueue.queue(dispatchWork);
    }

    /** Gives the slot back, lets the next piece run, and tells the owner when its job's last piece ended. */
    private void pieceDone(Slot slot, BioStatus status) {
        CopyJob job = slot.job;
        boolean jobDone;
        lock.lock();
        try {
            if (status.isError() && !job.status.isError()) {
                job.status = status;
            }
            job.piecesInFlight--;
            jobDone = job.piecesInFlight == 0 && job.assignedSectors == job.sectors;
            if (jobDone) {
                jobsActive--;
            }
            slot.job = null;
            slot.next = free;
            free = slot;
        } finally {
            lock.unlock();
        }
        if (jobDone) {
            job.copyDone(job.status);
        }
        workqueue.queue(dispatchWork);
    }

    /** Pieces that can be in flight at once (the reserve's slots). */
    public int slotCount() {
        return slots.length;
    }

    /** Pages the service holds (its whole reserve). */
    public int reservePages() {
        return slots.length * piecePages;
    }

    private void freePages() {
        for (Slot s : slots) {
            if (s == null) {
                continue;
            }
            for (int p = 0; p < s.pages.length; p++) {
                if (s.pages[p] != null) {
                    kernel.pages().free(s.pages[p]);
                    s.pages[p] = null;
                }
            }
        }
    }

    /** Drains the workqueue and frees the reserve; every job must have finished. */
    @Override
    public void close() {
        lock.lock();
        closed = true;
        int left = jobsActive + jobsQueued;
        lock.unlock();
        workqueue.close();
        RuntimeException failure = null;
        try {
            bios.close();
        } catch (RuntimeException e) {
            failure = e;
        }
        freePages();
        if (left != 0) {
            throw new IllegalStateException("copy service " + name + " closed with " + left + " job(s) unfinished");
        }
        if (failure != null) {
            throw failure;
        }
    }
}
