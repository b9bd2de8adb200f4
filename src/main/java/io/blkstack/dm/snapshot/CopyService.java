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
import io.blkstack.mem.Mempool;
import io.blkstack.mem.Page;
import io.blkstack.wq.Work;
import io.blkstack.wq.Workqueue;

/**
 * Copies regions between devices in the background (the kernel's {@code kcopyd}): each job reads
 * the source into pages and writes them to the destination, then calls the job's completion.
 *
 * <p><b>Reserves.</b> The pages come from the service's own {@link Mempool} with a reserve of one
 * job's worth, the bios from its own {@link BioSet} with one bio per job allowed in flight, and the
 * work runs on its own {@code MEM_RECLAIM} workqueue, so a copy moves even when the kernel's memory
 * and worker pool are exhausted.
 *
 * <p><b>Throttle and no waiting.</b> At most {@link #COPIES_IN_FLIGHT_MAX} jobs run at once; the
 * rest wait on an intrusive FIFO. A job takes its pages without blocking: if the reserve is held
 * by running jobs, it goes back to the head of the FIFO and is retried when a running job gives
 * its pages back. The workqueue therefore never sleeps on pages that only its own later work
 * items would free (rule 4 of DESIGN.md section 1), and no job holds part of the reserve while
 * waiting for the rest (rule 1). A job holds at most one bio, and bios in flight never exceed the
 * bio set's reserve, so its allocations do not wait either.
 */
public final class CopyService implements AutoCloseable {

    /** Jobs copying at once. */
    public static final int COPIES_IN_FLIGHT_MAX = 4;
    /** Jobs the dispatcher starts in one run before yielding the worker. */
    static final int DISPATCH_BATCH_MAX = 16;

    private final String name;
    private final int jobPagesMax;
    private final Mempool<Page> pagePool;
    private final BioSet bios;
    private final Workqueue workqueue;
    private final Work dispatchWork;
    private final SpinLock lock;
    private final BioEndIo readEndIo = this::readDone;
    private final BioEndIo writeEndIo = this::writeDone;

    // Guarded by lock.
    private CopyJob head;
    private CopyJob tail;
    private int active;
    private int queued;
    private boolean closed;

    /** A service for jobs of at most {@code jobPagesMax} pages. */
    public CopyService(Kernel kernel, String name, int jobPagesMax) {
        if (jobPagesMax < 1 || jobPagesMax > Bio.VECS_MAX) {
            throw new IllegalArgumentException("copy service " + name + ": " + jobPagesMax + " pages per job, not in 1.."
                    + Bio.VECS_MAX);
        }
        this.name = name;
        this.jobPagesMax = jobPagesMax;
        this.lock = new SpinLock("kcopyd " + name);
        Mempool<Page> pool = null;
        BioSet set = null;
        try {
            pool = new Mempool<>(kernel, "kcopyd-" + name + "-pages", jobPagesMax, kernel.pages());
            set = new BioSet(kernel, "kcopyd-" + name, COPIES_IN_FLIGHT_MAX, COPIES_IN_FLIGHT_MAX, null, false);
            this.workqueue = Workqueue.create(kernel, "kcopyd/" + name, Workqueue.MEM_RECLAIM, 1);
        } catch (RuntimeException e) {
            if (set != null) {
                set.close();
            }
            if (pool != null) {
                pool.close();
            }
            throw e;
        }
        this.pagePool = pool;
        this.bios = set;
        this.dispatchWork = new Work("kcopyd " + name + " dispatch", this::dispatch);
    }

