package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.EIO;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import io.blkstack.mem.Reservation;
import java.util.function.BooleanSupplier;

/**
 * The reader's memory for requests: its hold on the server's payload budget, and the bios and
 * pages it allocates and submits for the device.
 *
 * <p>Before any page of a request is allocated, the request takes its pages from the payload
 * budget ({@link #chargeBudget}), so connections holding pages for replies not yet sent can never
 * exhaust the arena against each other; the writer {@link #returnBudget returns} them once the
 * reply is sent. Bios come from the server's bio set (NOIO: the reader waits for the bio set's
 * reserve when memory is tight) and pages from the budget's promise in the arena's ledger. The
 * reader allocates one bio, fills it and submits it before it allocates the next, so it never
 * holds two unsubmitted bios of one set (seed 002, rule 1 of DESIGN.md section 1).
 */
final class RequestBios {

    private final NbdServer server;
    private final Kernel kernel;
    private final BlockDevice device;
    /** The device's logical block size: the unit of padding and read-modify-write. */
    final int blockBytes;
    /** What this connection holds of the server's payload budget (its fair share is checked there). */
    private final NbdServer.PayloadBudget.Share budgetShare;
    /** Whether the connection is ending: a budget wait then gives up. */
    private final BooleanSupplier ending;
    /** Scratch for bulk page allocation and freeing (reader task only). */
    private final Page[] readerPages = new Page[Bio.VECS_MAX];

    RequestBios(NbdServer server, BlockDevice device, NbdServer.PayloadBudget.Share budgetShare,
            BooleanSupplier ending) {
        this.server = server;
        this.kernel = server.kernel();
        this.device = device;
        this.blockBytes = device.limits().logicalBlockSize();
        this.budgetShare = budgetShare;
        this.ending = ending;
    }

    BlockDevice device() {
        return device;
    }

    /** The start of the logical block holding byte {@code position}. */
    long alignDown(long position) {
        return position & -(long) blockBytes;
    }

    /** The end of the logical block holding byte {@code position - 1}. */
    long alignUp(long position) {
        return (position + blockBytes - 1) & -(long) blockBytes;
    }

    /**
     * Takes budget pages for {@code bytes} of payload in one run (waits while other requests hold
     * it); false if the connection is ending, and the caller abandons the request.
     */
    boolean chargeBudget(NbdRequest r, long bytes) {
        return chargeBudgetPages(r, NbdServer.chargePages(bytes));
    }

    /** Takes {@code pages} of budget for the request; false (nothing taken) if the connection is ending. */
    boolean chargeBudgetPages(NbdRequest r, long pages) {
        if (pages > 0) {
            if (!server.budget().acquire(budgetShare, (int) pages, ending)) {
                return false;
            }
            r.budgetPages += (int) pages;
        }
        return true;
    }

    /**
     * A bio with {@code bytes} of fresh pages; null only when the kernel closes. The pages come
     * from the server's promise in the arena's ledger, all at once and without waiting: the
     * request was charged for them in the budget first. (Under the legacy budget they come from
     * the arena with NOIO, waiting for reclaim: the over-commit the checker finds.)
     */
    Bio allocDataBio(int bytes) {
        int pages = (bytes + Page.SIZE - 1) >>> Page.SHIFT;
        Bio bio = server.bioSet().alloc(Gfp.NOIO, pages);
        if (bio == null) {
            return null;
        }
        Page[] taken = readerPages;
        Reservation promise = server.payloadPages();
        int bulk;
        if (promise != null) {
            bulk = promise.allocBulk(taken, pages);
            if (bulk != pages) {
                throw new IllegalStateException("nbd payload budget: " + pages + " pages charged, " + bulk
                        + " left in its promise " + promise);
            }
        } else {
            // Most pages in one bulk take under the arena's lock; the rest one by one (reclaim, waits).
            bulk = kernel.pages().allocBulk(Gfp.NOIO, taken, pages);
        }
        for (int i = 0; i < pages; i++) {
            Page page;
            if (i < bulk) {
                page = taken[i];
                taken[i] = null;
            } else {
                page = kernel.pages().alloc(Gfp.NOIO);
            }
            if (page == null) {
                NbdRequest.freePagesAndPut(bio, readerPages);
                return null;
            }
            bio.addPage(page, Math.min(Page.SIZE, bytes - i * Page.SIZE), 0);
        }
        return bio;
    }

    /** A bio without pages (flush, trim, zeroes); null only when the kernel closes. */
    Bio allocEmptyBio() {
        return server.bioSet().alloc(Gfp.NOIO, 0);
    }

    /** Frees a bio's pages and drops it (one the reader allocated and will not submit, or has finished with). */
    void free(Bio bio) {
        NbdRequest.freePagesAndPut(bio, readerPages);
    }

    /** Frees the bios and pages of a request's window whose completions are in (a long WRITE's, by the reader). */
    void releaseWindow(NbdRequest r) {
        r.release(readerPages);
    }

    /** Points a bio at the device and submits it as part of the request. */
    void submit(NbdRequest r, Bio bio, BioOp op, int flags, long position) {
        bio.init(device, op, flags, position >>> Bio.SECTOR_SHIFT);
        bio.setEndIo(NbdRequest.END_IO).setPrivateData(r);
        r.addBio(bio);
        Submit.submitBio(bio);
    }

    /** Ends a request the reader could not finish (client gone, kernel closing); false: the reader stops. */
    boolean abandon(NbdRequest r) {
        r.lastWindow = true;
        r.fail(EIO);
        r.put();
        return false;
    }

    /** Returns budget pages of finished requests (the writer, after their replies). */
    void returnBudget(long pages) {
        server.budget().release(budgetShare, pages);
    }
}
