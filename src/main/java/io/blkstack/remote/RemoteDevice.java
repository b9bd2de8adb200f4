package io.blkstack.remote;

import static io.blkstack.nbd.NbdProtocol.*;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioIter;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.QueueLimits;
import io.blkstack.block.SegmentViews;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.Timer;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.mem.Page;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.BooleanSupplier;
import java.util.function.Consumer;

/**
 * A bottom device whose sectors live on another NBD server (nbdkit, qemu-nbd, another blkstack):
 * the kernel's {@code nbd} client driver, on the kernel primitives.
 *
 * <p><b>Tasks.</b> Each connection has a sender and a receiver task ({@link TaskKind#DEVICE}); all
 * socket I/O happens on them (it stands for hardware, as file I/O does on a file device's tasks),
 * every wait between tasks is a {@link WaitQueue}, and a kernel timer (the watchdog) enforces the
 * timeout by cutting wires, which never blocks. Submitters wait only for a free command slot.
 *
 * <p><b>Memory.</b> Commands live in {@link RemoteRequest} slots made once ({@code queueDepth} per
 * connection), so queues are intrusive lists bounded by the slot count. Payloads go from and to the
 * bio's own pages: a WRITE is one gather write of the header and the bio's segments, a READ reply
 * is scattered straight into them.
 *
 * <p><b>Protocol.</b> Fixed newstyle, structured replies, {@code NBD_OPT_GO} with block sizes (the
 * device's limits: logical block = the server's minimum, max bio = its maximum payload, so larger
 * bios are split before they get here), FUA passed through (or emulated with a flush after the write
 * when the server has flush but not FUA), TRIM and WRITE_ZEROES when advertised (a DISCARD without
 * TRIM fails with NOTSUPP; a WRITE_ZEROES without it becomes a WRITE of zeros).
 *
 * <p><b>TLS.</b> With an {@code nbds://} or {@code nbds+unix://} URI every connection (the first and
 * each reconnect) starts with {@code NBD_OPT_STARTTLS} and the TLS handshake ({@link ClientTls},
 * {@link TlsWire}) inside the same timeout-bounded handshake; a failure refuses the device at open
 * and, on a reconnect, is logged and retried like any failed handshake.
 *
 * <p><b>Flush.</b> A FLUSH bio (and the flush phase of a PREFLUSH or emulated-FUA write) is sent on
 * every connection, each one only after every write queued before it on that connection has been
 * acknowledged (NBD's flush covers only writes the server has completed), and completes when all
 * of them have; with multi-conn any one would do, but all of them is honest without it too.
 *
 * <p><b>Faults.</b> A lost connection is re-established by its sender with a bounded back-off. Of
 * the commands it had in flight, reads and flushes are sent again on the new connection; writes
 * (WRITE, WRITE_ZEROES, TRIM) whose outcome is unknown fail with EIO, never silently lost; and if
 * the lost connection had acknowledged writes after its last acknowledged flush, the next flush
 * fails with EIO (the server may have lost them: the kernel's writeback error; a device that goes
 * on to fail drops it, as its failure already told everyone). Every bio has a
 * deadline ({@code timeout} after submission): past it the bio fails with EIO (a sent one by
 * cutting its connection first, so no task still touches its pages). With no connection for
 * {@code timeout} the device is failed: queued bios fail with EIO, new ones at once, and
 * {@link #describeState} says so, until a reconnect succeeds.
 */
public final class RemoteDevice extends BlockDevice {

    /**
     * Settings of a remote device.
     *
     * @param uri the server and export
     * @param transport how to reach it (a socket, or a simulated server)
     * @param connections connections wanted; 1 unless the server allows multi-conn
     * @param timeoutNanos a bio's deadline after submission, and how long the device may be without
     *     any connection before it is failed
     * @param queueDepth commands in flight per connection
     * @param log where log lines go; called from the device's tasks and timers, must not block
     * @param tls the TLS settings; null for {@code nbd://} URIs, required to open an {@code nbds://} one
     */
    public record Options(NbdUri uri, NbdTransport transport, int connections, long timeoutNanos, int queueDepth,
            Consumer<String> log, ClientTls tls) {

        public static final int CONNECTIONS_MAX = 16;
        public static final int QUEUE_DEPTH_DEFAULT = 64;
        public static final int QUEUE_DEPTH_MAX = 1024;
        public static final long TIMEOUT_DEFAULT_NANOS = 30_000_000_000L;

        public Options {
            if (uri == null || transport == null || log == null) {
                throw new IllegalArgumentException("remote device options need a uri, a transport and a log");
            }
            if (connections < 1 || connections > CONNECTIONS_MAX) {
                throw new IllegalArgumentException("remote device " + uri + ": connections " + connections
                        + " not in 1.." + CONNECTIONS_MAX);
            }
            if (timeoutNanos < 1_000_000) {
                throw new IllegalArgumentException("remote device " + uri + ": timeout " + timeoutNanos
                        + " ns is under 1 ms");
            }
            if (queueDepth < 1 || queueDepth > QUEUE_DEPTH_MAX) {
                throw new IllegalArgumentException("remote device " + uri + ": queue depth " + queueDepth
                        + " not in 1.." + QUEUE_DEPTH_MAX);
            }
            if (!uri.tls() && tls != null) {
                throw new IllegalArgumentException("remote device " + uri + ": TLS settings need an nbds:// or"
                        + " nbds+unix:// URI (nbd:// never uses TLS)");
            }
        }

        /**
         * A socket transport to the URI, one connection, 30 s timeout, depth 64, log to standard
         * error, no TLS (an {@code nbds} URI needs {@link #withTls} before the device opens).
         */
        public static Options of(NbdUri uri) {
            return new Options(uri, NbdTransport.socket(uri.address()), 1, TIMEOUT_DEFAULT_NANOS, QUEUE_DEPTH_DEFAULT,
                    line -> System.err.println("blkstack: " + line), null);
        }

        public Options withConnections(int value) {
            return new Options(uri, transport, value, timeoutNanos, queueDepth, log, tls);
        }

        public Options withTimeoutNanos(long value) {
            return new Options(uri, transport, connections, value, queueDepth, log, tls);
        }

        public Options withLog(Consumer<String> value) {
            return new Options(uri, transport, connections, timeoutNanos, queueDepth, value, tls);
        }

        public Options withTls(ClientTls value) {
            return new Options(uri, transport, connections, timeoutNanos, queueDepth, log, value);
        }

        public Options withTransport(NbdTransport value) {
            return new Options(uri, value, connections, timeoutNanos, queueDepth, log, tls);
        }
    }

    /** First wait before reconnecting; doubles per failed attempt up to {@link #BACKOFF_MAX_NANOS}. */
    static final long BACKOFF_MIN_NANOS = 50_000_000L;
    static final long BACKOFF_MAX_NANOS = 2_000_000_000L;
    /** Largest structured reply chunk header data read into the receiver's scratch buffer. */
    private static final int SCRATCH_BYTES = 8192;
    /** Zeros a WRITE_ZEROES fallback sends from, a piece at a time. */
    private static final int ZERO_BYTES = 65536;

