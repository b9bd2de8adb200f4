package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Mempool;
import io.blkstack.mem.Page;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Maps a large request given as a scatter list of page segments onto several bios, one per
 * segment, bounces the segments that are not aligned for direct I/O, submits the bios and waits
 * for all of them (the kernel's {@code blk_rq_map_kern_sg} with {@code blk_queue_bounce}). A
 * pass-through path for callers that receive big requests in their own buffers, such as the NBD
 * server; one mapper serves one task at a time (one connection).
 *
 * <p>Why the policy (seed 002): bouncing a bio allocates again, a bio and a page. Under
 * {@code map-sg=legacy} every bio of the request is allocated first from the shared bio set, then
 * each is bounced with a second bio from the SAME set and a page from the shared bounce page pool,
 * and only then is anything submitted: a request holds elements of the shared set while asking for
 * more, so requests of several tasks (or one request larger than half the reserve) can empty the
 * reserve and wait forever. The fixed designs keep Jens Axboe's golden rule (DESIGN.md section 1,
 * rule 1): {@code private-pool} bounces from this mapper's own bio set and page pool, sized for a
 * whole request and used by one request at a time, so a bounce never waits for an element another
 * request holds; {@code in-flight} allocates one bio at a time from the shared set, bounces it into
 * its own page at once and submits it before allocating the next, so whatever it holds is on its
 * way back.
 */
public final class RequestMapper implements AutoCloseable {

    /** One scatter-list element: a byte range of a page. */
    public record Segment(Page page, int offset, int length) {

        /** Checks the range lies in the page and is whole sectors. */
        public Segment {
            if (offset < 0 || length <= 0 || offset + length > Page.SIZE || length % Bio.SECTOR_SIZE != 0) {
                throw new IllegalArgumentException("segment offset " + offset + " length " + length
                        + ": must lie in one page and be whole sectors");
            }
        }
    }

    private final Kernel kernel;
    private final String name;
    private final BioSet shared;
    private final Mempool<Page> sharedPages;
    private final int segmentsMax;
    private final int alignment;
    private final BioSet privateSet;
    private final Mempool<Page> privatePages;
    private final AtomicReference<Task> user = new AtomicReference<>();
    private final AtomicLong bounces;
    private final AtomicLong privateBounces;
    private final BioEndIo bounceEndIo = this::bounceDone;
    private final BioEndIo directEndIo = this::directDone;

    /**
     * @param shared the bio set the request's bios come from (the caller's)
     * @param sharedPages the shared bounce page pool (legacy and in-flight)
     * @param segmentsMax the most segments one request may have; sizes the private pools
     * @param alignment byte alignment direct I/O needs; segments off it are bounced
     */
    public RequestMapper(Kernel kernel, String name, BioSet shared, Mempool<Page> sharedPages, int segmentsMax,
            int alignment) {
        if (segmentsMax < 1 || segmentsMax > Bio.VECS_MAX) {
            throw new IllegalArgumentException("request mapper " + name + ": segmentsMax " + segmentsMax + " not in 1.."
                    + Bio.VECS_MAX);
        }
        if (alignment < Bio.SECTOR_SIZE || alignment > Page.SIZE || Integer.bitCount(alignment) != 1) {
            throw new IllegalArgumentException("request mapper " + name + ": alignment " + alignment
                    + " must be a power of two in " + Bio.SECTOR_SIZE + ".." + Page.SIZE);
        }
        this.kernel = kernel;
        this.name = name;
        this.shared = shared;
        this.sharedPages = sharedPages;
        this.segmentsMax = segmentsMax;
        this.alignment = alignment;
        this.bounces = kernel.counters().get("scenario.bounces");
        this.privateBounces = kernel.counters().get("scenario.private-bounces");
        if ("private-pool".equals(kernel.policies().value(PolicySwitch.MAP_SG))) {
            this.privateSet = new BioSet(kernel, name + "-bounce", segmentsMax, segmentsMax, null, false);
            this.privatePages = pagePool(kernel, name + "-bounce-pages", segmentsMax);
        } else {
            this.privateSet = null;
            this.privatePages = null;
        }
    }

    /** A mempool of pages over the kernel's page allocator with {@code reserve} pages kept back. */
    public static Mempool<Page> pagePool(Kernel kernel, String name, int reserve) {
        return new Mempool<>(kernel, name, reserve, kernel.pages());
    }

    /** The per-request state every bio's completion counts down, allocated by the caller's task. */
    private static final class Request {
        final Completion done;
        final AtomicInteger remaining = new AtomicInteger();
        final AtomicReference<BioStatus> status = new AtomicReference<>(BioStatus.OK);
        final boolean read;

        Request(String name, boolean read) {
            this.done = new Completion("map-sg " + name);
            this.read = read;
        }

        void finishOne(BioStatus s) {
            if (s != BioStatus.OK) {
                status.compareAndSet(BioStatus.OK, s);
            }
            int left = remaining.decrementAndGet();
            if (left < 0) {
                throw new IllegalStateException("request completed " + (-left) + " time(s) more than it has bios");
            }
            if (left == 0) {
                done.complete();
            }
        }
    }

    /** What a bounce bio's completion needs: the user's segment, the request and the pool of its page. */
    private record Bounce(Segment segment, Request request, Mempool<Page> pagePool) {
    }