    /** Queues {@code job}; its {@link CopyJob#copyDone} runs when it finished. Never blocks. */
    public void copy(CopyJob job) {
        int pagesNeeded = (job.sectors << Bio.SECTOR_SHIFT) / Page.SIZE;
        if (job.sectors <= 0 || pagesNeeded * Page.SIZE != job.sectors << Bio.SECTOR_SHIFT || pagesNeeded > jobPagesMax
                || pagesNeeded > job.pages.length) {
            throw new IllegalArgumentException("copy service " + name + ": job of " + job.sectors
                    + " sectors is not 1.." + jobPagesMax + " whole pages");
        }
        job.service = this;
        job.status = BioStatus.OK;
        job.pageCount = pagesNeeded;
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
            queued++;
        } finally {
            lock.unlock();
        }
        workqueue.queue(dispatchWork);
    }

    /** The dispatcher: starts queued jobs while the throttle and the page reserve allow. */
    private void dispatch() {
        for (int n = 0; n < DISPATCH_BATCH_MAX; n++) {
            CopyJob job;
            lock.lock();
            try {
                if (active >= COPIES_IN_FLIGHT_MAX || head == null) {
                    return;
                }
                job = head;
                head = job.next;
                if (head == null) {
                    tail = null;
                }
                job.next = null;
                queued--;
                active++;
            } finally {
                lock.unlock();
            }
            if (!takePages(job)) {
                requeueHead(job);
                return;
            }
            startRead(job);
        }
        workqueue.queue(dispatchWork);
    }

    /** Takes all the job's pages without blocking, or none. */
    private boolean takePages(CopyJob job) {
        for (int i = 0; i < job.pageCount; i++) {
            Page p = pagePool.alloc(Gfp.NOWAIT);
            if (p == null) {
                for (int j = 0; j < i; j++) {
                    pagePool.free(job.pages[j]);
                    job.pages[j] = null;
                }
                return false;
            }
            job.pages[i] = p;
        }
        return true;
    }

    /** Puts a job that found no pages back at the head; a running job's end retries it. */
    private void requeueHead(CopyJob job) {
        lock.lock();
        try {
            active--;
            job.next = head;
            head = job;
            if (tail == null) {
                tail = job;
            }
            queued++;
            if (active == 0) {
                // Nobody holds pages, so the next attempt finds the reserve full.
                workqueue.queue(dispatchWork);
            }
        } finally {
            lock.unlock();
        }
    }

    /** Builds a bio over the job's pages. */
    private Bio jobBio(CopyJob job, BioOp op) {
        Bio bio = bios.alloc(Gfp.NOIO, job.pageCount);
        if (op == BioOp.READ) {
            bio.init(job.source, op, 0, job.sourceSector);
        } else {
            bio.init(job.destination, op, 0, job.destinationSector);
        }
        for (int i = 0; i < job.pageCount; i++) {
            if (!bio.addPage(job.pages[i], Page.SIZE, 0)) {
                throw new IllegalStateException("copy bio full at page " + i + " of " + job.pageCount);
            }
        }
        bio.setPrivateData(job);
        bio.setEndIo(op == BioOp.READ ? readEndIo : writeEndIo);
        return bio;
    }

    private void startRead(CopyJob job) {
        Submit.submitBio(jobBio(job, BioOp.READ));
    }

    /** Read completion (atomic): the write is issued from the workqueue. */
    private void readDone(Bio bio) {
        CopyJob job = (CopyJob) bio.privateData();
        BioStatus status = bio.status();
        bio.put();
        if (status.isError()) {
            job.status = status;
            finish(job);
            return;
        }
        workqueue.queue(job.writeWork);
    }

    /** The write phase, on the workqueue. */
    void writePhase(CopyJob job) {
        Submit.submitBio(jobBio(job, BioOp.WRITE));
    }

    /** Write completion (atomic). */
    private void writeDone(Bio bio) {
        CopyJob job = (CopyJob) bio.privateData();
        job.status = bio.status();
        bio.put();
        finish(job);
    }

    /** Gives the pages back, lets the next job run, and tells the owner. */
    private void finish(CopyJob job) {
        for (int i = 0; i < job.pageCount; i++) {
            pagePool.free(job.pages[i]);
            job.pages[i] = null;
        }
        lock.lock();
        try {
            active--;
        } finally {
            lock.unlock();
        }
        BioStatus status = job.status;
        job.copyDone(status);
        workqueue.queue(dispatchWork);
    }

    /** Drains the workqueue and frees the reserves; every job must have finished. */
    @Override
    public void close() {
        lock.lock();
        closed = true;
        int left = active + queued;
        lock.unlock();
        workqueue.close();
        RuntimeException failure = null;
        try {
            bios.close();
        } catch (RuntimeException e) {
            failure = e;
        }
        pagePool.close();
        if (left != 0) {
            throw new IllegalStateException("copy service " + name + " closed with " + left + " job(s) unfinished");
        }
        if (failure != null) {
            throw failure;
        }
    }
}