    private final Options options;
    private final ExportInfo info;
    private final String label;
    private final SpinLock lock;
    private final WaitQueue slotWait;
    /** The command slots; the last one is the BLOCK_STATUS query slot, never on the free list. */
    private final RemoteRequest[] slots;
    private final int slotCount;
    private final RemoteRequest statusQuery;
    /** Allocation learned from BLOCK_STATUS, or null without {@code base:allocation}; guarded by lock. */
    private final AllocationMap allocation;
    /** Write bios (WRITE, WRITE_ZEROES, DISCARD) submitted and not completed; guarded by lock. */
    private int writeBiosInFlight;
    private final Link[] links;
    private final long tickNanos;
    private final BooleanSupplier slotOrEnd;
    private final AtomicLong ioErrors = new AtomicLong();
    private final AtomicLong reconnects = new AtomicLong();
    private final AtomicLong timeouts = new AtomicLong();
    private final AtomicLong completed = new AtomicLong();
    /** Woken when a connection comes up, for {@link #awaitConnected}. */
    private final WaitQueue upWait;

    // Guarded by lock.
    private RemoteRequest freeHead;
    private volatile int freeCount;
    private int nextLink;
    private int linksUp;
    private long allDownSinceNanos;
    private volatile boolean failed;
    private volatile boolean closing;
    private boolean writebackError;
    private String lastError = "";
    private Timer watchdog;

    /** One connection: its wire, its queue of commands to send, its commands on the wire, its tasks. */
    private final class Link {
        final int index;
        final WaitQueue wait;
        final ByteBuffer header = ByteBuffer.allocateDirect(REQUEST_HEADER_BYTES);
        final ByteBuffer replyHeader = ByteBuffer.allocateDirect(STRUCTURED_HEADER_BYTES);
        final ByteBuffer scratch = ByteBuffer.allocateDirect(SCRATCH_BYTES);
        final ByteBuffer zeros = ByteBuffer.allocateDirect(ZERO_BYTES);
        final ByteBuffer[] sendViews = new ByteBuffer[Bio.VECS_MAX + 1];
        final ByteBuffer[] receiveViews = new ByteBuffer[Bio.VECS_MAX];
        final BioIter sendIter = new BioIter();
        final BioIter receiveIter = new BioIter();
        // Guarded by lock.
        NbdTransport.Wire wire;
        /** A wire still in its handshake, so that close can cut it. */
        NbdTransport.Wire connecting;
        long wireGeneration;
        long receiverGeneration;
        boolean broken;
        boolean up;
        RemoteRequest queueHead;
        RemoteRequest queueTail;
        RemoteRequest sentHead;
        RemoteRequest sentTail;
        int sent;
        int writesSent;
        boolean dirty;
        Task sender;
        Task receiver;

        Link(int index) {
            this.index = index;
            this.wait = new WaitQueue(name() + " link " + index);
        }

        @Override
        public String toString() {
            return name() + " link " + index;
        }
    }

    private RemoteDevice(Kernel kernel, String name, Options options, ExportInfo info, QueueLimits limits,
            int connections, NbdTransport.Wire first) {
        super(kernel, name, info.sizeBytes() / limits.logicalBlockSize() * limits.logicalBlockSectors(), limits);
        this.options = options;
        this.info = info;
        this.label = "remote device " + name + " (" + options.uri() + ")";
        this.lock = new SpinLock(label);
        this.slotWait = new WaitQueue(label + " slots");
        this.upWait = new WaitQueue(label + " up");
        this.slotOrEnd = () -> freeCount > 0 || closing;
        this.tickNanos = Math.max(1_000_000L, Math.min(options.timeoutNanos() / 8, 500_000_000L));
        int depth = options.queueDepth() * connections;
        this.slotCount = depth;
        this.slots = new RemoteRequest[depth + 1];
        this.statusQuery = new RemoteRequest(depth, 1);
        statusQuery.leader = statusQuery;
        slots[depth] = statusQuery;
        this.allocation = info.allocationContextId() >= 0 ? new AllocationMap(capacityBytes()) : null;
        for (int i = depth - 1; i >= 0; i--) {
            slots[i] = new RemoteRequest(i, connections);
            slots[i].next = freeHead;
            freeHead = slots[i];
        }
        this.freeCount = depth;
        this.links = new Link[connections];
        for (int i = 0; i < connections; i++) {
            links[i] = new Link(i);
        }
        links[0].wire = first;
        links[0].wireGeneration = 1;
        links[0].up = true;
        this.linksUp = 1;
        try {
            for (Link link : links) {
                link.receiver = kernel.spawn(name + "/recv" + link.index, TaskKind.DEVICE, () -> runReceiver(link));
                link.sender = kernel.spawn(name + "/send" + link.index, TaskKind.DEVICE, () -> runSender(link));
            }
        } catch (RuntimeException e) {
            close();
            throw e;
        }
        armWatchdog();
        if (allocation != null) {
            lock.lock();
            try {
                queueStatusQuery(0);
            } finally {
                lock.unlock();
            }
        }
    }

    /**
     * Connects to the server, negotiates the export and builds the device; the first connection is
     * made here (bounded by the timeout), the others by their senders.
     *
     * @throws IOException the server cannot be reached or refuses the export
     */
    public static RemoteDevice open(Kernel kernel, String name, Options options) throws IOException {
        if (options.uri().tls() && options.tls() == null) {
            throw new IllegalArgumentException("remote device " + name + " (" + options.uri() + "): TLS needs the CA"
                    + " that signed the server's certificate (tls: { ca: PEM }), or tls: { verify-peer: false } to"
                    + " accept any server");
        }
        NbdTransport.Wire plain = options.transport().connect(options.timeoutNanos());
        NbdTransport.Wire wire;
        ExportInfo info;
        Timer cutter = kernel.scheduler().addTimer(options.timeoutNanos(), "handshake " + name, plain::cut);
        try {
            ClientHandshake.Negotiated n = ClientHandshake.negotiate(plain, options.uri(), options.tls(), name + "/0");
            wire = n.wire();
            info = n.info();
        } catch (IOException | RuntimeException e) {
            boolean timedOut = !cutter.cancel();
            plain.cut();
            plain.close();
            throw new IOException(options.uri() + ": " + handshakeFailure(e, timedOut, options.timeoutNanos()), e);
        } finally {
            cutter.cancel();
        }
        try {
            QueueLimits limits = limitsFor(info, options.uri());
            int connections = options.connections();
            if (connections > 1 && !info.has(FLAG_CAN_MULTI_CONN)) {
                options.log().accept("remote device " + name + ": " + options.uri() + " does not allow multi-conn;"
                        + " using 1 connection instead of " + connections);
                connections = 1;
            }
            if (info.sizeBytes() < limits.logicalBlockSize()) {
                throw new IOException(options.uri() + ": export of " + info.sizeBytes() + " bytes is too small");
            }
            RemoteDevice device = new RemoteDevice(kernel, name, options, info, limits, connections, wire);
            options.log().accept(device.label + ": connected, " + info.describe() + ", " + connections
                    + " connection(s)" + (options.tls() == null ? "" : ", " + options.tls()));
            return device;
        } catch (IOException | RuntimeException e) {
            wire.cut();
            wire.close();
            throw e;
        }
    }

