package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioIter;
import io.blkstack.bio.BioOp;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.SegmentViews;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Plug;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.Timer;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * One client connection: a reader task (handshake, then requests) and a writer task (replies).
 *
 * <p><b>Data path.</b> The reader parses a request header, checks it against the export (errors
 * exactly as {@code doc/proto.md} prescribes), and turns it into bios from the server's bio set
 * with pages from the kernel's arena, allocated with {@link Gfp#NOIO} so a connection waits for
 * the reserve when memory is tight. A payload larger than one bio (1 MiB) becomes several bios,
 * each submitted before the next is allocated, so this task never holds two unsubmitted bios of
 * one set (seed 002, rule 1 of DESIGN.md section 1). Before any page is allocated the request
 * takes its pages from the server's payload budget, so connections holding pages for replies not
 * yet sent can never exhaust the arena against each other.
 *
 * <p><b>Replies.</b> A bio's completion never touches the socket: the last completion of a
 * request puts it on this connection's reply ring (bounded by the in-flight bound, so it cannot
 * overflow) and wakes the writer (rule 2). The writer sends the reply, frees the request's pages
 * and bios, returns its budget and its slot, and wakes the reader if it waits for a slot. Replies
 * leave in completion order, not request order.
 *
 * <p><b>Ending.</b> {@code NBD_CMD_DISC}, end of stream, a wrong magic or garbage, or a client
 * vanishing mid-payload stop the reader. A half-read bio is freed at once; bios already submitted
 * complete normally, the writer drains every reply (or discards them if the socket is gone), then
 * closes the socket. Only this connection is affected.
 *
 * <p><b>Timeouts.</b> A client must enter transmission within the server's handshake timeout, and
 * (when the server has an idle timeout) must not leave the connection with nothing in flight and
 * no request arriving for longer than that; otherwise a timer shuts the socket's input down, the
 * reader sees end of stream and the connection ends as if the client had left, with a log line
 * saying why. The timers are kernel timers: their callbacks only flip the phase and shut the
 * socket down, which never blocks (rule 2 of DESIGN.md section 1). One idle timer per connection is
 * re-armed from its own callback, so requests cost a clock read each, never a timer.
 *
 * <p><b>Reply timeout.</b> A client that sends requests and never reads the replies would keep its
 * admitted requests' budget and pages for ever, its writer blocked in a socket write. So the
 * writer sends at most {@link #WRITE_CHUNK_BYTES} per write call and notes the time after each;
 * a second kernel timer, re-armed from its own callback, cuts the connection (closes the socket:
 * the blocked write and read fail at once) when the writer has had replies to send and sent no
 * byte of them for the server's reply timeout. A client that reads slowly but steadily moves a
 * chunk within the timeout and is never cut. Once cut, the connection ends as if the socket had
 * been lost: every request completes, its pages and budget return, and the line is logged.
 *
 * <p><b>Any byte range.</b> The export advertises a minimum block size of 1. A READ or WRITE
 * covers its range padded out to whole logical blocks of the device; the writer sends only the
 * client's bytes of a READ, and a WRITE that does not cover whole blocks is a read-modify-write:
 * the partial end blocks are read first (one synchronous bio at a time), then merged with the
 * payload as it is read from the socket. Every write-class request registers its block range
 * with the device's {@link io.blkstack.block.TrackedRequests} before it takes budget or pages,
 * as serialising if it is a read-modify-write, so overlapping writes never tear.
 *
 * <p><b>Long requests.</b> A client that never asked for the block sizes may send a READ or WRITE
 * longer than the maximum payload; it is served window by window ({@link NbdRequest}), holding
 * one window of budget. A client that asked is held to the maximum: a longer WRITE gets
 * {@code NBD_EINVAL} and its payload is skipped through a fixed 64 KiB scratch buffer (never
 * stored) if it is at most {@link #SKIP_MAX} bytes; a longer one cannot be skipped in reasonable
 * time, so the error reply is sent and the connection is closed (the spec allows a hard
 * disconnect for payloads large enough to be a denial of service).
 */
final class NbdConnection {

    /** Bytes of payload one bio carries: one full vec array of pages. */
    static final int BIO_BYTES_MAX = Bio.VECS_MAX * Page.SIZE;
    /** Bytes one payload-less bio (trim, zeroes) covers; the device splits it further. */
    static final int NODATA_BIO_BYTES_MAX = 1 << 30;
    /** Most extents one hole-aware READ reply uses; the rest of the range is sent as data. */
    static final int READ_EXTENTS_MAX = 64;
    /** Most descriptors one block-status reply carries (the spec allows fewer than asked). */
    static final int STATUS_EXTENTS_MAX = 1024;
    /** The largest refused WRITE payload skipped instead of closing the connection. */
    static final long SKIP_MAX = 2L * DEFAULT_MAX_PAYLOAD;
    /** Bytes of the reader's input buffer; larger payload remainders bypass it. */
    static final int INPUT_BYTES = 64 * 1024;
    /** Most finished replies the writer takes per wake-up. */
    static final int BATCH_MAX = 64;
    /** Most buffers (headers and page views) in one gathering write of replies. */
    static final int GATHER_MAX = 1024;
    /** Bytes of one batched reply header (the larger of simple and structured, with its payload). */
    private static final int BATCHED_HEADER_BYTES = 32;

    /** Phases of a connection, for its timers. */
    private static final int HANDSHAKE = 0;
    private static final int TRANSMISSION = 1;
    private static final int HANDSHAKE_TIMED_OUT = 2;
    private static final int IDLE_TIMED_OUT = 3;
    private static final int REPLY_TIMED_OUT = 4;
    /**
     * Most bytes the writer hands to one socket write: the unit in which it notes progress for the
     * reply timeout, so a client must read at least this much (beyond what the socket buffers
     * hold) per timeout. Small against any sane timeout, large enough that a 1 MiB reply costs
     * only eight writes.
     */
    static final int WRITE_CHUNK_BYTES = 128 * 1024;
    /** The shortest re-arm of the idle timer, so a clock at the deadline cannot make it spin. */
    private static final long IDLE_RECHECK_NANOS_MIN = 1_000_000L;

    private final NbdServer server;
    private final Kernel kernel;
    private final SocketChannel channel;
    private final String name;
    private final String peer;
    final Completion done;
    /** Whether the server admitted this client only to refuse it (set under the server's lock). */
    boolean refused;

    // Timers: the phase moves once out of HANDSHAKE, and once from TRANSMISSION to IDLE_TIMED_OUT.
    private final AtomicInteger phase = new AtomicInteger(HANDSHAKE);
    private final SpinLock timerLock;
    private Timer timer;
    /** The reply timer (only with a reply timeout); guarded by {@link #timerLock}. */
    private Timer replyTimer;
    private boolean timersStopped;
    private final long idleTimeoutNanos;
    private volatile long lastActivityNanos;
    private volatile boolean awaitingRequest;
    private final long replyTimeoutNanos;
    private final String replyTimerName;
    private final Runnable replyTimerCallback = this::replyTimerFired;
    /** Whether the writer is sending replies (between taking a batch and the end of its writes). */
    private volatile boolean writerSending;
    /** When the writer last moved a chunk of replies, or began sending; written before {@link #writerSending}. */
    private volatile long lastSendProgressNanos;

    private Export export;
    private BlockDevice device;
    private boolean structured;
    private boolean baseAllocation;
    /** Whether the client asked for the block sizes (and so is held to the advertised maximum). */
    private boolean blockSizesKnown;
    /** The device's logical block size: the unit of read-modify-write. */
    private int blockBytes;

    // In-flight slots: the reader takes, the writer returns. A slot's request is built on its first
    // use, so an idle connection costs a few KiB, not a full set of slots.
    private final NbdRequest[] requests;
    private final int biosMax;
    private final int[] freeSlots;
    private int freeCount;
    private final SpinLock slotLock;
    private final WaitQueue slotWait;
    private final AtomicInteger inUse = new AtomicInteger();

    // Reply ring: completions push, the writer pops.
    private final NbdRequest[] ring;
    private int ringHead;
    private int ringCount;
    private final SpinLock ringLock;
    private final WaitQueue writerWait;
    private volatile boolean readerDone;
    private volatile boolean broken;
    /** Set once the connection is ending (input shut, socket closed): a budget wait gives up. */
    private volatile boolean ending;

    // Reader state (reader task only).
    // Buffered input, in read mode: one read syscall brings in many small requests.
    private final ByteBuffer input = ByteBuffer.allocateDirect(INPUT_BYTES).flip();
    private final ByteBuffer skipScratch = ByteBuffer.allocateDirect(64 * 1024);
    private final ByteBuffer[] scatter = new ByteBuffer[Bio.VECS_MAX];
    private final Page[] readerPages = new Page[Bio.VECS_MAX];
    /** What this connection holds of the server's payload budget (its fair share is checked there). */
    private final NbdServer.PayloadBudget.Share budgetShare = new NbdServer.PayloadBudget.Share();
    private final BioIter readerIter = new BioIter();
    /** The old contents of the first and last logical block of an unaligned write (one page each). */
    private final ByteBuffer rmwBlocks = ByteBuffer.allocateDirect(2 * Page.SIZE);
    /** Signalled by the completion of the reader's one synchronous bio (a read-modify-write step). */
    private final Completion syncDone;
    /** Kernel counter {@code nbd.read-modify-writes}: unaligned WRITEs and WRITE_ZEROES served by read-modify-write. */
    private final AtomicLong readModifyWrites;
    /** Kernel counter {@code nbd.windowed-requests}: READs and WRITEs longer than one window. */
    private final AtomicLong windowedRequests;

    // Writer state (writer task only).
    private final ByteBuffer replyHeader = ByteBuffer.allocateDirect(STRUCTURED_HEADER_BYTES + 4 + 8 * STATUS_EXTENTS_MAX);
    private final ByteBuffer[] gather = new ByteBuffer[GATHER_MAX];
    /** One buffer as a gather array, for {@link #writeReply}. */
    private final ByteBuffer[] gatherOne = new ByteBuffer[1];
    private final BioIter writerIter = new BioIter();
    private final Page[] writerPages = new Page[Bio.VECS_MAX];
    private final NbdRequest[] batch = new NbdRequest[BATCH_MAX];
    private final ByteBuffer[] replyHeaders = new ByteBuffer[BATCH_MAX];
    private final java.util.function.BooleanSupplier slotAvailable;
    private final java.util.function.BooleanSupplier writerHasWork =
            () -> hasReplies() || (readerDone && inUse.get() == 0);

    NbdConnection(NbdServer server, SocketChannel channel, String name, String peer, int inFlightMax,
            int maxPayloadMax) {
        if (inFlightMax < 1) {
            throw new IllegalArgumentException("connection " + name + ": in-flight bound " + inFlightMax + " < 1");
        }
        this.server = server;
        this.kernel = server.kernel();
        this.channel = channel;
        this.name = name;
        this.peer = peer;
        this.done = new Completion(name + " done");
        this.syncDone = new Completion(name + " read-modify-write");
        this.readModifyWrites = kernel.counters().get("nbd.read-modify-writes");
        this.windowedRequests = kernel.counters().get("nbd.windowed-requests");
        this.timerLock = new SpinLock(name + " timers");
        this.idleTimeoutNanos = server.options().idleTimeoutNanos();
        this.replyTimeoutNanos = server.options().replyTimeoutNanos();
        this.replyTimerName = name + " reply timeout";
        this.biosMax = Math.max(4, (maxPayloadMax + BIO_BYTES_MAX - 1) / BIO_BYTES_MAX) + READ_EXTENTS_MAX / 2 + 1;
        this.requests = new NbdRequest[inFlightMax];
        this.freeSlots = new int[inFlightMax];
        for (int i = 0; i < inFlightMax; i++) {
            freeSlots[i] = inFlightMax - 1 - i;
        }
        this.freeCount = inFlightMax;
        this.slotAvailable = () -> inUse.get() < inFlightMax;
        this.slotLock = new SpinLock(name + " slots");
        this.slotWait = new WaitQueue(name + " in-flight bound");
        this.ring = new NbdRequest[inFlightMax];
        this.ringLock = new SpinLock(name + " replies");
        this.writerWait = new WaitQueue(name + " replies");
        ByteBuffer headers = ByteBuffer.allocateDirect(BATCH_MAX * BATCHED_HEADER_BYTES);
        for (int i = 0; i < BATCH_MAX; i++) {
            replyHeaders[i] = headers.slice(i * BATCHED_HEADER_BYTES, BATCHED_HEADER_BYTES);
        }
    }

    String name() {
        return name;
    }

    /** Requests taken and not yet released (for tests and state). */
    int inFlight() {
        return inUse.get();
    }

    // ---- reader task ---------------------------------------------------------------------------

    /** The reader task's body: handshake, start the writer, read requests until the end. */
    void runReader() {
        boolean writerStarted = false;
        try {
            startHandshakeTimer();
            NbdHandshake.Negotiated negotiated = new NbdHandshake(channel, server.exports()).run();
            if (negotiated == null || !phase.compareAndSet(HANDSHAKE, TRANSMISSION)) {
                return;
            }
            startIdleTimer();
            export = negotiated.export();
            if (!server.attach(this, export)) {
                return; // the export was removed while this client negotiated it
            }
            device = export.device();
            structured = negotiated.structuredReplies();
            baseAllocation = negotiated.baseAllocation();
            blockSizesKnown = negotiated.blockSizesKnown();
            blockBytes = device.limits().logicalBlockSize();
            kernel.spawn(name + "-writer", TaskKind.USER, this::runWriter);
            writerStarted = true;
            // Plugged: the requests parsed from one socket read reach the device queues before
            // their I/O tasks are woken, and the plug is flushed before every socket read.
            Task self = Task.current();
            try (Task.NoioScope noio = self.noio(); Plug.Scope plugged = self.plug().start()) {
                readRequests();
            }
        } catch (IOException e) {
            // The client went away or broke the protocol: this connection ends, nothing else.
        } finally {
            logTimeout();
            if (writerStarted) {
                readerDone = true;
                writerWait.wakeAll();
            } else {
                finish();
            }
        }
    }

    /**
     * The task body of a client past the connection limit: the greeting, then an error with
     * {@code message} to each option ({@link NbdHandshake#refuse}), then the end, all within the
     * handshake timeout.
     */
    void runRefusal(String message) {
        try {
            startHandshakeTimer();
            new NbdHandshake(channel, server.exports()).refuse(message);
        } catch (IOException e) {
            // the refused client went away or broke the protocol: nothing more to tell it
        } finally {
            logTimeout();
            finish();
        }
    }

    /** Arms the handshake timer: past it, a client still haggling is cut off. */
    private void startHandshakeTimer() {
        long timeout = server.options().handshakeTimeoutNanos();
        arm(timeout, name + " handshake timeout", () -> {
            if (phase.compareAndSet(HANDSHAKE, HANDSHAKE_TIMED_OUT)) {
                shutdownInput();
                shutdownOutput(); // a client that stopped reading must not hold a handshake write either
            }
        });
    }

    /** Replaces the handshake timer with the idle timer, if the server has an idle timeout. */
    private void startIdleTimer() {
        stopTimer();
        if (idleTimeoutNanos > 0) {
            lastActivityNanos = kernel.scheduler().nanoTime();
            arm(idleTimeoutNanos, name + " idle timeout", this::idleTimerFired);
        }
    }

    /**
     * The idle timer: ends the connection if the reader waits for a request with no other request
     * in flight (it holds one slot for the header it waits for) and nothing happened for the idle
     * timeout; otherwise re-arms for when that could first be true.
     */
    private void idleTimerFired() {
        long now = kernel.scheduler().nanoTime();
        boolean quiet = awaitingRequest && inUse.get() == 1;
        long idleNanos = now - lastActivityNanos;
        if (quiet && idleNanos >= idleTimeoutNanos) {
            if (phase.compareAndSet(TRANSMISSION, IDLE_TIMED_OUT)) {
                shutdownInput();
            }
            return;
        }
        long next = quiet ? idleTimeoutNanos - idleNanos : idleTimeoutNanos;
        arm(Math.max(next, IDLE_RECHECK_NANOS_MIN), name + " idle timeout", this::idleTimerFired);
    }

    /** Starts the reply timer, if the server has a reply timeout (the writer's first act). */
    private void startReplyTimer() {
        if (replyTimeoutNanos > 0) {
            armReplyTimer(replyTimeoutNanos);
        }
    }

    /**
     * The reply timer: cuts the connection if the writer has been sending and moved no chunk for
     * the reply timeout; otherwise re-arms for when that could first be true. Only flips the
     * phase and closes the socket, neither of which blocks (rule 2 of DESIGN.md section 1).
     */
    private void replyTimerFired() {
        long now = kernel.scheduler().nanoTime();
        boolean sending = writerSending;
        long stalledNanos = sending ? now - lastSendProgressNanos : 0;
        if (sending && stalledNanos >= replyTimeoutNanos) {
            if (phase.compareAndSet(TRANSMISSION, REPLY_TIMED_OUT)) {
                closeSocket();
            }
            return;
        }
        armReplyTimer(Math.max(replyTimeoutNanos - stalledNanos, IDLE_RECHECK_NANOS_MIN));
    }

    /** Sets the reply timer, unless the connection has ended. */
    private void armReplyTimer(long delayNanos) {
        timerLock.lock();
        try {
            if (!timersStopped) {
                replyTimer = kernel.scheduler().addTimer(delayNanos, replyTimerName, replyTimerCallback);
            }
        } finally {
            timerLock.unlock();
        }
    }

    /** Sets the connection's one timer, unless the connection has ended. */
    private void arm(long delayNanos, String what, Runnable callback) {
        timerLock.lock();
        try {
            if (!timersStopped) {
                timer = kernel.scheduler().addTimer(delayNanos, what, callback);
            }
        } finally {
            timerLock.unlock();
        }
    }

    /** Cancels the pending handshake or idle timer, if any. */
    private void stopTimer() {
        Timer t;
        timerLock.lock();
        try {
            t = timer;
            timer = null;
        } finally {
            timerLock.unlock();
        }
        if (t != null) {
            t.cancel();
        }
    }

    /** Cancels the pending reply timer, if any (the connection has ended: it is not re-armed). */
    private void stopReplyTimer() {
        Timer t;
        timerLock.lock();
        try {
            t = replyTimer;
            replyTimer = null;
        } finally {
            timerLock.unlock();
        }
        if (t != null) {
            t.cancel();
        }
    }

    /** Logs why the server cut this connection off, if a timer did. */
    private void logTimeout() {
        switch (phase.get()) {
            case HANDSHAKE_TIMED_OUT -> server.log(name + " (" + peer + "): disconnected: handshake not completed within "
                    + NbdServer.formatNanos(server.options().handshakeTimeoutNanos()));
            case IDLE_TIMED_OUT -> server.log(name + " (" + peer + "): disconnected: idle for "
                    + NbdServer.formatNanos(idleTimeoutNanos) + " (idle timeout)");
            default -> {
            }
        }
    }

    /** Notes traffic for the idle timer (only when there is one: a clock read per call). */
    private void noteActivity() {
        if (idleTimeoutNanos > 0) {
            lastActivityNanos = kernel.scheduler().nanoTime();
        }
    }

    /** Reads and dispatches requests until DISC, end of stream, garbage or an unskippable payload. */
    private void readRequests() throws IOException {
        while (true) {
            NbdRequest r = takeSlot();
            boolean more;
            try {
                more = readHeader(r);
            } catch (IOException e) {
                returnSlot(r);
                throw e;
            }
            if (!more) {
                returnSlot(r);
                return;
            }
            if (!serve(r)) {
                return;
            }
        }
    }

    /** Reads a request header into the slot; false for end of stream, a wrong magic or DISC. */
    private boolean readHeader(NbdRequest r) throws IOException {
        awaitingRequest = true;
        boolean arrived;
        try {
            arrived = fillInput(REQUEST_HEADER_BYTES);
        } finally {
            awaitingRequest = false;
        }
        if (!arrived) {
            return false;
        }
        noteActivity();
        ByteBuffer h = input;
        if (h.getInt() != REQUEST_MAGIC) {
            return false; // garbage: a hard disconnect of this connection only
        }
        int flags = h.getShort() & 0xffff;
        int command = h.getShort() & 0xffff;
        long cookie = h.getLong();
        long offset = h.getLong();
        long length = h.getInt() & 0xffffffffL;
        if (command == CMD_DISC) {
            return false; // in-flight requests finish, then the writer closes
        }
        r.init(cookie, command, flags, offset, length);
        return true;
    }

    /**
     * Makes at least {@code bytes} bytes available in the input buffer, reading as much as the
     * socket has; false if the stream ends before the first of them, EOF exception if in between.
     */
    private boolean fillInput(int bytes) throws IOException {
        while (input.remaining() < bytes) {
            int before = input.remaining();
            input.compact();
            int n;
            try {
                unplug();
                n = channel.read(input);
            } finally {
                input.flip();
            }
            if (n < 0) {
                if (before == 0) {
                    return false;
                }
                throw new java.io.EOFException("peer closed with " + (bytes - before) + " byte(s) of a message unread");
            }
        }
        return true;
    }

    /**
     * Fills {@code buffers[0..count)} (holding {@code bytes} bytes in all) with payload: first
     * from the input buffer, then straight from the socket if much is left, else through the input
     * buffer again (so the next headers come in with the tail of this payload).
     */
    private void readPayload(ByteBuffer[] buffers, int count, long bytes) throws IOException {
        long left = bytes;
        int idx = 0;
        while (idx < count) {
            ByteBuffer dst = buffers[idx];
            if (!dst.hasRemaining()) {
                idx++;
                continue;
            }
            if (input.hasRemaining()) {
                int k = Math.min(input.remaining(), dst.remaining());
                int limit = input.limit();
                input.limit(input.position() + k);
                dst.put(input);
                input.limit(limit);
                left -= k;
                continue;
            }
            long n;
            unplug();
            if (left >= INPUT_BYTES / 2) {
                n = channel.read(buffers, idx, count - idx);
                if (n > 0) {
                    left -= n;
                }
            } else {
                input.clear();
                try {
                    n = channel.read(input);
                } finally {
                    input.flip();
                }
            }
            if (n < 0) {
                throw new java.io.EOFException("peer closed in the middle of a payload");
            }
        }
    }

    /**
     * Checks a request against the protocol and the export.
     *
     * @return 0, or the NBD error the specification prescribes
     */
    int validate(int command, int flags, long offset, long length) {
        int allowed = CMD_FLAG_FUA;
        switch (command) {
            case CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_TRIM, CMD_CACHE -> {
            }
            case CMD_WRITE_ZEROES -> allowed |= CMD_FLAG_NO_HOLE
                    | ((export.transmissionFlags() & FLAG_SEND_FAST_ZERO) != 0 ? CMD_FLAG_FAST_ZERO : 0);
            case CMD_BLOCK_STATUS -> allowed |= CMD_FLAG_REQ_ONE;
            default -> {
                return EINVAL; // unknown command
            }
        }
        if ((flags & ~allowed) != 0) {
            return EINVAL; // unknown flag, or a flag not documented for this command
        }
        boolean writes = command == CMD_WRITE || command == CMD_TRIM || command == CMD_WRITE_ZEROES;
        if (writes && export.readOnly()) {
            return EPERM;
        }
        if (command == CMD_BLOCK_STATUS && !baseAllocation) {
            return EINVAL; // no metadata context selected
        }
        if (command == CMD_FLUSH) {
            return offset == 0 && length == 0 ? 0 : EINVAL;
        }
        if ((command == CMD_READ || command == CMD_WRITE) && length > export.maximumPayload() && blockSizesKnown) {
            return EINVAL; // a client that never asked for the maximum may send any length: served in windows
        }
        long size = export.sizeBytes();
        if (offset < 0 || offset > size || length > size - offset) {
            return command == CMD_WRITE || command == CMD_WRITE_ZEROES ? ENOSPC : EINVAL;
        }
        int min = export.minimumBlockSize();
        if (offset % min != 0 || length % min != 0) {
            return EINVAL;
        }
        if (command == CMD_BLOCK_STATUS && length == 0) {
            return EINVAL; // a reply needs at least one descriptor of nonzero length
        }
        if (command == CMD_WRITE_ZEROES && (flags & CMD_FLAG_FAST_ZERO) != 0 && !export.fastZero()) {
            return ENOTSUP; // fail fast: zeroing here is no faster than writing
        }
        return 0;
    }

    /** Serves one request; false if the reader must stop. */
    private boolean serve(NbdRequest r) throws IOException {
        int errno = validate(r.command, r.commandFlags, r.offset, r.length);
        if (errno != 0) {
            boolean more = true;
            if (r.command == CMD_WRITE) {
                more = skipPayload(r.length);
            }
            r.fail(errno);
            r.put();
            return more;
        }
        int fua = (r.commandFlags & CMD_FLAG_FUA) != 0 ? BioFlags.FUA : 0;
        switch (r.command) {
            case CMD_READ -> {
                return read(r);
            }
            case CMD_WRITE -> {
                return write(r, fua);
            }
            case CMD_FLUSH -> {
                return flush(r);
            }
            case CMD_TRIM -> {
                return trim(r, fua);
            }
            case CMD_WRITE_ZEROES -> {
                int noUnmap = (r.commandFlags & CMD_FLAG_NO_HOLE) != 0 ? BioFlags.NOUNMAP : 0;
                return writeZeroes(r, fua | noUnmap);
            }
            case CMD_BLOCK_STATUS -> {
                blockStatus(r);
                r.put();
                return true;
            }
            default -> { // CACHE: a hint; this server has no cache to fill, and success is allowed
                r.put();
                return true;
            }
        }
    }

    /**
     * Delivers the device wake-ups held back by the reader's plug: called before every socket
     * read, which blocks outside the kernel primitives and so does not flush the plug by itself.
     */
    private static void unplug() {
        Task.current().plug().flush();
    }

    /** Skips a refused WRITE payload; false if it is too long to skip (the connection then closes). */
    private boolean skipPayload(long length) {
        if (length > SKIP_MAX) {
            return false;
        }
        try {
            int buffered = (int) Math.min(input.remaining(), length);
            input.position(input.position() + buffered);
            unplug();
            WireIo.skip(channel, skipScratch, length - buffered);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /** The start of the logical block holding byte {@code position}. */
    private long alignDown(long position) {
        return position & -(long) blockBytes;
    }

    /** The end of the logical block holding byte {@code position - 1}. */
    private long alignUp(long position) {
        return (position + blockBytes - 1) & -(long) blockBytes;
    }

    /** Bytes of device range one window covers: the export's maximum payload (a multiple of any block size). */
    private long windowBytes() {
        return export.maximumPayload();
    }

    /**
     * READ: the client's range padded out to whole logical blocks (the writer sends only the
     * client's bytes), in windows of at most the maximum payload. A request of one window maps
     * holes (structured replies only) and charges the budget for its data; a longer one charges
     * one window once and reads every window as data.
     */
    private boolean read(NbdRequest r) {
        if (r.length == 0) {
            r.put();
            return true;
        }
        long end = r.offset + r.length;
        long start = alignDown(r.offset);
        long paddedEnd = alignUp(end);
        long window = windowBytes();
        boolean windowed = paddedEnd - start > window;
        if (windowed) {
            windowedRequests.incrementAndGet();
            if (!chargeBudget(r, window)) {
                return abandon(r);
            }
        }
        for (long position = start; ; ) {
            long windowEnd = Math.min(paddedEnd, position + window);
            boolean last = windowEnd == paddedEnd;
            r.window(position, windowEnd, (int) (Math.max(r.offset, position) - position),
                    last ? (int) (paddedEnd - end) : 0, last);
            if (!windowed && structured && device.knowsAllocation()) {
                mapExtents(r, position, windowEnd, READ_EXTENTS_MAX, false);
            } else {
                r.addExtent(windowEnd - position, false);
            }
            if (!windowed) {
                // Each data extent is its own run of bios, each with its own vec array and pages.
                long pages = 0;
                for (int e = 0; e < r.extentCount; e++) {
                    pages += r.extentHole[e] ? 0 : NbdServer.chargePages(r.extentBytes[e]);
                }
                if (!chargeBudgetPages(r, pages)) {
                    return abandon(r);
                }
            }
            if (!submitReadWindow(r)) {
                return false;
            }
            if (last) {
                r.put();
                return true;
            }
            if (!windowDone(r)) {
                return !broken;
            }
            position = windowEnd;
        }
    }

    /** Submits the bios of the current window's data extents; false if the reader must stop. */
    private boolean submitReadWindow(NbdRequest r) {
        long position = r.windowStart;
        for (int e = 0; e < r.extentCount; e++) {
            long extentEnd = position + r.extentBytes[e];
            if (r.extentHole[e]) {
                position = extentEnd;
                continue;
            }
            while (position < extentEnd) {
                int n = (int) Math.min(extentEnd - position, BIO_BYTES_MAX);
                Bio bio = allocDataBio(n);
                if (bio == null) {
                    return abandon(r);
                }
                submit(r, bio, BioOp.READ, 0, position);
                position += n;
            }
        }
        return true;
    }

    /**
     * Waits until a window that is not the request's last is done (a READ's sent by the writer
     * and its pages freed; a WRITE's bios completed, and then freed here); then re-arms the
     * request for the next window. False if the
     * request ended there: the writer finished it on a read error, or the socket broke (the
     * request is then finished here, failed).
     */
    private boolean windowDone(NbdRequest r) {
        r.put();
        r.windowSent.await();
        if (r.command == CMD_READ && r.errno() != 0) {
            return false; // the writer sent the error and released the slot
        }
        if (r.command == CMD_WRITE) {
            r.release(readerPages); // its bios completed; the writer never saw this window
        }
        r.rearm();
        if (broken) {
            abandon(r);
            return false;
        }
        return true;
    }

    /**
     * WRITE: the client's range padded out to whole logical blocks. An unaligned one is a
     * read-modify-write: registered as serialising with the device's tracked requests (so no other
     * write to those blocks runs between its read and its write, and it waits for the ones in
     * flight), then the partial first and last blocks are read (one synchronous bio at a time, no
     * other bio held), and each data bio is filled with old bytes, then payload from the socket,
     * then old bytes. Aligned writes register too (not serialising), so a read-modify-write waits
     * for them. Windows of at most the maximum payload; each bio is read from the socket and
     * submitted before the next is allocated.
     */
    private boolean write(NbdRequest r, int fua) {
        if (r.length == 0) {
            r.put();
            return true;
        }
        long end = r.offset + r.length;
        long start = alignDown(r.offset);
        long paddedEnd = alignUp(end);
        int head = (int) (r.offset - start);
        int tail = (int) (paddedEnd - end);
        r.track(device.trackedRequests(), start, paddedEnd, head != 0 || tail != 0);
        if (head != 0 || tail != 0) {
            readModifyWrites.incrementAndGet();
        }
        long window = windowBytes();
        if (paddedEnd - start > window) {
            windowedRequests.incrementAndGet();
        }
        if (!chargeBudget(r, Math.min(paddedEnd - start, window))) {
            return abandon(r);
        }
        if (!readEndBlocks(start, paddedEnd, head, tail)) {
            r.fail(EIO);
            r.put();
            return skipPayload(r.length);
        }
        for (long position = start; ; ) {
            long windowEnd = Math.min(paddedEnd, position + window);
            boolean last = windowEnd == paddedEnd;
            r.window(position, windowEnd, position == start ? head : 0, last ? tail : 0, last);
            while (position < windowEnd) {
                int n = (int) Math.min(windowEnd - position, BIO_BYTES_MAX);
                Bio bio = allocDataBio(n);
                if (bio == null) {
                    return abandon(r);
                }
                int skip = position == start ? head : 0;
                int cut = position + n == paddedEnd ? tail : 0;
                if (!fillWriteBio(bio, n, skip, cut)) {
                    // The client vanished mid-payload: this bio never goes down; earlier ones complete.
                    NbdRequest.freePagesAndPut(bio, readerPages);
                    return abandon(r);
                }
                submit(r, bio, BioOp.WRITE, fua, position);
                position += n;
            }
            if (last) {
                r.put();
                return true;
            }
            if (!windowDone(r)) {
                return !broken;
            }
        }
    }

    /**
     * Fills a write bio of {@code n} bytes: {@code skip} old bytes of the first block, payload from
     * the socket, {@code cut} old bytes of the last block; false if the client vanished.
     */
    private boolean fillWriteBio(Bio bio, int n, int skip, int cut) {
        if (skip > 0) {
            copyIntoBio(bio, 0, rmwBlocks.slice(0, skip));
        }
        if (cut > 0) {
            copyIntoBio(bio, n - cut, rmwBlocks.slice(Page.SIZE + blockBytes - cut, cut));
        }
        readerIter.resetAll(bio);
        int count = SegmentViews.fill(readerIter, scatter, 0);
        try {
            count = trimViews(scatter, count, skip, n - skip - cut);
            readPayload(scatter, count, n - skip - cut);
            return true;
        } catch (IOException e) {
            return false;
        } finally {
            java.util.Arrays.fill(scatter, 0, scatter.length, null);
        }
    }

    /**
     * Reads the old contents of the partial first block (into the first page of
     * {@link #rmwBlocks}) and the partial last block (into the second); one block when both ends
     * lie in the same block. False on an I/O error.
     */
    private boolean readEndBlocks(long start, long paddedEnd, int head, int tail) {
        if (head != 0 && !syncBlockIo(BioOp.READ, 0, start, rmwBlocks.slice(0, blockBytes))) {
            return false;
        }
        if (tail == 0) {
            return true;
        }
        long lastBlock = paddedEnd - blockBytes;
        if (head != 0 && lastBlock == start) {
            rmwBlocks.put(Page.SIZE, rmwBlocks, 0, blockBytes);
            return true;
        }
        return syncBlockIo(BioOp.READ, 0, lastBlock, rmwBlocks.slice(Page.SIZE, blockBytes));
    }

    /**
     * One logical block of synchronous I/O by the reader, through one page: a READ copies the
     * block into {@code data}, a WRITE writes {@code data} (one block) to it. The bio is submitted
     * before the reader waits and freed before it allocates anything else (rule 1: never two
     * unsubmitted units of one pool). The page comes out of the request's budget charge. False on
     * an I/O error (or when the kernel closes).
     */
    private boolean syncBlockIo(BioOp op, int flags, long position, ByteBuffer data) {
        if (data.remaining() != blockBytes) {
            throw new IllegalArgumentException(name + ": block I/O of " + data.remaining() + " bytes, block " + blockBytes);
        }
        Bio bio = allocDataBio(blockBytes);
        if (bio == null) {
            return false;
        }
        try {
            if (op == BioOp.WRITE) {
                copyIntoBio(bio, 0, data.duplicate());
            }
            syncDone.reinit();
            bio.init(device, op, flags, position >>> Bio.SECTOR_SHIFT);
            bio.setEndIo(SYNC_END_IO).setPrivateData(syncDone);
            Submit.submitBio(bio);
            syncDone.await();
            if (bio.status() != io.blkstack.bio.BioStatus.OK) {
                return false;
            }
            if (op == BioOp.READ) {
                readerIter.resetAll(bio);
                int count = SegmentViews.fill(readerIter, scatter, 0);
                ByteBuffer dst = data.duplicate();
                for (int i = 0; i < count; i++) {
                    dst.put(scatter[i]);
                }
                java.util.Arrays.fill(scatter, 0, count, null);
            }
            return true;
        } finally {
            NbdRequest.freePagesAndPut(bio, readerPages);
        }
    }

    /** The completion of a synchronous bio: signal the reader; never blocks. */
    private static final io.blkstack.bio.BioEndIo SYNC_END_IO = bio -> ((Completion) bio.privateData()).complete();

    /** Copies {@code src} into a bio's pages from byte {@code bioOffset} of the bio on. */
    private static void copyIntoBio(Bio bio, int bioOffset, ByteBuffer src) {
        io.blkstack.bio.BioVec[] vecs = bio.vecs();
        int skip = bioOffset;
        for (int i = 0; i < bio.vecCount() && src.hasRemaining(); i++) {
            int length = vecs[i].length();
            if (skip >= length) {
                skip -= length;
                continue;
            }
            int k = Math.min(length - skip, src.remaining());
            ByteBuffer dst = vecs[i].page().slice(vecs[i].offset() + skip, k);
            ByteBuffer part = src.slice(src.position(), k);
            dst.put(part);
            src.position(src.position() + k);
            skip = 0;
        }
        if (src.hasRemaining()) {
            throw new IllegalStateException("bio " + bio + ": " + src.remaining() + " byte(s) past its end at " + bioOffset);
        }
    }

    /**
     * Narrows the views {@code views[0..count)} to {@code bytes} bytes after the first {@code skip}
     * bytes, dropping views left empty; returns the new count (the rest of the array is cleared).
     */
    static int trimViews(ByteBuffer[] views, int count, long skip, long bytes) {
        int out = 0;
        for (int i = 0; i < count; i++) {
            ByteBuffer view = views[i];
            views[i] = null;
            int length = view.remaining();
            if (skip >= length) {
                skip -= length;
                continue;
            }
            if (skip > 0) {
                view.position(view.position() + (int) skip);
                length -= (int) skip;
                skip = 0;
            }
            if (bytes == 0) {
                continue;
            }
            if (length > bytes) {
                view.limit(view.position() + (int) bytes);
                length = (int) bytes;
            }
            bytes -= length;
            views[out++] = view;
        }
        return out;
    }

    /** FLUSH: one empty flush bio. */
    private boolean flush(NbdRequest r) {
        Bio bio = server.bioSet().alloc(Gfp.NOIO, 0);
        if (bio == null) {
            return abandon(r);
        }
        bio.init(device, BioOp.FLUSH, 0, 0);
        r.addBio(bio);
        bio.setEndIo(NbdRequest.END_IO).setPrivateData(r);
        Submit.submitBio(bio);
        r.put();
        return true;
    }

    /**
     * TRIM: the whole logical blocks inside the range (trimming is advisory, so the partial blocks
     * at the ends keep their data, as the spec allows); tracked, not serialising.
     */
    private boolean trim(NbdRequest r, int flags) {
        long start = alignUp(r.offset);
        long end = alignDown(r.offset + r.length);
        if (end <= start) {
            r.put();
            return true;
        }
        r.track(device.trackedRequests(), start, end, false);
        return noDataRange(r, BioOp.DISCARD, flags, start, end);
    }

    /**
     * WRITE_ZEROES: the whole logical blocks inside the range as zeroes bios; the partial blocks at
     * the ends by read-modify-write (read the block, zero the client's bytes, write it back), one
     * synchronous block at a time through one budget page, registered as serialising.
     */
    private boolean writeZeroes(NbdRequest r, int flags) {
        long end = r.offset + r.length;
        long start = alignDown(r.offset);
        long paddedEnd = alignUp(end);
        int head = (int) (r.offset - start);
        int tail = (int) (paddedEnd - end);
        if (r.length == 0) {
            r.put();
            return true;
        }
        boolean partial = head != 0 || tail != 0;
        r.track(device.trackedRequests(), start, paddedEnd, partial);
        if (partial) {
            readModifyWrites.incrementAndGet();
            if (!chargeBudget(r, Page.SIZE)) {
                return abandon(r);
            }
            int writeFlags = flags & BioFlags.FUA;
            if (head != 0 && !zeroInBlock(start, head, (int) Math.min(blockBytes, head + r.length), writeFlags)) {
                r.fail(EIO);
            }
            long lastBlock = paddedEnd - blockBytes;
            boolean sameBlock = head != 0 && lastBlock == start;
            if (tail != 0 && !sameBlock && !zeroInBlock(lastBlock, 0, blockBytes - tail, writeFlags)) {
                r.fail(EIO);
            }
        }
        long middleStart = alignUp(r.offset);
        long middleEnd = alignDown(end);
        if (middleEnd <= middleStart || r.errno() != 0) {
            r.put();
            return true;
        }
        return noDataRange(r, BioOp.WRITE_ZEROES, flags, middleStart, middleEnd);
    }

    /** Zeroes bytes {@code [from, to)} of the block at {@code blockStart} by read-modify-write; false on an I/O error. */
    private boolean zeroInBlock(long blockStart, int from, int to, int flags) {
        ByteBuffer block = rmwBlocks.slice(0, blockBytes);
        if (!syncBlockIo(BioOp.READ, 0, blockStart, block)) {
            return false;
        }
        for (int i = from; i < to; i++) {
            block.put(i, (byte) 0);
        }
        return syncBlockIo(BioOp.WRITE, flags, blockStart, block);
    }

    /** TRIM and WRITE_ZEROES of {@code [start, end)}: payload-less bios of at most 1 GiB each, submitted one after another. */
    private boolean noDataRange(NbdRequest r, BioOp op, int flags, long start, long end) {
        long position = start;
        while (position < end) {
            int n = (int) Math.min(end - position, NODATA_BIO_BYTES_MAX);
            Bio bio = server.bioSet().alloc(Gfp.NOIO, 0);
            if (bio == null) {
                return abandon(r);
            }
            bio.init(device, op, flags, position >>> Bio.SECTOR_SHIFT);
            bio.setSizeBytes(n);
            r.addBio(bio);
            bio.setEndIo(NbdRequest.END_IO).setPrivateData(r);
            Submit.submitBio(bio);
            position += n;
        }
        r.put();
        return true;
    }

    /**
     * BLOCK_STATUS for {@code base:allocation}: the device's map over the range padded out to
     * whole sectors, then cut back to the client's range; all data if the device keeps no map.
     */
    private void blockStatus(NbdRequest r) {
        boolean one = (r.commandFlags & CMD_FLAG_REQ_ONE) != 0;
        if (!device.knowsAllocation()) {
            r.addExtent(r.length, false);
            return;
        }
        long end = r.offset + r.length;
        long start = r.offset & -(long) Bio.SECTOR_SIZE;
        long paddedEnd = (end + Bio.SECTOR_SIZE - 1) & -(long) Bio.SECTOR_SIZE;
        mapExtents(r, start, paddedEnd, one ? 1 : STATUS_EXTENTS_MAX, true);
        long covered = 0;
        for (int e = 0; e < r.extentCount; e++) {
            covered += r.extentBytes[e];
        }
        r.extentBytes[0] -= r.offset - start;
        if (covered == paddedEnd - start) {
            r.extentBytes[r.extentCount - 1] -= paddedEnd - end;
        }
    }

    /**
     * Fills the request's extents for the device bytes {@code [start, end)} (whole sectors) from
     * {@link BlockDevice#allocatedExtent}. A read keeps room for one last data extent covering
     * whatever the bound leaves; block status just stops (the spec lets a reply cover less than
     * asked).
     */
    private void mapExtents(NbdRequest r, long start, long end, int extentsMax, boolean stopAtBound) {
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

    /**
     * Takes budget pages for {@code bytes} of payload in one run (waits while other requests hold
     * it); false if the connection is ending, and the caller abandons the request.
     */
    private boolean chargeBudget(NbdRequest r, long bytes) {
        return chargeBudgetPages(r, NbdServer.chargePages(bytes));
    }

    /** Takes {@code pages} of budget for the request; false (nothing taken) if the connection is ending. */
    private boolean chargeBudgetPages(NbdRequest r, long pages) {
        if (pages > 0) {
            if (!server.budget().acquire(budgetShare, (int) pages, () -> ending)) {
                return false;
            }
            r.budgetPages += (int) pages;
        }
        return true;
    }

    /** A bio with {@code bytes} of fresh pages (NOIO: waits for the reserve); null only when the kernel closes. */
    private Bio allocDataBio(int bytes) {
        int pages = (bytes + Page.SIZE - 1) >>> Page.SHIFT;
        Bio bio = server.bioSet().alloc(Gfp.NOIO, pages);
        if (bio == null) {
            return null;
        }
        // Most pages in one bulk take under the arena's lock; the rest one by one (reclaim, waits).
        Page[] taken = readerPages;
        int bulk = kernel.pages().allocBulk(Gfp.NOIO, taken, pages);
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

    /** Points a data bio at the device and submits it as part of the request. */
    private void submit(NbdRequest r, Bio bio, BioOp op, int flags, long position) {
        bio.init(device, op, flags, position >>> Bio.SECTOR_SHIFT);
        bio.setEndIo(NbdRequest.END_IO).setPrivateData(r);
        r.addBio(bio);
        Submit.submitBio(bio);
    }

    /** Ends a request the reader could not finish (client gone, kernel closing); stops the reader. */
    private boolean abandon(NbdRequest r) {
        r.lastWindow = true;
        r.fail(EIO);
        r.put();
        return false;
    }

    /** Waits for a free in-flight slot (the per-connection bound) and takes it. */
    private NbdRequest takeSlot() {
        slotWait.waitEvent(slotAvailable, this);
        int slot;
        slotLock.lock();
        try {
            if (freeCount == 0) {
                throw new IllegalStateException(name + ": no free slot although " + inUse.get() + " of "
                        + requests.length + " are in use");
            }
            inUse.incrementAndGet();
            slot = freeSlots[--freeCount];
        } finally {
            slotLock.unlock();
        }
        NbdRequest r = requests[slot];
        if (r == null) {
            // First use of this slot: built once, kept for the connection's life (bounded by the
            // slots). Only the reader takes slots, and a request reaches the writer through the
            // reply ring's lock, so the writer sees it built.
            r = new NbdRequest(this, slot, biosMax, STATUS_EXTENTS_MAX);
            requests[slot] = r;
        }
        return r;
    }

    /** Returns a slot and wakes the reader (waiting for a slot) and the writer (waiting to finish). */
    private void returnSlot(NbdRequest r) {
        slotLock.lock();
        try {
            freeSlots[freeCount++] = r.slot;
        } finally {
            slotLock.unlock();
        }
        inUse.decrementAndGet();
        slotWait.wakeOne();
        writerWait.wakeOne();
    }

    // ---- completion side -----------------------------------------------------------------------

    /** Queues a finished request for the writer; called from completions, never blocks. */
    void replyReady(NbdRequest r) {
        ringLock.lock();
        try {
            if (ringCount == ring.length) {
                throw new IllegalStateException(name + ": reply ring full (" + ringCount + ") at " + r);
            }
            ring[(ringHead + ringCount) % ring.length] = r;
            ringCount++;
        } finally {
            ringLock.unlock();
        }
        writerWait.wakeOne();
    }

    private boolean hasReplies() {
        ringLock.lock();
        try {
            return ringCount > 0;
        } finally {
            ringLock.unlock();
        }
    }

    // ---- writer task ---------------------------------------------------------------------------

    /**
     * The writer task's body: send replies as requests finish; after the reader ends, drain and
     * close. Each wake-up takes every finished reply (up to {@link #BATCH_MAX}) off the ring and
     * sends them together, so a busy connection pays one gathering write for many replies.
     */
    private void runWriter() {
        try {
            startReplyTimer();
            while (true) {
                writerWait.waitEventTimeout(writerHasWork, this, -1, true);
                int n = popReplies();
                if (n == 0) {
                    if (readerDone && inUse.get() == 0) {
                        return;
                    }
                    continue;
                }
                if (!broken) {
                    try {
                        noteSendProgress();
                        writerSending = true;
                        sendBatch(n);
                        noteActivity();
                    } catch (IOException e) {
                        broken = true; // keep draining completions; stop the reader too
                        shutdownInput();
                    } finally {
                        writerSending = false;
                    }
                }
                int budgetPages = 0;
                for (int i = 0; i < n; i++) {
                    NbdRequest r = batch[i];
                    batch[i] = null;
                    boolean window = !r.lastWindow;
                    r.release(writerPages);
                    if (!window || (r.command == CMD_READ && r.errno() != 0)) {
                        // The request is over: its last window, or a READ that failed in an earlier one.
                        budgetPages += r.budgetPages;
                        r.budgetPages = 0;
                        returnSlot(r);
                    }
                    if (window) {
                        r.windowSent.complete(); // the reader goes on with the next window (or sees the end)
                    }
                }
                server.budget().release(budgetShare, budgetPages);
            }
        } finally {
            finish();
        }
    }

    /** Moves up to {@link #BATCH_MAX} finished requests from the ring into {@link #batch}; returns how many. */
    private int popReplies() {
        ringLock.lock();
        try {
            int n = Math.min(ringCount, BATCH_MAX);
            for (int i = 0; i < n; i++) {
                batch[i] = ring[ringHead];
                ring[ringHead] = null;
                ringHead = (ringHead + 1) % ring.length;
            }
            ringCount -= n;
            return n;
        } finally {
            ringLock.unlock();
        }
    }

    /**
     * Sends the replies of {@code batch[0..n)}: simple replies, errors and single-extent reads are
     * gathered (header and data views) into one array and written with as few writes as the array
     * bound allows; anything else (hole chunks, block status, a reply larger than the array) flushes
     * the gathered part first and is sent on its own, so replies keep their order on the wire.
     */
    private void sendBatch(int n) throws IOException {
        int used = 0;
        for (int i = 0; i < n; i++) {
            NbdRequest r = batch[i];
            int errno = r.errno();
            boolean read = r.command == CMD_READ && errno == 0;
            boolean gatherable;
            if (read) {
                boolean whole = r.lastWindow && !r.replyStarted && r.trimHead == 0 && r.trimTail == 0;
                gatherable = whole && (structured ? r.extentCount == 1 && !r.extentHole[0] : true);
            } else {
                gatherable = r.lastWindow && (r.command != CMD_BLOCK_STATUS || errno != 0);
            }
            int segments = read ? dataSegments(r) : 0;
            if (!gatherable || segments + 1 > GATHER_MAX) {
                used = flushGather(used);
                send(r);
                continue;
            }
            if (used + segments + 1 > GATHER_MAX) {
                used = flushGather(used);
            }
            ByteBuffer h = replyHeaders[i].clear();
            if (structured && r.command == CMD_READ) {
                if (errno != 0) {
                    chunkHeader(h, r, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 6);
                    h.putInt(errno).putShort((short) 0);
                } else {
                    chunkHeader(h, r, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, (int) (8 + r.extentBytes[0]));
                    h.putLong(r.offset);
                }
            } else {
                h.putInt(SIMPLE_REPLY_MAGIC).putInt(errno).putLong(r.cookie);
            }
            gather[used++] = h.flip();
            if (read) {
                for (int b = 0; b < r.bioCount; b++) {
                    writerIter.resetAll(r.bios[b]);
                    used = SegmentViews.fill(writerIter, gather, used);
                }
            }
        }
        flushGather(used);
    }

    /** Page segments of a finished READ's data bios. */
    private int dataSegments(NbdRequest r) {
        int count = 0;
        for (int b = 0; b < r.bioCount; b++) {
            count += r.bios[b].vecCount();
        }
        return count;
    }

    /** Writes {@code gather[0..used)} fully and clears it; returns 0 (the new fill). */
    private int flushGather(int used) throws IOException {
        if (used == 0) {
            return 0;
        }
        try {
            writeReplies(gather, used);
        } finally {
            java.util.Arrays.fill(gather, 0, used, null);
        }
        return 0;
    }

    /** Sends the reply a finished request (or a READ's window) owes. */
    private void send(NbdRequest r) throws IOException {
        int errno = r.errno();
        if (r.command == CMD_READ) {
            if (structured) {
                sendStructuredRead(r, errno);
            } else {
                sendSimpleRead(r, errno);
            }
            r.replyStarted = true;
            return;
        }
        if (!r.lastWindow) {
            return; // a window of a long WRITE: its one reply comes after the last window
        }
        if (r.command == CMD_BLOCK_STATUS && errno == 0) {
            sendBlockStatus(r);
            return;
        }
        sendSimple(r, errno);
    }

    private void sendSimple(NbdRequest r, int errno) throws IOException {
        ByteBuffer h = replyHeader.clear();
        h.putInt(SIMPLE_REPLY_MAGIC).putInt(errno).putLong(r.cookie).flip();
        writeReply(h);
    }

    /**
     * A simple READ reply or one window of it: the header with the first window, then the client's
     * bytes of the window. An error after the header went out cannot be told in a simple reply:
     * the spec's answer is a hard disconnect, which the thrown exception causes.
     */
    private void sendSimpleRead(NbdRequest r, int errno) throws IOException {
        if (errno != 0) {
            if (r.replyStarted) {
                throw new IOException(r + ": error " + errno + " after the simple reply's header was sent");
            }
            sendSimple(r, errno);
            return;
        }
        if (!r.replyStarted) {
            sendSimple(r, 0);
        }
        long padded = r.windowEnd - r.windowStart;
        sendData(r, 0, padded, r.trimHead, padded - r.trimHead - r.trimTail);
    }

    private void chunkHeader(ByteBuffer h, NbdRequest r, int flags, int type, int length) {
        h.putInt(STRUCTURED_REPLY_MAGIC).putShort((short) flags).putShort((short) type).putLong(r.cookie)
                .putInt(length);
    }

    /**
     * A structured READ reply, or one window of it: an error chunk, or data and hole chunks in
     * offset order, cut to the client's range; the request's last chunk carries DONE.
     */
    private void sendStructuredRead(NbdRequest r, int errno) throws IOException {
        ByteBuffer h = replyHeader.clear();
        if (errno != 0) {
            chunkHeader(h, r, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 6);
            h.putInt(errno).putShort((short) 0).flip();
            writeReply(h);
            return;
        }
        if (r.extentCount == 0) {
            chunkHeader(h, r, REPLY_FLAG_DONE, REPLY_TYPE_NONE, 0);
            writeReply(h.flip());
            return;
        }
        long low = r.windowStart + r.trimHead;
        long high = r.windowEnd - r.trimTail;
        int lastChunk = -1;
        long position = r.windowStart;
        for (int e = 0; e < r.extentCount; e++) {
            long extentEnd = position + r.extentBytes[e];
            if (Math.min(extentEnd, high) > Math.max(position, low)) {
                lastChunk = e;
            }
            position = extentEnd;
        }
        position = r.windowStart;
        int bio = 0;
        for (int e = 0; e < r.extentCount; e++) {
            long extentEnd = position + r.extentBytes[e];
            long from = Math.max(position, low);
            long to = Math.min(extentEnd, high);
            int flags = r.lastWindow && e == lastChunk ? REPLY_FLAG_DONE : 0;
            h.clear();
            if (r.extentHole[e]) {
                if (to > from) {
                    chunkHeader(h, r, flags, REPLY_TYPE_OFFSET_HOLE, 12);
                    h.putLong(from).putInt((int) (to - from)).flip();
                    writeReply(h);
                }
            } else {
                if (to > from) {
                    chunkHeader(h, r, flags, REPLY_TYPE_OFFSET_DATA, (int) (8 + to - from));
                    h.putLong(from).flip();
                    writeReply(h);
                }
                bio = sendData(r, bio, extentEnd - position, Math.max(0, from - position), Math.max(0, to - from));
            }
            position = extentEnd;
        }
    }

    /**
     * Sends {@code bytes} bytes after the first {@code skip} of the request's data bios from
     * {@code bio} on, which together cover exactly {@code paddedBytes}; returns the next bio's index.
     */
    private int sendData(NbdRequest r, int bio, long paddedBytes, long skip, long bytes) throws IOException {
        for (long left = paddedBytes; left > 0; ) {
            if (bio == r.bioCount) {
                throw new IllegalStateException(r + ": data extent of " + paddedBytes + " bytes outruns its bios");
            }
            writerIter.resetAll(r.bios[bio++]);
            int count = SegmentViews.fill(writerIter, gather, 0);
            long size = 0;
            for (int i = 0; i < count; i++) {
                size += gather[i].remaining();
            }
            long skipHere = Math.min(skip, size);
            long sendHere = Math.min(bytes, size - skipHere);
            count = trimViews(gather, count, skipHere, sendHere);
            try {
                writeReplies(gather, count);
            } finally {
                java.util.Arrays.fill(gather, 0, gather.length, null);
            }
            skip -= skipHere;
            bytes -= sendHere;
            left -= size;
        }
        return bio;
    }

    /** Writes the buffer's remaining bytes as {@link #writeReplies} does. */
    private void writeReply(ByteBuffer buffer) throws IOException {
        gatherOne[0] = buffer;
        try {
            writeReplies(gatherOne, 1);
        } finally {
            gatherOne[0] = null;
        }
    }

    /**
     * Writes every buffer of {@code buffers[0..count)}, at most {@link #WRITE_CHUNK_BYTES} per
     * write call (a buffer larger than that is cut with its limit), noting progress after each
     * call for the reply timer.
     */
    private void writeReplies(ByteBuffer[] buffers, int count) throws IOException {
        int idx = 0;
        while (idx < count) {
            if (!buffers[idx].hasRemaining()) {
                idx++;
                continue;
            }
            ByteBuffer first = buffers[idx];
            if (first.remaining() >= WRITE_CHUNK_BYTES) {
                int limit = first.limit();
                first.limit(first.position() + WRITE_CHUNK_BYTES);
                try {
                    WireIo.writeFully(channel, first);
                } finally {
                    first.limit(limit);
                }
            } else {
                int end = idx + 1;
                long bytes = first.remaining();
                while (end < count && bytes + buffers[end].remaining() <= WRITE_CHUNK_BYTES) {
                    bytes += buffers[end++].remaining();
                }
                WireIo.writeFully(channel, buffers, idx, end);
            }
            noteSendProgress();
        }
    }

    /** Notes that the writer moved replies (only with a reply timeout: a clock read per chunk). */
    private void noteSendProgress() {
        if (replyTimeoutNanos > 0) {
            lastSendProgressNanos = kernel.scheduler().nanoTime();
        }
    }

    /** A BLOCK_STATUS reply: one chunk for {@code base:allocation}, DONE. */
    private void sendBlockStatus(NbdRequest r) throws IOException {
        ByteBuffer h = replyHeader.clear();
        chunkHeader(h, r, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, 4 + 8 * r.extentCount);
        h.putInt(NbdHandshake.ALLOCATION_CONTEXT_ID);
        for (int e = 0; e < r.extentCount; e++) {
            h.putInt((int) r.extentBytes[e]).putInt(r.extentHole[e] ? STATE_HOLE | STATE_ZERO : 0);
        }
        writeReply(h.flip());
    }

    // ---- ending --------------------------------------------------------------------------------

    /** Makes a blocked read return end of stream (server close, or the writer lost the socket). */
    void shutdownInput() {
        endBudgetWait();
        try {
            channel.shutdownInput();
        } catch (IOException e) {
            // already closed
        }
    }

    /** Ends writes on the socket (the handshake timer, for a client that stopped reading). */
    private void shutdownOutput() {
        try {
            channel.shutdownOutput();
        } catch (IOException e) {
            // already closed
        }
    }

    /** Closes the socket now (a server past its drain deadline); the tasks see it and end as they can. */
    void closeSocket() {
        endBudgetWait();
        try {
            channel.close();
        } catch (IOException e) {
            // already closed
        }
    }

    /** Marks the connection ending and wakes a reader waiting for payload budget, so that wait ends too. */
    private void endBudgetWait() {
        ending = true;
        server.budget().wakeWaiters();
    }

    /** Ends a connection whose first task could not be started. */
    void endUnstarted() {
        finish();
    }

    /**
     * This connection's requests in flight and where each one's bios are (a device, a driver's
     * queue): for the watchdog's and the drain's explanations. Reads without locks, so a request
     * finishing meanwhile may be shown half; it is a description, never a decision.
     */
    String describeInFlight() {
        StringBuilder sb = new StringBuilder();
        sb.append("connection ").append(name).append(": ").append(inUse.get()).append(" request(s) in flight");
        int shown = 0;
        for (NbdRequest r : requests) {
            if (r == null || r.remaining.get() <= 0) {
                continue; // a slot never used yet has no request
            }
            if (shown++ == 8) {
                sb.append(" ...");
                break;
            }
            sb.append(shown == 1 ? ": " : ", ").append(r);
            StringBuilder where = new StringBuilder();
            int bios = Math.min(r.bioCount, r.bios.length);
            for (int i = 0; i < bios; i++) {
                io.blkstack.bio.Bio bio = r.bios[i];
                if (bio != null && bio.state() != io.blkstack.bio.BioState.FREE) {
                    where.append(where.isEmpty() ? "" : "; ").append(bio.describeHolder());
                }
            }
            if (!where.isEmpty()) {
                sb.append(" [its bios: ").append(where).append(']');
            }
        }
        return sb.toString();
    }

    /** Stops the timers, closes the socket, leaves the server's table and signals the end. */
    private void finish() {
        timerLock.lock();
        try {
            timersStopped = true;
        } finally {
            timerLock.unlock();
        }
        stopTimer();
        stopReplyTimer();
        try {
            channel.close();
        } catch (IOException e) {
            // nothing left to do with it
        }
        if (phase.get() == REPLY_TIMED_OUT) {
            // Logged here, not by the reader: the reader may have ended (a client that shut its
            // output) before the timer cut the writer. By now every request's budget is back.
            server.log(name + " (" + peer + "): disconnected: replies not read for "
                    + NbdServer.formatNanos(replyTimeoutNanos) + " (reply timeout)");
        }
        server.connectionEnded(this);
        done.completeAll();
    }

    @Override
    public String toString() {
        return "nbd connection " + name;
    }
}