    /**
     * Reads or writes the scatter list at {@code sector} of {@code dev} and waits for every bio;
     * returns the first error, or OK.
     */
    public BioStatus transfer(BlockDevice dev, BioOp op, long sector, Segment[] sg) {
        if (sg.length < 1 || sg.length > segmentsMax) {
            throw new IllegalArgumentException("request mapper " + name + ": " + sg.length + " segments, not in 1.."
                    + segmentsMax);
        }
        if (op != BioOp.READ && op != BioOp.WRITE) {
            throw new IllegalArgumentException("request mapper " + name + ": " + op + " carries no scatter list");
        }
        Task self = Task.current();
        if (!user.compareAndSet(null, self)) {
            throw new IllegalStateException("request mapper " + name + " used by " + self + " while " + user.get()
                    + " is in a request: one mapper serves one task at a time");
        }
        try {
            Request request = new Request(name, op == BioOp.READ);
            request.remaining.set(sg.length);
            Bio[] originals = new Bio[sg.length];
            if ("in-flight".equals(kernel.policies().value(PolicySwitch.MAP_SG))) {
                mapInFlight(dev, op, sector, sg, originals, request);
            } else {
                mapAllThenBounce(dev, op, sector, sg, originals, request);
            }
            request.done.await();
            for (Bio b : originals) {
                if (b != null) {
                    b.put();
                }
            }
            return request.status.get();
        } finally {
            user.set(null);
        }
    }

    /** Legacy and private-pool: allocate every bio, then bounce each, then submit them all. */
    private void mapAllThenBounce(BlockDevice dev, BioOp op, long sector, Segment[] sg, Bio[] originals, Request request) {
        long at = sector;
        for (int i = 0; i < sg.length; i++) {
            originals[i] = mapSegment(dev, op, at, sg[i]);
            at += sg[i].length() / Bio.SECTOR_SIZE;
        }
        boolean legacy = privateSet == null;
        BioSet bounceSet = legacy ? shared : privateSet;
        Mempool<Page> pagePool = legacy ? sharedPages : privatePages;
        Bio[] toSubmit = new Bio[sg.length];
        for (int i = 0; i < sg.length; i++) {
            toSubmit[i] = misaligned(sg[i]) ? bounce(originals[i], sg[i], request, bounceSet, pagePool)
                    : direct(originals[i], request);
        }
        for (Bio b : toSubmit) {
            Submit.submitBio(b);
        }
    }

    /**
     * In-flight: one bio at a time from the shared set, submitted before the next is allocated; a
     * misaligned segment gets a bio over a bounce page directly, so no second bio is ever needed.
     */
    private void mapInFlight(BlockDevice dev, BioOp op, long sector, Segment[] sg, Bio[] originals, Request request) {
        long at = sector;
        for (int i = 0; i < sg.length; i++) {
            if (misaligned(sg[i])) {
                Page page = sharedPages.alloc(Gfp.NOIO);
                Bio b = shared.alloc(Gfp.NOIO, 1);
                b.init(dev, op, 0, at);
                Submit.submitBio(bounceOver(b, page, sg[i], request, sharedPages, bounces));
            } else {
                originals[i] = mapSegment(dev, op, at, sg[i]);
                Submit.submitBio(direct(originals[i], request));
            }
            at += sg[i].length() / Bio.SECTOR_SIZE;
        }
    }

    /** A bio from the shared set over one segment. */
    private Bio mapSegment(BlockDevice dev, BioOp op, long sector, Segment s) {
        Bio bio = shared.alloc(Gfp.NOIO, 1);
        bio.init(dev, op, 0, sector);
        if (!bio.addPage(s.page(), s.length(), s.offset())) {
            throw new IllegalStateException("a one-segment bio refused " + s);
        }
        return bio;
    }

    private boolean misaligned(Segment s) {
        return s.offset() % alignment != 0 || s.length() % alignment != 0;
    }

    /** Submits the original itself; it gets a reference for the request to put after the wait. */
    private Bio direct(Bio original, Request request) {
        original.get();
        original.setEndIo(directEndIo);
        original.setPrivateData(request);
        return original;
    }

    /**
     * A second bio from {@code set} over a page from {@code pagePool}, standing in for the original
     * (the kernel's {@code __blk_queue_bounce}); the original completes when the bounce does.
     */
    private Bio bounce(Bio original, Segment s, Request request, BioSet set, Mempool<Page> pagePool) {
        Bio b = set.alloc(Gfp.NOIO, 1);
        Page page = pagePool.alloc(Gfp.NOIO);
        b.init(original.device(), original.op(), 0, original.sector());
        return bounceOver(b, page, s, request, pagePool, set == shared ? bounces : privateBounces);
    }

    /** Sets {@code b} up over the bounce page with the segment's data (for a write) and the bounce completion. */
    private Bio bounceOver(Bio b, Page page, Segment s, Request request, Mempool<Page> pagePool, AtomicLong counter) {
        if (!b.addPage(page, s.length(), 0)) {
            throw new IllegalStateException("a bounce bio refused its page: " + b);
        }
        if (b.op() == BioOp.WRITE) {
            page.copyFrom(0, s.page(), s.offset(), s.length());
        }
        b.setEndIo(bounceEndIo);
        b.setPrivateData(new Bounce(s, request, pagePool));
        counter.incrementAndGet();
        return b;
    }

    /** Completion of a submitted original. */
    private void directDone(Bio bio) {
        Request request = (Request) bio.privateData();
        BioStatus s = bio.status();
        bio.put();
        request.finishOne(s);
    }

    /** Completion of a bounce: copy back on read, give the page back, complete the request's share. */
    private void bounceDone(Bio b) {
        Bounce info = (Bounce) b.privateData();
        Page page = b.vecs()[0].page();
        BioStatus s = b.status();
        if (info.request().read && s == BioStatus.OK) {
            Segment seg = info.segment();
            seg.page().copyFrom(seg.offset(), page, 0, seg.length());
        }
        info.pagePool().free(page);
        b.put();
        info.request().finishOne(s);
    }

    @Override
    public void close() {
        if (privateSet != null) {
            privateSet.close();
            privatePages.close();
        }
    }
}