    /** Why a handshake failed: the exception's message, or the timeout that cut it. */
    private static String handshakeFailure(Exception e, boolean timedOut, long timeoutNanos) {
        if (timedOut) {
            return "no handshake (NBD options" + " and TLS, if any) within the timeout of " + timeoutNanos / 1_000_000
                    + " ms" + (e.getMessage() == null ? "" : " (" + e.getMessage() + ")");
        }
        return e.getMessage() == null ? e.toString() : e.getMessage();
    }

    /** Queue limits from the server's block sizes: its minimum as logical block, its maximum as bio size. */
    static QueueLimits limitsFor(ExportInfo info, NbdUri uri) throws IOException {
        int min = Math.max(info.minBlockSize(), Bio.SECTOR_SIZE);
        if (Integer.bitCount(min) != 1 || min > Page.SIZE) {
            throw new IOException(uri + ": server's minimum block size " + info.minBlockSize()
                    + " is not a power of two up to " + Page.SIZE);
        }
        int preferred = Math.max(min, Integer.highestOneBit(Math.max(info.preferredBlockSize(), 1)));
        int maxBytes = Math.min(info.maxPayload(), QueueLimits.DEFAULT_MAX_SECTORS << Bio.SECTOR_SHIFT);
        int maxSectors = maxBytes / min * min >>> Bio.SECTOR_SHIFT;
        if (maxSectors < min >>> Bio.SECTOR_SHIFT) {
            throw new IOException(uri + ": server's maximum payload " + info.maxPayload()
                    + " is under its minimum block size " + min);
        }
        QueueLimits d = QueueLimits.defaults();
        return new QueueLimits(min, preferred, maxSectors, d.maxSegments(), d.maxSegmentSize(), 0, d.dmaAlignment());
    }

    // ---- submission ----------------------------------------------------------------------------

    /** Queues the bio's commands; waits for a slot unless the bio is NOWAIT (then AGAIN). */
    @Override
    protected void submitBio(Bio bio) {
        Bio front = splitToLimits(bio);
        BioStatus refused = refusal(front);
        if (refused != null) {
            fail(front, refused);
            return;
        }
        boolean canFlush = info.has(FLAG_SEND_FLUSH);
        BioOp op = front.op();
        boolean data = op != BioOp.FLUSH && front.sizeBytes() > 0;
        boolean preflush = canFlush && front.hasFlag(BioFlags.PREFLUSH) && op != BioOp.FLUSH;
        boolean postflush = canFlush && (op == BioOp.FLUSH
                || front.hasFlag(BioFlags.FUA) && op.isWrite() && !info.has(FLAG_SEND_FUA));
        if (!data && !preflush && !postflush) {
            front.endio(); // a flush to a server without flush: its writes are stable when acknowledged
            return;
        }
        int need = preflush || postflush ? links.length : 1;
        RemoteRequest leader = acquire(need, front.hasFlag(BioFlags.NOWAIT));
        if (leader == null) {
            fail(front, closing || failed ? BioStatus.IOERR : BioStatus.AGAIN);
            return;
        }
        leader.bio = front;
        leader.preflush = preflush;
        leader.postflush = postflush;
        leader.status = BioStatus.OK;
        leader.deadlineNanos = kernel().scheduler().nanoTime() + options.timeoutNanos();
        leader.phase = preflush ? RemoteRequest.Phase.PREFLUSH
                : data ? RemoteRequest.Phase.DATA : RemoteRequest.Phase.POSTFLUSH;
        boolean refuse;
        lock.lock();
        try {
            refuse = closing || failed;
            if (!refuse) {
                if (data && op.isWrite()) {
                    writeBiosInFlight++;
                    if (allocation != null) {
                        allocation.invalidate(front.sector() << Bio.SECTOR_SHIFT, front.sizeBytes());
                    }
                }
                startPhase(leader);
            }
        } finally {
            lock.unlock();
        }
        if (refuse) {
            release(leader);
            fail(front, BioStatus.IOERR);
        }
    }

    /** Why the device cannot take this bio at all, or null. */
    private BioStatus refusal(Bio bio) {
        if (failed || closing) {
            return BioStatus.IOERR;
        }
        BioOp op = bio.op();
        if (op.isWrite() && op != BioOp.FLUSH && info.readOnly()) {
            return BioStatus.PERM;
        }
        if (op == BioOp.DISCARD && !info.has(FLAG_SEND_TRIM)) {
            return BioStatus.NOTSUPP;
        }
        return null;
    }

    private void fail(Bio bio, BioStatus status) {
        if (status == BioStatus.IOERR) {
            ioErrors.incrementAndGet();
        }
        bio.setStatus(status);
        bio.endio();
    }

    /** Takes {@code count} slots at once (never some, then wait for the rest: rule 1), or null. */
    private RemoteRequest acquire(int count, boolean nowait) {
        while (true) {
            lock.lock();
            try {
                if (closing || failed) {
                    return null;
                }
                if (freeCount >= count) {
                    RemoteRequest leader = null;
                    for (int i = 0; i < count; i++) {
                        RemoteRequest r = freeHead;
                        freeHead = r.next;
                        r.next = null;
                        r.generation++;
                        r.state = RemoteRequest.State.QUEUED;
                        if (leader == null) {
                            leader = r;
                        }
                        r.leader = leader;
                        leader.group[i] = r;
                    }
                    leader.groupSize = count;
                    freeCount -= count;
                    return leader;
                }
            } finally {
                lock.unlock();
            }
            if (nowait) {
                return null;
            }
            final int want = count;
            slotWait.waitEventTimeout(() -> freeCount >= want || closing || failed, this, tickNanos, false);
        }
    }

    /** Returns a leader's slots to the free list and wakes submitters waiting for them. */
    private void release(RemoteRequest leader) {
        lock.lock();
        try {
            for (int i = 0; i < leader.groupSize; i++) {
                RemoteRequest r = leader.group[i];
                leader.group[i] = null;
                r.state = RemoteRequest.State.FREE;
                r.leader = null;
                r.bio = null;
                r.connection = -1;
                r.repliedWhileSending = false;
                r.next = freeHead;
                r.prev = null;
                freeHead = r;
            }
            freeCount += leader.groupSize;
            leader.groupSize = 0;
        } finally {
            lock.unlock();
        }
        slotWait.wakeAll();
    }

    // ---- phases (under lock) -------------------------------------------------------------------

