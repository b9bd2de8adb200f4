package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.CMD_READ;
import static io.blkstack.nbd.NbdProtocol.CMD_WRITE;
import static io.blkstack.nbd.NbdProtocol.EIO;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioIter;
import io.blkstack.bio.BioOp;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.SegmentViews;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicLong;

/**
 * READ and WRITE, the two commands with payload, as the reader serves them.
 *
 * <p><b>Any byte range.</b> The export advertises a minimum block size of 1. A READ or WRITE covers
 * its range padded out to whole logical blocks of the device; the writer sends only the client's
 * bytes of a READ, and a WRITE that does not cover whole blocks is a {@link ReadModifyWrite}.
 * Every WRITE registers its block range with the device's {@link io.blkstack.block.TrackedRequests}
 * before it takes budget or pages, as serialising if it is a read-modify-write, so overlapping
 * writes never tear.
 *
 * <p><b>Windows.</b> A request longer than the export's maximum payload (a client that never asked
 * for the block sizes may send one) is served window by window ({@link NbdRequest}), holding one
 * window of budget. A READ of one window maps holes (structured replies only) and is charged per
 * data extent (each runs its own bios, vec arrays and last page).
 *
 * <p><b>A long READ with simple replies has the wire to itself.</b> A simple reply is one header
 * and then every byte of the data, with nothing between; but the writer sends a long READ window
 * by window and goes back to its reply ring between them, where any other finished request would
 * be sent into the middle of the data (nbd-tester-client's {@code integrityhuge} saw a reply
 * header 32 MiB into a READ). So before its first window the reader waits until every other
 * request of the connection is replied to, and after its last window until its reply is sent,
 * before it reads the next request. Structured replies need none of this: chunks of different
 * requests may interleave.
 */
final class ReadWriteCommands {

    /** Bytes of payload one bio carries: one full vec array of pages. */
    static final int BIO_BYTES_MAX = NbdConnection.BIO_BYTES_MAX;

    private final NbdConnection connection;
    private final RequestInput input;
    private final RequestBios bios;
    private final ReadModifyWrite rmw;
    private final BlockDevice device;
    private final boolean structured;
    /** Bytes of device range one window covers: the export's maximum payload (a multiple of any block size). */
    private final long windowBytes;
    /** Kernel counter {@code nbd.read-modify-writes}: unaligned WRITEs and WRITE_ZEROES served by read-modify-write. */
    private final AtomicLong readModifyWrites;
    /** Kernel counter {@code nbd.windowed-requests}: READs and WRITEs longer than one window. */
    private final AtomicLong windowedRequests;
    private final BioIter iter = new BioIter();
    private final ByteBuffer[] scatter = new ByteBuffer[Bio.VECS_MAX];

    ReadWriteCommands(NbdConnection connection, RequestInput input, RequestBios bios, ReadModifyWrite rmw,
            Export export, boolean structured) {
        this.connection = connection;
        this.input = input;
        this.bios = bios;
        this.rmw = rmw;
        this.device = bios.device();
        this.structured = structured;
        this.windowBytes = export.maximumPayload();
        this.readModifyWrites = connection.kernel().counters().get("nbd.read-modify-writes");
        this.windowedRequests = connection.kernel().counters().get("nbd.windowed-requests");
    }

