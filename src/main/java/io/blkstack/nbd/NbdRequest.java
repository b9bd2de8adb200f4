package io.blkstack.nbd;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioStatus;
import io.blkstack.bio.ReadReference;
import io.blkstack.bio.BioVec;
import io.blkstack.block.TrackedRequests;
import io.blkstack.kernel.Completion;
import io.blkstack.mem.Page;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * One in-flight NBD request of a connection: the parsed header, the bios that carry it (with their
 * pages), the extents of a block-status or hole-aware read, and the outcome. A connection owns a
 * fixed array of these (its in-flight bound), allocated once; nothing is allocated per request.
 *
 * <p>Life: the reader takes a free slot, fills it, submits its bios one after another (each
 * before the next is allocated: seed 002), then drops its own hold on {@link #remaining}. The
 * last of the reader's hold and the bios' completions hands the request to the connection's
 * reply list; the writer sends the reply, then {@link #release releases} bios and pages and
 * returns the slot.
 *
 * <p><b>Windows.</b> A READ or WRITE is served over its range padded out to whole logical blocks
 * of the device, in windows of at most the export's maximum payload; almost every request is one
 * window. A longer one (a client that never learnt the maximum may send up to 4 GiB) goes window
 * by window: each window's bios are submitted; for a READ the writer sends that window's data,
 * frees its pages and signals {@link #windowSent}; for a WRITE the window's last completion
 * signals it and the reader frees the pages itself (so a long write never waits for the writer,
 * which a client that does not read its replies could hold up). Then the reader
 * {@link #rearm re-arms} the same slot for the next window. The payload budget is taken
 * once, for one window, so a request of any length holds at most one window of pages.
 */
final class NbdRequest implements ReadReference.Owner {

    /**
     * The completion of every bio of a request: count down, record the first error, never block.
     * A READ whose every byte was held by reference was counted when it became ready; its own
     * completion comes after the send, from the writer's release, and only records that.
     */
    static final BioEndIo END_IO = bio -> {
        NbdRequest request = (NbdRequest) bio.privateData();
        ReadReference reference = bio.readReference();
        if (reference != null && reference.ownerTold()) {
            request.referencedCompletions++;
            return;
        }
        int errno = NbdProtocol.errnoOf(bio.status());
        if (errno != 0 && request.fail(errno)) {
            request.logIoError(bio);
        }
        request.put();
    };

    final NbdConnection connection;
    final int slot;
    final Bio[] bios;
    int bioCount;
    /** The read reference of each bio index (created on first use, then reused): see {@link ReadReference}. */
    final ReadReference[] references;
    /** Bio indexes below this one may have references armed (the writer releases those). */
    int referencesArmed;
    /** Completions of READ bios after their references were released (the writer checks all came back). */
    int referencedCompletions;
    /** Extent lengths in bytes (read: data/hole runs; block status: descriptors). */
    final long[] extentBytes;
    /** Extent kind: true for a hole (reads as zero, not allocated). */
    final boolean[] extentHole;
    int extentCount;

    long cookie;
    int command;
    int commandFlags;
    long offset;
    long length;
    /** Pages charged to the server's payload budget. */
    int budgetPages;

    /** The current window: device bytes {@code [windowStart, windowEnd)}, whole logical blocks. */
    long windowStart;
    long windowEnd;
    /** Bytes at the start / end of the window that lie outside the client's range (padding). */
    int trimHead;
    int trimTail;
    /** Whether the current window is the request's last (its reply ends the request). */
    boolean lastWindow;
    /** Whether the writer already sent part of the reply (a simple READ header, or data chunks). */
    boolean replyStarted;
    /** Signalled when a window that is not the last is done: a READ's sent and freed by the writer, a WRITE's completed. */
    final Completion windowSent;
    /** This slot's entry in the device's tracked requests, and the list it is in (null if none). */
    final TrackedRequests.TrackedRequest tracked;
    /** Volatile: the request timer reads it when it loses the request ({@link RequestSlots#loseOverdue}). */
    volatile TrackedRequests tracker;

    private final AtomicInteger errno = new AtomicInteger();
    /** When the request's header was read ({@link System#nanoTime}), for its export's latency. */
    private long startNanos;
    /** The JFR latency event of the request in this slot, or null when no recording wants it. */
    private NbdRequestEvent event;
    final AtomicInteger remaining = new AtomicInteger();
    /** Whether the reader took this slot and the writer has not given it back (guarded by the slots' lock). */
    boolean taken;
    /** Whether it was lost to a fault while taken ({@link RequestSlots#lose}; guarded by the slots' lock). */
    boolean lost;
    /**
     * {@link #timedSinceNanos} of a request the request timeout does not watch: no header yet, its
     * reply queued, or the reader waiting for the wire.
     */
    static final long UNTIMED = Long.MIN_VALUE;
    /**
     * When the request (or its current window) began, on the kernel's clock, for the request timeout;
     * {@link #UNTIMED} before its header and once its reply is queued. Only kept under a request
     * timeout ({@link ConnectionTimers}), which reads it from its timer.
     */
    volatile long timedSinceNanos = UNTIMED;

    NbdRequest(NbdConnection connection, int slot, int biosMax, int extentsMax) {
        this.connection = connection;
        this.slot = slot;
        this.bios = new Bio[biosMax];
        this.references = new ReadReference[biosMax];
        this.extentBytes = new long[extentsMax];
        this.extentHole = new boolean[extentsMax];
        this.windowSent = new Completion("nbd request slot " + slot + " window sent");
        this.tracked = new TrackedRequests.TrackedRequest(this);
    }

    /** Readies the slot for a new request with the reader's hold on it. */
    void init(long requestCookie, int requestCommand, int flags, long requestOffset, long requestLength) {
        if (bioCount != 0 || budgetPages != 0 || remaining.get() != 0 || tracker != null) {
            throw new IllegalStateException("nbd request slot " + slot + " reused with " + bioCount + " bio(s), "
                    + budgetPages + " budget page(s), remaining " + remaining.get() + ", tracker " + tracker);
        }
        cookie = requestCookie;
        command = requestCommand;
        commandFlags = flags;
        offset = requestOffset;
        length = requestLength;
        extentCount = 0;
        windowStart = requestOffset;
        windowEnd = requestOffset + requestLength;
        trimHead = 0;
        trimTail = 0;
        lastWindow = true;
        replyStarted = false;
        windowSent.reinit();
        errno.set(0);
        remaining.set(1);
        startNanos = System.nanoTime();
        timedSinceNanos = connection.requestStamp();
        connection.exportStats.start();
        beginEvent();
    }

    /**
     * The reader waits for the wire to be free before a long READ (holding no budget yet): the
     * request timeout does not count it.
     */
    void stopTimeoutClock() {
        timedSinceNanos = UNTIMED;
    }

    /** The reader has the wire: the request timeout counts again, from now. */
    void startTimeoutClock() {
        timedSinceNanos = connection.requestStamp();
    }

    /** Sets the window the next bios cover (device bytes) and how much of it is padding. */
    void window(long start, long end, int head, int tail, boolean last) {
        if (end <= start || head < 0 || tail < 0 || head + tail >= end - start) {
            throw new IllegalArgumentException(this + ": window [" + start + ", " + end + ") with padding " + head
                    + " + " + tail);
        }
        windowStart = start;
        windowEnd = end;
        trimHead = head;
        trimTail = tail;
        lastWindow = last;
        extentCount = 0;
    }

    /** Readies the slot for its next window, after the writer sent the previous one; the reader's hold again. */
    void rearm() {
        if (bioCount != 0 || remaining.get() != 0 || lastWindow) {
            throw new IllegalStateException(this + ": re-armed with " + bioCount + " bio(s), remaining "
                    + remaining.get() + (lastWindow ? ", after its last window" : ""));
        }
        extentCount = 0;
        remaining.set(1);
        timedSinceNanos = connection.requestStamp();
    }

    /**
     * Registers the request's device range with the device's tracked requests (may wait: see
     * there); false if the range conflicts with a request lost to a fault: the caller fails this one.
     */
    boolean track(TrackedRequests list, long start, long end, boolean serialising) {
        if (tracker != null) {
            throw new IllegalStateException(this + ": tracked twice");
        }
        if (!list.begin(tracked, start, end, serialising)) {
            return false;
        }
        tracker = list;
        if (connection.broken && connection.lost(this)) {
            // Lost (to the request timeout) while it waited to register: the loss did not see it
            // registered, so its range is marked here (read after tracker was set, and the loss
            // reads tracker after it marked the request: one of the two sees the other).
            list.lose(tracked);
        }
        return true;
    }

    /** Records an error; the first one wins (and true is returned for it). */
    boolean fail(int value) {
        return errno.compareAndSet(0, value);
    }

    /**
     * Logs the request's first failed bio: the device, the current window's sectors, the
     * operation and status ({@link io.blkstack.block.IoErrorLog}: never blocks, completion context).
     */
    private void logIoError(Bio bio) {
        connection.server().ioErrors().failed(bio.device().name(), bio.op(), windowStart >>> 9,
                (windowEnd - windowStart) >>> 9, bio.status(), connection.name());
    }

    /** JFR: begins this request's latency event if a recording wants it (the reader, on its header). */
    private void beginEvent() {
        if (connection.server().requestEventsEnabled()) {
            NbdRequestEvent e = new NbdRequestEvent();
            e.begin();
            event = e;
        } else {
            event = null;
        }
    }

    /**
     * The request is over (the writer, once its reply is sent or dropped): counts it in its
     * export's statistics and commits its JFR event.
     */
    void finished() {
        connection.exportStats.done(command, length, errno.get(), System.nanoTime() - startNanos);
        commitEvent();
    }

    /** JFR: commits the latency event begun for this request, if any. */
    private void commitEvent() {
        NbdRequestEvent e = event;
        if (e == null) {
            return;
        }
        event = null;
        e.end();
        if (e.shouldCommit()) {
            e.connection = connection.name();
            e.export = connection.openedExport();
            e.command = NbdProtocol.commandName(command);
            e.offset = offset;
            e.length = length;
            e.errno = errno.get();
            e.commit();
        }
    }

    /** The outcome: 0 or an NBD error value. */
    int errno() {
        return errno.get();
    }

    /** Adds a bio about to be submitted: one more completion owed. */
    void addBio(Bio bio) {
        if (bioCount == bios.length) {
            throw new IllegalStateException("nbd request " + this + " needs more than " + bios.length + " bios");
        }
        bios[bioCount++] = bio;
        remaining.incrementAndGet();
    }

    /** Arms the read reference of the next bio index for {@code bio} (a READ with pages, not yet submitted). */
    void offerReference(Bio bio) {
        ReadReference reference = references[bioCount];
        if (reference == null) {
            reference = new ReadReference();
            references[bioCount] = reference;
        }
        reference.arm(bio, this, null);
        referencesArmed = bioCount + 1;
    }

    /** Every byte of one READ bio is held by reference: that bio's part of the request is ready. */
    @Override
    public void referencesReady(ReadReference reference) {
        put();
    }

    /** The ready reference of bio {@code index}, or null if that bio carries pages. */
    ReadReference readyReference(int index) {
        ReadReference reference = index < referencesArmed ? references[index] : null;
        return reference != null && reference.isReady() ? reference : null;
    }

    /**
     * Ends every reference hold of the request (after its reply was sent, or dropped): the held
     * bios complete now, up the stack. Their completions run here (remap targets complete in the
     * caller), and the request's pages are freed only after all of them came back.
     */
    void releaseReferences(BioStatus status) {
        int told = 0;
        for (int i = 0; i < referencesArmed; i++) {
            ReadReference reference = references[i];
            if (reference != null) {
                told += reference.ownerTold() ? 1 : 0;
                reference.release(status);
            }
        }
        if (referencedCompletions != told) {
            throw new IllegalStateException(this + ": " + told + " READ bio(s) were sent by reference but "
                    + referencedCompletions + " completed on release");
        }
        referencesArmed = 0;
        referencedCompletions = 0;
    }

    /** Drops one hold; the last one queues the reply (from any context; never blocks). */
    void put() {
        int left = remaining.decrementAndGet();
        if (left < 0) {
            throw new IllegalStateException("nbd request " + this + " completed more often than submitted");
        }
        if (left == 0) {
            if (lastWindow && tracker != null) {
                // The last bio of the request's last window: its writes are done (rule 2: never blocks).
                TrackedRequests list = tracker;
                tracker = null;
                list.end(tracked);
            }
            if (!lastWindow && command == NbdProtocol.CMD_WRITE && connection.windowToReader(this)) {
                windowSent.complete(); // a WRITE window is done: the reader frees it and goes on
                return;
            }
            connection.replyReady(this);
        }
    }

    /** Appends an extent, merging with the previous one of the same kind. */
    void addExtent(long bytes, boolean hole) {
        if (extentCount > 0 && extentHole[extentCount - 1] == hole) {
            extentBytes[extentCount - 1] += bytes;
            return;
        }
        extentBytes[extentCount] = bytes;
        extentHole[extentCount] = hole;
        extentCount++;
    }

    /** Frees the pages of every data bio, puts every bio; the writer calls this after the reply. */
    void release(Page[] scratch) {
        for (int i = 0; i < bioCount; i++) {
            Bio bio = bios[i];
            bios[i] = null;
            freePagesAndPut(bio, scratch);
        }
        bioCount = 0;
    }

    /**
     * Frees a bio's own pages (all from one arena) in one bulk free and drops the bio;
     * {@code scratch} holds at least {@link Bio#VECS_MAX} entries and is left cleared.
     */
    static void freePagesAndPut(Bio bio, Page[] scratch) {
        int count = bio.ownsVecs() ? bio.vecCount() : 0;
        if (count > 0) {
            BioVec[] vecs = bio.vecs();
            for (int i = 0; i < count; i++) {
                scratch[i] = vecs[i].page();
            }
            try {
                scratch[0].allocator().freeBulk(scratch, count);
            } finally {
                java.util.Arrays.fill(scratch, 0, count, null);
            }
        }
        bio.put();
    }

    @Override
    public String toString() {
        return "nbd " + NbdProtocol.commandName(command) + " cookie " + Long.toHexString(cookie) + " offset " + offset
                + " length " + length + " (slot " + slot + ")";
    }
}