    /** Queues the commands of the leader's current phase. */
    private void startPhase(RemoteRequest leader) {
        if (leader.phase == RemoteRequest.Phase.DATA) {
            dataCommand(leader);
            leader.partsLeft = 1;
            // Round robin over the links that are up; a bio waits for a down link only if all are.
            Link link = links[nextLink];
            for (int i = 0; i < links.length && !(link.up && !link.broken); i++) {
                link = links[(nextLink + i) % links.length];
            }
            nextLink = (link.index + 1) % links.length;
            enqueue(link, leader);
        } else {
            leader.partsLeft = links.length;
            for (int i = 0; i < links.length; i++) {
                RemoteRequest part = leader.group[i];
                part.command = CMD_FLUSH;
                part.commandFlags = 0;
                part.offset = 0;
                part.length = 0;
                enqueue(links[i], part);
            }
        }
    }

    /** Fills the leader's command from its bio for the data phase. */
    private void dataCommand(RemoteRequest r) {
        Bio bio = r.bio;
        r.offset = bio.sector() << Bio.SECTOR_SHIFT;
        r.length = bio.sizeBytes();
        int flags = bio.hasFlag(BioFlags.FUA) && info.has(FLAG_SEND_FUA) ? CMD_FLAG_FUA : 0;
        switch (bio.op()) {
            case READ -> {
                r.command = CMD_READ;
                flags = 0;
            }
            case WRITE -> r.command = CMD_WRITE;
            case DISCARD -> r.command = CMD_TRIM;
            case WRITE_ZEROES -> {
                if (info.has(FLAG_SEND_WRITE_ZEROES)) {
                    r.command = CMD_WRITE_ZEROES;
                    flags |= bio.hasFlag(BioFlags.NOUNMAP) ? CMD_FLAG_NO_HOLE : 0;
                } else {
                    r.command = CMD_WRITE; // written from the sender's zero buffer
                }
            }
            case FLUSH -> throw new IllegalStateException(label + ": FLUSH has no data phase");
        }
        r.commandFlags = flags;
    }

    private void enqueue(Link link, RemoteRequest r) {
        r.connection = link.index;
        r.state = RemoteRequest.State.QUEUED;
        r.replyStatus = BioStatus.OK;
        r.repliedWhileSending = false;
        r.prev = link.queueTail;
        r.next = null;
        if (link.queueTail == null) {
            link.queueHead = r;
        } else {
            link.queueTail.next = r;
        }
        link.queueTail = r;
        link.wait.wakeAll();
    }

    /** Puts commands back at the front of the queue, in their order (a retry after a reconnect). */
    private void requeueFront(Link link, RemoteRequest first, RemoteRequest last) {
        last.next = link.queueHead;
        if (link.queueHead == null) {
            link.queueTail = last;
        } else {
            link.queueHead.prev = last;
        }
        first.prev = null;
        link.queueHead = first;
        for (RemoteRequest r = first; r != last.next; r = r.next) {
            r.state = RemoteRequest.State.QUEUED;
            r.replyStatus = BioStatus.OK;
            r.repliedWhileSending = false;
        }
    }

    private static RemoteRequest unlinkQueued(Link link, RemoteRequest r) {
        if (r.prev == null) {
            link.queueHead = r.next;
        } else {
            r.prev.next = r.next;
        }
        if (r.next == null) {
            link.queueTail = r.prev;
        } else {
            r.next.prev = r.prev;
        }
        r.next = null;
        r.prev = null;
        return r;
    }

    private static void linkSent(Link link, RemoteRequest r) {
        r.prev = link.sentTail;
        r.next = null;
        if (link.sentTail == null) {
            link.sentHead = r;
        } else {
            link.sentTail.next = r;
        }
        link.sentTail = r;
        link.sent++;
        if (isWriteCommand(r.command)) {
            link.writesSent++;
        }
    }

    private static void unlinkSent(Link link, RemoteRequest r) {
        if (r.prev == null) {
            link.sentHead = r.next;
        } else {
            r.prev.next = r.next;
        }
        if (r.next == null) {
            link.sentTail = r.prev;
        } else {
            r.next.prev = r.prev;
        }
        r.next = null;
        r.prev = null;
        link.sent--;
        if (isWriteCommand(r.command)) {
            link.writesSent--;
        }
    }

    private static boolean isWriteCommand(int command) {
        return command == CMD_WRITE || command == CMD_WRITE_ZEROES || command == CMD_TRIM;
    }

    /**
     * One command of a leader's phase is over with {@code status}. Starts the next phase, or, if the
     * bio is finished, links the leader into {@code done} for completion after the lock; returns
     * the new head of that list.
     */
    private RemoteRequest partDone(RemoteRequest part, BioStatus status, RemoteRequest done) {
        if (part == statusQuery) {
            part.state = RemoteRequest.State.FREE; // the answer (if any) is in the map already
            return done;
        }
        RemoteRequest leader = part.leader;
        part.state = RemoteRequest.State.QUEUED; // owned by its leader until released
        if (status.isError() && !leader.status.isError()) {
            leader.status = status;
        }
        if (--leader.partsLeft > 0) {
            return done;
        }
        if (part.command == CMD_FLUSH && writebackError && !leader.status.isError()) {
            writebackError = false;
            leader.status = BioStatus.IOERR;
            lastError = "writes acknowledged since the last flush were on a lost connection";
        }
        if (!leader.status.isError() && !closing) {
            RemoteRequest.Phase next = switch (leader.phase) {
                case PREFLUSH -> leader.bio.sizeBytes() > 0 ? RemoteRequest.Phase.DATA
                        : leader.postflush ? RemoteRequest.Phase.POSTFLUSH : RemoteRequest.Phase.DONE;
                case DATA -> leader.postflush ? RemoteRequest.Phase.POSTFLUSH : RemoteRequest.Phase.DONE;
                case POSTFLUSH, DONE -> RemoteRequest.Phase.DONE;
            };
            if (next != RemoteRequest.Phase.DONE) {
                leader.phase = next;
                startPhase(leader);
                return done;
            }
        }
        if (leader.status == BioStatus.OK && isWriteCommand(part.command)) {
            links[part.connection].dirty = true;
        }
        if (leader.bio.op().isWrite() && leader.bio.op() != BioOp.FLUSH && leader.bio.sizeBytes() > 0) {
            writeBiosInFlight--;
            if (allocation != null) {
                allocation.writeCompleted();
            }
        }
        leader.phase = RemoteRequest.Phase.DONE;
        leader.doneNext = done;
        return leader;
    }

    /** Completes the finished leaders of a list (after the lock is dropped) and frees their slots. */
    private void completeAll(RemoteRequest done) {
        while (done != null) {
            RemoteRequest leader = done;
            done = leader.doneNext;
            leader.doneNext = null;
            Bio bio = leader.bio;
            BioStatus status = leader.status;
            release(leader);
            completed.incrementAndGet();
            if (status.isError()) {
                fail(bio, status);
            } else {
                bio.endio();
            }
        }
    }

    // ---- sender --------------------------------------------------------------------------------