    /**
     * READ: the client's range padded out to whole logical blocks (the writer sends only the
     * client's bytes), in windows of at most the maximum payload. A request of one window maps
     * holes (structured replies only) and charges the budget for its data; a longer one charges
     * one window once and reads every window as data.
     */
    boolean read(NbdRequest r) {
        if (r.length == 0) {
            r.put();
            return true;
        }
        long end = r.offset + r.length;
        long start = bios.alignDown(r.offset);
        long paddedEnd = bios.alignUp(end);
        long window = windowBytes;
        boolean windowed = paddedEnd - start > window;
        boolean alone = windowed && !structured;
        if (alone) {
            r.stopTimeoutClock();
            connection.awaitInFlightAtMost(1); // every earlier reply sent: none can land in this one
            r.startTimeoutClock();
        }
        if (windowed) {
            windowedRequests.incrementAndGet();
            if (!bios.chargeBudget(r, window)) {
                return bios.abandon(r);
            }
        }
        for (long position = start; ; ) {
            long windowEnd = Math.min(paddedEnd, position + window);
            boolean last = windowEnd == paddedEnd;
            r.window(position, windowEnd, (int) (Math.max(r.offset, position) - position),
                    last ? (int) (paddedEnd - end) : 0, last);
            if (!windowed && structured && device.knowsAllocation()) {
                mapExtents(device, r, position, windowEnd, NbdConnection.READ_EXTENTS_MAX, false);
            } else {
                r.addExtent(windowEnd - position, false);
            }
            if (!windowed) {
                // Each data extent is its own run of bios, each with its own vec array and pages.
                long pages = 0;
                for (int e = 0; e < r.extentCount; e++) {
                    pages += r.extentHole[e] ? 0 : NbdServer.chargePages(r.extentBytes[e]);
                }
                if (!bios.chargeBudgetPages(r, pages)) {
                    return bios.abandon(r);
                }
            }
            if (!submitReadWindow(r)) {
                return false;
            }
            if (last) {
                r.put();
                if (alone) {
                    connection.awaitInFlightAtMost(0); // sent whole before a later request can finish
                }
                return true;
            }
            if (!windowDone(r)) {
                return !connection.broken;
            }
            position = windowEnd;
        }
    }

    /** Submits the bios of the current window's data extents; false if the reader must stop. */
    private boolean submitReadWindow(NbdRequest r) {
        long position = r.windowStart;
        // Checked per window: a table reload may change it (and the map checks again).
        boolean byReference = r.length >= connection.readReferenceMinBytes && device.readsByReference();
        for (int e = 0; e < r.extentCount; e++) {
            long extentEnd = position + r.extentBytes[e];
            if (r.extentHole[e]) {
                position = extentEnd;
                continue;
            }
            while (position < extentEnd) {
                int n = (int) Math.min(extentEnd - position, BIO_BYTES_MAX);
                Bio bio = bios.allocDataBio(n);
                if (bio == null) {
                    return bios.abandon(r);
                }
                if (byReference) {
                    r.offerReference(bio);
                }
                bios.submit(r, bio, BioOp.READ, 0, position);
                position += n;
            }
        }
        return true;
    }

    /**
     * Waits until a window that is not the request's last is done (a READ's sent by the writer
     * and its pages freed; a WRITE's bios completed, and then freed here); then re-arms the
     * request for the next window. False if the request ended there: the writer finished it on a
     * read error, it was lost (to a fault or the request timeout, which broke the connection; if it
     * came back meanwhile, the writer has freed it), or the transport broke (the request is then
     * finished here, failed).
     */
    private boolean windowDone(NbdRequest r) {
        r.put();
        r.windowSent.await();
        if (!connection.ownsWindow(r)) {
            return false; // lost, or over and freed by the writer: the request is not ours to touch
        }
        if (r.command == CMD_READ && r.errno() != 0) {
            return false; // the writer sent the error and released the slot
        }
        if (r.command == CMD_WRITE) {
            bios.releaseWindow(r); // its bios completed; the writer never saw this window
        }
        r.rearm();
        if (connection.broken) {
            bios.abandon(r);
            return false;
        }
        return true;
    }