    /**
     * The sender of one link: (re)connects, then sends queued commands in order; a FLUSH waits until
     * the link's earlier writes are acknowledged. After a broken wire it waits for the receiver to
     * let go, settles the commands that were on the wire and reconnects.
     */
    private void runSender(Link link) {
        long backoff = BACKOFF_MIN_NANOS;
        while (true) {
            if (!hasWire(link)) {
                if (closing) {
                    failQueued(link);
                    return;
                }
                if (connect(link)) {
                    backoff = BACKOFF_MIN_NANOS;
                } else {
                    link.wait.waitEventTimeout(() -> closing, link, backoff, false);
                    backoff = Math.min(backoff * 2, BACKOFF_MAX_NANOS);
                }
                continue;
            }
            link.wait.waitEventTimeout(() -> sendable(link) || link.broken || closing, link, -1, true);
            RemoteRequest r = null;
            lock.lock();
            try {
                if (!link.broken && !closing && sendable(link)) {
                    r = unlinkQueued(link, link.queueHead);
                    r.state = RemoteRequest.State.SENDING;
                    if (r == statusQuery) {
                        r.queryEpoch = allocation.epoch();
                        r.queryClean = writeBiosInFlight == 0;
                    }
                    linkSent(link, r);
                }
            } finally {
                lock.unlock();
            }
            if (r == null) {
                if (link.broken || closing) {
                    settle(link);
                }
                continue;
            }
            send(link, r);
        }
    }

    /** Fails every command still queued on a link that will never send it (the device closes). */
    private void failQueued(Link link) {
        RemoteRequest done = null;
        lock.lock();
        try {
            for (RemoteRequest r = link.queueHead; r != null; ) {
                RemoteRequest next = r.next;
                unlinkQueued(link, r);
                done = partDone(r, BioStatus.IOERR, done);
                r = next;
            }
        } finally {
            lock.unlock();
        }
        completeAll(done);
    }

    private boolean hasWire(Link link) {
        lock.lock();
        try {
            return link.wire != null;
        } finally {
            lock.unlock();
        }
    }

    /** Whether the head of the link's queue may go now (a FLUSH only once earlier writes are acknowledged). */
    private boolean sendable(Link link) {
        RemoteRequest head = link.queueHead;
        return head != null && (head.command != CMD_FLUSH || link.writesSent == 0);
    }

    /** Writes one command (and a WRITE's payload) on the wire; a failure breaks the link. */
    private void send(Link link, RemoteRequest r) {
        NbdTransport.Wire wire = link.wire;
        ByteBuffer h = link.header.clear();
        h.putInt(REQUEST_MAGIC).putShort((short) r.commandFlags).putShort((short) r.command).putLong(r.cookie())
                .putLong(r.offset).putInt(r.length).flip();
        try {
            if (r.command == CMD_WRITE && r.bio.op() == BioOp.WRITE) {
                link.sendViews[0] = h;
                int count = SegmentViews.fill(link.sendIter.reset(r.bio), link.sendViews, 1);
                WireBytes.writeFully(wire, link.sendViews, count);
                java.util.Arrays.fill(link.sendViews, 0, count, null);
            } else if (r.command == CMD_WRITE) {
                WireBytes.writeFully(wire, h);
                for (int left = r.length; left > 0; ) {
                    ByteBuffer z = link.zeros.clear().limit(Math.min(ZERO_BYTES, left));
                    WireBytes.writeFully(wire, z);
                    left -= z.limit();
                }
            } else {
                WireBytes.writeFully(wire, h);
            }
        } catch (IOException e) {
            breakLink(link, "send failed: " + e.getMessage());
            return; // the command stays on the sent list; settle decides its fate
        }
        RemoteRequest done = null;
        lock.lock();
        try {
            if (r.state == RemoteRequest.State.SENDING) {
                if (r.repliedWhileSending) {
                    unlinkSent(link, r);
                    done = partDone(r, r.replyStatus, null);
                } else {
                    r.state = RemoteRequest.State.SENT;
                }
            }
        } finally {
            lock.unlock();
        }
        completeAll(done);
    }

    /**
     * After a broken wire: waits until the receiver has let go of it, then decides the fate of each
     * command that was on it (resend, or EIO for writes of unknown outcome and commands past their
     * deadline or of a closing device) and drops the wire.
     */
    private void settle(Link link) {
        link.wait.waitEventTimeout(() -> receiverDone(link), link, -1, false);
        RemoteRequest done = null;
        NbdTransport.Wire old;
        lock.lock();
        try {
            long now = kernel().scheduler().nanoTime();
            RemoteRequest retryFirst = null;
            RemoteRequest retryLast = null;
            for (RemoteRequest r = link.sentHead; r != null; ) {
                RemoteRequest next = r.next;
                unlinkSent(link, r);
                boolean unknownWrite = isWriteCommand(r.command) && !r.repliedWhileSending;
                if (closing || unknownWrite || now - r.leader.deadlineNanos >= 0 || r.repliedWhileSending) {
                    BioStatus status = r.repliedWhileSending ? r.replyStatus : BioStatus.IOERR;
                    if (status == BioStatus.IOERR && unknownWrite) {
                        lastError = "a write in flight on a lost connection";
                    }
                    done = partDone(r, status, done);
                } else {
                    r.prev = retryLast;
                    r.next = null;
                    if (retryLast == null) {
                        retryFirst = r;
                    } else {
                        retryLast.next = r;
                    }
                    retryLast = r;
                }
                r = next;
            }
            if (retryFirst != null) {
                requeueFront(link, retryFirst, retryLast);
            }
            if (closing) {
                for (RemoteRequest r = link.queueHead; r != null; ) {
                    RemoteRequest next = r.next;
                    unlinkQueued(link, r);
                    done = partDone(r, BioStatus.IOERR, done);
                    r = next;
                }
            }
            if (link.dirty) {
                writebackError = true;
                link.dirty = false;
            }
            if (link.sent != 0 || link.writesSent != 0) {
                throw new IllegalStateException(link + ": " + link.sent + " commands, " + link.writesSent
                        + " writes still counted on a settled wire");
            }
            old = link.wire;
            link.wire = null;
            link.broken = false;
            if (link.up) {
                link.up = false;
                if (--linksUp == 0) {
                    allDownSinceNanos = now;
                }
            }
        } finally {
            lock.unlock();
        }
        if (old != null) {
            old.close();
        }
        completeAll(done);
    }

    private boolean receiverDone(Link link) {
        lock.lock();
        try {
            return link.receiverGeneration == link.wireGeneration;
        } finally {
            lock.unlock();
        }
    }

    /** Cuts the link's wire (from any task or timer; never blocks) so both its tasks see it fail. */
    private void breakLink(Link link, String reason) {
        NbdTransport.Wire wire;
        lock.lock();
        try {
            if (link.broken || link.wire == null) {
                return;
            }
            link.broken = true;
            wire = link.wire;
            lastError = reason;
        } finally {
            lock.unlock();
        }
        wire.cut();
        link.wait.wakeAll();
        if (!closing) {
            options.log().accept(label + ": connection " + link.index + " lost: " + reason);
        }
    }

    /** One connect and handshake attempt (bounded by the timeout); true if the link is up again. */
    private boolean connect(Link link) {
        NbdTransport.Wire wire;
        try {
            wire = options.transport().connect(options.timeoutNanos());
        } catch (IOException | RuntimeException e) {
            lastErrorOf("connect failed: " + e.getMessage());
            return false;
        }
        lock.lock();
        try {
            link.connecting = wire;
            if (closing) {
                wire.cut();
            }
        } finally {
            lock.unlock();
        }
        Timer cutter = kernel().scheduler().addTimer(options.timeoutNanos(), label + " handshake", wire::cut);
        ExportInfo again;
        try {
            ClientHandshake.Negotiated n = ClientHandshake.negotiate(wire, options.uri(), options.tls(),
                    name() + "/" + link.index);
            wire = n.wire(); // TLS over the plain one for nbds; cutting it cuts the plain one
            again = n.info();
        } catch (IOException | RuntimeException e) {
            String why = handshakeFailure(e, !cutter.cancel(), options.timeoutNanos());
            wire.cut();
            wire.close();
            if (lastErrorOf("handshake failed: " + why)) {
                options.log().accept(label + ": connection " + link.index + " handshake failed: " + why + "; retrying");
            }
            return false;
        } finally {
            cutter.cancel();
            lock.lock();
            try {
                link.connecting = null;
            } finally {
                lock.unlock();
            }
        }
        if (again.sizeBytes() != info.sizeBytes() || again.transmissionFlags() != info.transmissionFlags()
                || again.structuredReplies() != info.structuredReplies()) {
            wire.cut();
            wire.close();
            lastErrorOf("the export changed: was " + info.describe() + ", now " + again.describe()
                    + (again.transmissionFlags() != info.transmissionFlags() ? String.format(
                            " (transmission flags 0x%04x, now 0x%04x)", info.transmissionFlags(), again.transmissionFlags())
                            : ""));
            return false;
        }
        boolean wasFailed;
        lock.lock();
        try {
            if (closing) {
                wire.cut();
                wire.close();
                return false;
            }
            link.wire = wire;
            link.wireGeneration++;
            link.up = true;
            linksUp++;
            wasFailed = failed;
            failed = false;
            if (allocation != null) {
                // What the map says was said by the server before this connection: it may be
                // another server now (same size and flags), or the export changed meanwhile.
                allocation.invalidate(0, capacityBytes());
            }
        } finally {
            lock.unlock();
        }
        reconnects.incrementAndGet();
        link.wait.wakeAll();
        upWait.wakeAll();
        options.log().accept(label + ": connection " + link.index + " up" + (wasFailed ? "; device no longer failed" : ""));
        return true;
    }

    /** Records the last error; true if it differs from the one before (worth a log line). */
    private boolean lastErrorOf(String message) {
        lock.lock();
        try {
            boolean changed = !message.equals(lastError);
            lastError = message;
            return changed;
        } finally {
            lock.unlock();
        }
    }

    // ---- receiver ------------------------------------------------------------------------------

    /** The receiver of one link: reads replies from each wire the sender brings up until it fails. */
    private void runReceiver(Link link) {
        long seen = 0;
        while (true) {
            final long last = seen;
            link.wait.waitEventTimeout(() -> closing || newWire(link, last), link, -1, true);
            NbdTransport.Wire wire;
            lock.lock();
            try {
                if (link.wire == null || link.wireGeneration == last) {
                    link.receiverGeneration = link.wireGeneration;
                    if (closing) {
                        return;
                    }
                    continue;
                }
                wire = link.wire;
                seen = link.wireGeneration;
            } finally {
                lock.unlock();
            }
            try {
                while (true) {
                    receiveOne(link, wire);
                }
            } catch (IOException | ProtocolException e) {
                breakLink(link, e instanceof ProtocolException ? "protocol error: " + e.getMessage()
                        : "receive failed: " + e.getMessage());
            }
            lock.lock();
            try {
                link.receiverGeneration = seen;
            } finally {
                lock.unlock();
            }
            link.wait.wakeAll();
        }
    }

    private boolean newWire(Link link, long seen) {
        lock.lock();
        try {
            return link.wire != null && link.wireGeneration != seen;
        } finally {
            lock.unlock();
        }
    }

    /** A reply that does not fit the protocol or the command it answers; the link is cut. */
    private static final class ProtocolException extends Exception {
        ProtocolException(String message) {
            super(message, null, false, false);
        }
    }

    /** Reads one reply (simple) or one chunk (structured) and applies it. */
    private void receiveOne(Link link, NbdTransport.Wire wire) throws IOException, ProtocolException {
        ByteBuffer h = link.replyHeader.clear().limit(4);
        WireBytes.readFully(wire, h);
        int magic = h.getInt(0);
        if (magic == SIMPLE_REPLY_MAGIC) {
            h.limit(SIMPLE_REPLY_BYTES);
            WireBytes.readFully(wire, h);
            int error = h.getInt(4);
            RemoteRequest r = find(link, h.getLong(8));
            BioStatus status = error == 0 ? BioStatus.OK : BioStatus.fromErrno(error);
            if (r.command == CMD_READ && error == 0) {
                if (info.structuredReplies()) {
                    throw new ProtocolException("simple reply with data to a READ after structured replies were agreed");
                }
                readInto(link, wire, r, 0, r.length);
            }
            replyDone(link, r, status);
            return;
        }
        if (magic != STRUCTURED_REPLY_MAGIC || !info.structuredReplies()) {
            throw new ProtocolException(String.format("reply magic 0x%08x", magic));
        }
        h.limit(STRUCTURED_HEADER_BYTES);
        WireBytes.readFully(wire, h);
        int flags = Short.toUnsignedInt(h.getShort(4));
        int type = Short.toUnsignedInt(h.getShort(6));
        RemoteRequest r = find(link, h.getLong(8));
        long length = Integer.toUnsignedLong(h.getInt(16));
        switch (type) {
            case REPLY_TYPE_NONE -> {
                if (length != 0) {
                    throw new ProtocolException("NONE chunk of " + length + " bytes");
                }
            }
            case REPLY_TYPE_OFFSET_DATA -> {
                if (r.command != CMD_READ || length < 8) {
                    throw new ProtocolException("OFFSET_DATA of " + length + " bytes to " + commandName(r.command));
                }
                long at = readLong(link, wire) - r.offset;
                long n = length - 8;
                checkRange(r, at, n, "OFFSET_DATA");
                readInto(link, wire, r, (int) at, (int) n);
            }
            case REPLY_TYPE_OFFSET_HOLE -> {
                if (r.command != CMD_READ || length != 12) {
                    throw new ProtocolException("OFFSET_HOLE of " + length + " bytes to " + commandName(r.command));
                }
                ByteBuffer s = link.scratch.clear().limit(12);
                WireBytes.readFully(wire, s);
                long at = s.getLong(0) - r.offset;
                long n = Integer.toUnsignedLong(s.getInt(8));
                checkRange(r, at, n, "OFFSET_HOLE");
                zeroIn(link, r, (int) at, (int) n);
            }
            case REPLY_TYPE_ERROR, REPLY_TYPE_ERROR_OFFSET -> {
                if (length < 6 || length > SCRATCH_BYTES) {
                    throw new ProtocolException("error chunk of " + length + " bytes");
                }
                ByteBuffer s = link.scratch.clear().limit((int) length);
                WireBytes.readFully(wire, s);
                int error = s.getInt(0);
                BioStatus status = error == 0 ? BioStatus.IOERR : BioStatus.fromErrno(error);
                if (!r.replyStatus.isError()) {
                    r.replyStatus = status;
                }
            }
            case REPLY_TYPE_BLOCK_STATUS -> {
                if (r != statusQuery || length < 4 || (length - 4) % 8 != 0) {
                    throw new ProtocolException("BLOCK_STATUS chunk of " + length + " bytes to " + commandName(r.command));
                }
                receiveExtents(link, wire, r, length);
            }
            default -> {
                // Unknown types: not asked for by this client; an unknown error
                // type still makes the command fail, as the spec says.
                WireBytes.skip(wire, link.scratch, length);
                if ((type & 0x8000) != 0 && !r.replyStatus.isError()) {
                    r.replyStatus = BioStatus.IOERR;
                }
            }
        }
        if ((flags & REPLY_FLAG_DONE) != 0) {
            replyDone(link, r, r.replyStatus);
        }
    }