    /**
     * WRITE: the client's range padded out to whole logical blocks. An unaligned one is a
     * read-modify-write: registered as serialising with the device's tracked requests (so no other
     * write to those blocks runs between its read and its write, and it waits for the ones in
     * flight), then the partial first and last blocks are read (one synchronous bio at a time, no
     * other bio held), and each data bio is filled with old bytes, then payload from the wire,
     * then old bytes. Aligned writes register too (not serialising), so a read-modify-write waits
     * for them. Windows of at most the maximum payload; each bio is read from the wire and
     * submitted before the next is allocated.
     */
    boolean write(NbdRequest r, int fua) {
        if (r.length == 0) {
            r.put();
            return true;
        }
        long end = r.offset + r.length;
        long start = bios.alignDown(r.offset);
        long paddedEnd = bios.alignUp(end);
        int head = (int) (r.offset - start);
        int tail = (int) (paddedEnd - end);
        if (!r.track(device.trackedRequests(), start, paddedEnd, head != 0 || tail != 0)) {
            r.fail(EIO); // its range overlaps a write lost to a fault, which may never end
            r.put();
            return input.skipPayload(r.length);
        }
        if (head != 0 || tail != 0) {
            readModifyWrites.incrementAndGet();
        }
        long window = windowBytes;
        if (paddedEnd - start > window) {
            windowedRequests.incrementAndGet();
        }
        if (!bios.chargeBudget(r, Math.min(paddedEnd - start, window))) {
            return bios.abandon(r);
        }
        if (!rmw.readEndBlocks(start, paddedEnd, head, tail)) {
            r.fail(EIO);
            r.put();
            return input.skipPayload(r.length);
        }
        for (long position = start; ; ) {
            long windowEnd = Math.min(paddedEnd, position + window);
            boolean last = windowEnd == paddedEnd;
            r.window(position, windowEnd, position == start ? head : 0, last ? tail : 0, last);
            while (position < windowEnd) {
                int n = (int) Math.min(windowEnd - position, BIO_BYTES_MAX);
                Bio bio = bios.allocDataBio(n);
                if (bio == null) {
                    return bios.abandon(r);
                }
                int skip = position == start ? head : 0;
                int cut = position + n == paddedEnd ? tail : 0;
                if (!fillWriteBio(bio, n, skip, cut)) {
                    // The client vanished mid-payload: this bio never goes down; earlier ones complete.
                    bios.free(bio);
                    return bios.abandon(r);
                }
                bios.submit(r, bio, BioOp.WRITE, fua, position);
                position += n;
            }
            if (last) {
                r.put();
                return true;
            }
            if (!windowDone(r)) {
                return !connection.broken;
            }
        }
    }

    /**
     * Fills a write bio of {@code n} bytes: {@code skip} old bytes of the first block, payload from
     * the wire, {@code cut} old bytes of the last block; false if the client vanished.
     */
    private boolean fillWriteBio(Bio bio, int n, int skip, int cut) {
        rmw.mergeEnds(bio, n, skip, cut);
        iter.resetAll(bio);
        int filled = SegmentViews.fill(iter, scatter, 0);
        try {
            int count = NbdConnection.trimViews(scatter, filled, skip, n - skip - cut);
            input.readPayload(scatter, count, n - skip - cut);
            return true;
        } catch (IOException e) {
            return false;
        } finally {
            Arrays.fill(scatter, 0, filled, null); // only what was filled: a 4 KiB write used one of 256
        }
    }

    /**
     * Fills the request's extents for the device bytes {@code [start, end)} (whole sectors) from
     * {@link BlockDevice#allocatedExtent}. A read keeps room for one last data extent covering
     * whatever the bound leaves; block status just stops (the spec lets a reply cover less than
     * asked).
     */
    static void mapExtents(BlockDevice device, NbdRequest r, long start, long end, int extentsMax, boolean stopAtBound) {
        long sector = start >>> Bio.SECTOR_SHIFT;
        long endSector = end >>> Bio.SECTOR_SHIFT;
        while (sector < endSector) {
            long run = device.allocatedExtent(sector, endSector - sector);
            boolean hole = run < 0;
            long sectors = Math.abs(run);
            if (sectors == 0) {
                throw new IllegalStateException("device " + device.name() + ": empty extent at sector " + sector);
            }
            boolean merges = r.extentCount > 0 && r.extentHole[r.extentCount - 1] == hole;
            if (!merges && r.extentCount >= extentsMax - (stopAtBound ? 0 : 1)) {
                if (stopAtBound) {
                    return;
                }
                r.addExtent((endSector - sector) << Bio.SECTOR_SHIFT, false);
                return;
            }
            r.addExtent(sectors << Bio.SECTOR_SHIFT, hole);
            sector += sectors;
        }
    }
}