    /**
     * Reads a BLOCK_STATUS chunk's extents through the scratch buffer, a piece at a time, and applies
     * each piece to the allocation map if no write moved its epoch since the query was sent.
     */
    private void receiveExtents(Link link, NbdTransport.Wire wire, RemoteRequest r, long length) throws IOException {
        ByteBuffer s = link.scratch.clear().limit(4);
        WireBytes.readFully(wire, s);
        boolean ours = Integer.toUnsignedLong(s.getInt(0)) == info.allocationContextId();
        lock.lock();
        try {
            allocation.beginApply(r.offset);
        } finally {
            lock.unlock();
        }
        for (long left = length - 4; left > 0; ) {
            int piece = (int) Math.min(left, SCRATCH_BYTES / 8 * 8);
            s.clear().limit(piece);
            WireBytes.readFully(wire, s);
            left -= piece;
            lock.lock();
            try {
                if (!ours || !r.queryClean || allocation.epoch() != r.queryEpoch) {
                    continue; // a write raced with the query: the reply may be older than it
                }
                for (int at = 0; at < piece; at += 8) {
                    long extent = Integer.toUnsignedLong(s.getInt(at));
                    allocation.applyExtent(extent, (s.getInt(at + 4) & STATE_HOLE) != 0);
                }
            } finally {
                lock.unlock();
            }
        }
    }

    /**
     * Queues a BLOCK_STATUS query from {@code offset} on the query slot, if it is free and a link is
     * up (under lock; never waits). Covers up to 1 GiB; the server may answer less.
     */
    private void queueStatusQuery(long offset) {
        if (allocation == null || statusQuery.state != RemoteRequest.State.FREE || closing || failed) {
            return;
        }
        Link up = null;
        for (Link link : links) {
            if (link.up && !link.broken) {
                up = link;
                break;
            }
        }
        if (up == null) {
            return;
        }
        statusQuery.generation++;
        statusQuery.command = CMD_BLOCK_STATUS;
        statusQuery.commandFlags = 0;
        statusQuery.offset = offset;
        statusQuery.length = (int) Math.min(capacityBytes() - offset, 1L << 30);
        statusQuery.deadlineNanos = kernel().scheduler().nanoTime() + options.timeoutNanos();
        enqueue(up, statusQuery);
    }

    /** Whether the export offered {@code base:allocation}: then holes come from the server. */
    @Override
    public boolean knowsAllocation() {
        return allocation != null;
    }

    /**
     * The run at {@code sector} from what BLOCK_STATUS replies said (see {@link AllocationMap});
     * never asks the server itself: an unknown range answers "allocated" and queues a query. While
     * no connection is up (as whenever the device has failed) every range answers "allocated", so
     * that a READ goes to the device and waits for it or fails, rather than being answered with
     * zeros from a map the next server may not share.
     */
    @Override
    public long allocatedExtent(long sector, long maxSectors) {
        if (allocation == null) {
            return super.allocatedExtent(sector, maxSectors);
        }
        if (sector < 0 || maxSectors <= 0 || sector >= capacitySectors()) {
            throw new IllegalArgumentException(label + ": extent query at " + sector + " for " + maxSectors
                    + " sectors outside capacity " + capacitySectors());
        }
        lock.lock();
        try {
            if (linksUp == 0) {
                return super.allocatedExtent(sector, maxSectors);
            }
            long run = allocation.extent(sector << Bio.SECTOR_SHIFT,
                    Math.min(maxSectors, capacitySectors() - sector) << Bio.SECTOR_SHIFT);
            long miss = allocation.takeMiss();
            if (miss >= 0) {
                queueStatusQuery(miss);
            }
            long sectors = Math.abs(run) >>> Bio.SECTOR_SHIFT;
            if (sectors == 0) {
                throw new IllegalStateException(label + ": empty extent at sector " + sector);
            }
            return run < 0 ? -sectors : sectors;
        } finally {
            lock.unlock();
        }
    }

    private long readLong(Link link, NbdTransport.Wire wire) throws IOException {
        ByteBuffer s = link.scratch.clear().limit(8);
        WireBytes.readFully(wire, s);
        return s.getLong(0);
    }

    private static void checkRange(RemoteRequest r, long at, long n, String what) throws ProtocolException {
        if (at < 0 || n < 0 || at + n > r.length) {
            throw new ProtocolException(what + " at " + (r.offset + at) + " for " + n + " bytes is outside the READ at "
                    + r.offset + " for " + r.length);
        }
    }

    /** The command a cookie names: it must be on this link's wire. */
    private RemoteRequest find(Link link, long cookie) throws ProtocolException {
        int index = (int) cookie;
        if (index < 0 || index >= slots.length) {
            throw new ProtocolException("reply for unknown cookie " + Long.toHexString(cookie));
        }
        RemoteRequest r = slots[index];
        lock.lock();
        try {
            boolean onWire = r.state == RemoteRequest.State.SENT || r.state == RemoteRequest.State.SENDING;
            if (!onWire || r.cookie() != cookie || r.connection != link.index) {
                throw new ProtocolException("reply for cookie " + Long.toHexString(cookie) + ", which is not in flight");
            }
        } finally {
            lock.unlock();
        }
        return r;
    }

    /** The reply to {@code r} is complete. */
    private void replyDone(Link link, RemoteRequest r, BioStatus status) {
        RemoteRequest done = null;
        lock.lock();
        try {
            if (r.state == RemoteRequest.State.SENDING) {
                r.repliedWhileSending = true;
                r.replyStatus = status;
                return;
            }
            unlinkSent(link, r);
            if (r.command == CMD_FLUSH && status == BioStatus.OK) {
                link.dirty = false;
            }
            done = partDone(r, status, null);
        } finally {
            lock.unlock();
        }
        completeAll(done);
        link.wait.wakeAll(); // a FLUSH may wait for this write
    }

    /** Reads {@code n} payload bytes straight into the bio's pages at {@code at} bytes into the command. */
    private void readInto(Link link, NbdTransport.Wire wire, RemoteRequest r, int at, int n) throws IOException {
        int count = 0;
        int end = at + n;
        for (BioIter it = link.receiveIter.reset(r.bio); it.next(); ) {
            int segStart = it.bioOffset();
            int segEnd = segStart + it.length();
            int from = Math.max(segStart, at);
            int to = Math.min(segEnd, end);
            if (from < to) {
                link.receiveViews[count++] = it.page().slice(it.offset() + (from - segStart), to - from);
            }
        }
        WireBytes.readFully(wire, link.receiveViews, count);
        java.util.Arrays.fill(link.receiveViews, 0, count, null);
    }

    /** Zeros {@code n} bytes of the bio's pages at {@code at} (a hole chunk). */
    private void zeroIn(Link link, RemoteRequest r, int at, int n) {
        int end = at + n;
        for (BioIter it = link.receiveIter.reset(r.bio); it.next(); ) {
            int segStart = it.bioOffset();
            int from = Math.max(segStart, at);
            int to = Math.min(segStart + it.length(), end);
            if (from < to) {
                it.page().zero(it.offset() + (from - segStart), to - from);
            }
        }
    }

    // ---- watchdog ------------------------------------------------------------------------------

    private void armWatchdog() {
        lock.lock();
        try {
            if (!closing) {
                watchdog = kernel().scheduler().addTimer(tickNanos, label + " watchdog", this::tick);
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * The timer: fails queued commands past their deadline, cuts links whose oldest command on the
     * wire is past it (the settle after the cut fails it), and fails the device after the timeout
     * with no connection. Never blocks.
     */
    private void tick() {
        RemoteRequest done = null;
        boolean newlyFailed = false;
        lock.lock();
        try {
            long now = kernel().scheduler().nanoTime();
            if (linksUp == 0 && !failed && now - allDownSinceNanos >= options.timeoutNanos()) {
                failed = true;
                newlyFailed = true;
                // A pending write-back error stays: the first flush after a reconnect still reports
                // the loss. An owner that resyncs the device (a mirror's recover) takes it with the
                // flush its rebuild opens with.
            }
            for (Link link : links) {
                for (RemoteRequest r = link.queueHead; r != null; ) {
                    RemoteRequest next = r.next;
                    if (failed || now - r.leader.deadlineNanos >= 0) {
                        unlinkQueued(link, r);
                        timeouts.incrementAndGet();
                        done = partDone(r, BioStatus.IOERR, done);
                    }
                    r = next;
                }
            }
        } finally {
            lock.unlock();
        }
        for (Link link : links) {
            RemoteRequest oldest = oldestSent(link);
            if (oldest != null) {
                timeouts.incrementAndGet();
                breakLink(link, "no reply within the timeout to " + commandName(oldest.command) + " at " + oldest.offset);
            }
        }
        if (newlyFailed) {
            options.log().accept(label + ": failed: no connection for " + options.timeoutNanos() / 1_000_000
                    + " ms; I/O fails with EIO until it reconnects (" + lastError + ")");
            slotWait.wakeAll();
        }
        completeAll(done);
        armWatchdog();
    }

    /** A command on the link's wire past its deadline, or null. */
    private RemoteRequest oldestSent(Link link) {
        lock.lock();
        try {
            long now = kernel().scheduler().nanoTime();
            for (RemoteRequest r = link.sentHead; r != null; r = r.next) {
                if (now - r.leader.deadlineNanos >= 0) {
                    return r;
                }
            }
            return null;
        } finally {
            lock.unlock();
        }
    }

    // ---- state ---------------------------------------------------------------------------------

    /** What the handshake said about the export. */
    public ExportInfo exportInfo() {
        return info;
    }

    /** How many connections the device uses. */
    public int connections() {
        return links.length;
    }

    /** How many of them are up now. */
    public int connectionsUp() {
        lock.lock();
        try {
            return linksUp;
        } finally {
            lock.unlock();
        }
    }

    /** Whether the device has been without a connection for its timeout (I/O fails with EIO). */
    public boolean isFailed() {
        return failed;
    }

    /** Reconnections since it opened. */
    public long reconnects() {
        return reconnects.get();
    }

    /** Bios completed (with any status) since it opened. */
    public long completedBios() {
        return completed.get();
    }

    /**
     * Waits until every connection is up and the device is not failed, or the timeout passes;
     * returns whether it is. For owners that re-add a recovered device (and for tests).
     */
    public boolean awaitConnected(long timeoutNanos) {
        return upWait.waitEventTimeout(() -> connectionsUp() == links.length && !failed, this, timeoutNanos, false);
    }

    /** Bios failed with EIO. */
    public long ioErrors() {
        return ioErrors.get();
    }

    /** Commands in flight or queued: slots taken. */
    public int inFlight() {
        return slotCount - freeCount;
    }

    @Override
    public String describeState() {
        lock.lock();
        try {
            return label + ": " + (failed ? "FAILED" : closing ? "closing" : "ok") + ", " + linksUp + "/" + links.length
                    + " connections up, " + (slotCount - freeCount) + "/" + slotCount + " slots in use, "
                    + reconnects.get() + " reconnects, " + timeouts.get() + " timeouts, " + ioErrors.get() + " EIO"
                    + (lastError.isEmpty() ? "" : ", last error: " + lastError);
        } finally {
            lock.unlock();
        }
    }

    /**
     * Stops the device: cuts every wire, fails what is queued or in flight with EIO (a closing
     * device has nobody left to wait for it), and joins the tasks. Every wait has an end: the wires
     * are cut, and connect attempts are bounded by the timeout.
     */
    @Override
    public void close() {
        if (isClosed()) {
            return;
        }
        Timer timer;
        lock.lock();
        try {
            closing = true;
            timer = watchdog;
            watchdog = null;
        } finally {
            lock.unlock();
        }
        if (timer != null) {
            timer.cancel();
        }
        slotWait.wakeAll();
        for (Link link : links) {
            NbdTransport.Wire connecting;
            lock.lock();
            try {
                connecting = link.connecting;
            } finally {
                lock.unlock();
            }
            if (connecting != null) {
                connecting.cut();
            }
            breakLink(link, "device closing");
            link.wait.wakeAll();
        }
        for (Link link : links) {
            if (link.sender != null) {
                kernel().scheduler().join(link.sender);
            }
            if (link.receiver != null) {
                kernel().scheduler().join(link.receiver);
            }
            NbdTransport.Wire wire = link.wire;
            link.wire = null;
            if (wire != null) {
                wire.close();
            }
        }
        super.close();
    }
}
