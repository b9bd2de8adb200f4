package io.blkstack.nbd;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioState;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Plug;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Page;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.function.BooleanSupplier;

/**
 * One client connection: a reader task (handshake, then requests) and a writer task (replies),
 * over a {@link NbdTransport} (the client's socket for {@code serve}, an in-process pipe under the
 * checker). This class owns the connection's life; the work is done by its parts:
 *
 * <ul>
 *   <li>{@link RequestInput}: request headers and payloads from the transport;
 *   <li>{@link RequestHandler}: validation and the payload-less commands; {@link ReadWriteCommands}:
 *       READ and WRITE in windows; {@link ReadModifyWrite}: writes that do not cover whole blocks;
 *   <li>{@link RequestBios}: the payload budget, and the bios and pages the reader submits;
 *   <li>{@link RequestSlots}: the in-flight bound and the reply ring between the two tasks;
 *   <li>{@link ReplyWriter}: the writer task, reply encoding and sending;
 *   <li>{@link ConnectionTimers}: the handshake, idle, reply and request timeouts.
 * </ul>
 *
 * <p><b>Data path.</b> The reader parses a request, checks it against the export and turns it
 * into bios from the server's bio set with pages from the kernel's arena, each submitted before
 * the next is allocated (seed 002, rule 1 of DESIGN.md section 1), after the request took its pages
 * from the server's payload budget. A bio's completion never touches the transport: the last
 * completion of a request puts it on the reply ring and wakes the writer (rule 2). The writer sends
 * the reply, frees the request's pages and bios, returns its budget and its slot.
 *
 * <p><b>Ending.</b> {@code NBD_CMD_DISC}, end of stream, a wrong magic or garbage, or a client
 * vanishing mid-payload stop the reader. A half-read bio is freed at once; bios already submitted
 * complete normally, the writer drains every reply (or discards them if the transport is broken),
 * then closes the transport. Only this connection is affected. The timers end a connection the
 * same way, by shutting the transport's input (handshake, idle) or closing it (replies not read).
 *
 * <p><b>Request timeout.</b> A request whose device does not give it back within the request
 * timeout (a target that lost a bio to a bug, a device that stalls) would leave its client waiting
 * for ever. The timer loses it ({@link RequestSlots#lose}, as a fault does: it keeps its pages and
 * bios, since the device may still use them) and cuts the connection, so the client sees the
 * stream end, as the kernel's NBD client does on its own timeout; the connection's other requests
 * finish or are lost in turn, and the connection ends. Other connections, on the same export too,
 * go on. A lost request that comes back later is freed then, even after the connection ended.
 */
final class NbdConnection {

    /** Bytes of payload one bio carries: one full vec array of pages. */
    static final int BIO_BYTES_MAX = Bio.VECS_MAX * Page.SIZE;
    /** Most extents one hole-aware READ reply uses; the rest of the range is sent as data. */
    static final int READ_EXTENTS_MAX = 64;
    /** Most descriptors one block-status reply carries (the spec allows fewer than asked). */
    static final int STATUS_EXTENTS_MAX = 1024;
    /**
     * The smallest READ offered by reference under {@code read-references=large}: measured with
     * bench/nbd-peers.sh, smaller READs went slower by reference (the copy they save costs less
     * than the send call and the hold), 1 MiB ones faster.
     */
    static final long READ_REFERENCE_LARGE_BYTES = 64 * 1024;
    /**
     * With inline replies, the reader sends what is ready right after it served a READ at least
     * this long, instead of when it next blocks on the socket: the payload it just read is still
     * in its core's cache, where the writer's copy on the other core read it cold (a client with
     * eight 1 MiB READs queued kept the reader from blocking, so the writer sent nearly every
     * reply). Smaller READs wait, so that their replies go out in one batch.
     */
    static final long SEND_AT_ONCE_BYTES = 64 * 1024;

    private final NbdServer server;
    private final Kernel kernel;
    private final NbdTransport transport;
    private final String name;
    private final String peer;
    final Completion done;
    /** Whether the server admitted this client only to refuse it (set under the server's lock). */
    boolean refused;

    private final ConnectionTimers timers;
    private final RequestSlots slots;
    /** What this connection holds of the server's payload budget (its fair share is checked there). */
    private final NbdServer.PayloadBudget.Share budgetShare = new NbdServer.PayloadBudget.Share();
    /** Set by the reader when it stops; the writer then drains and finishes. */
    volatile boolean readerDone;
    /** Set by the writer when the transport failed: replies are dropped, the reader stops. */
    volatile boolean broken;
    /** Set once the connection is ending (input shut, transport closed): a budget wait gives up. */
    private volatile boolean ending;
    private final BooleanSupplier endingCheck = () -> ending;
    /** The export this client opened (set once it is attached), for the "closed" log line; else null. */
    private volatile String openedExport;
    /** The statistics of the export this client opened: set by the reader before it reads the first request. */
    ExportStats exportStats;
    /**
     * The smallest READ offered by reference (DESIGN.md section 4): 0 under policy
     * {@code read-references=on}, {@link #READ_REFERENCE_LARGE_BYTES} under {@code large}, and
     * {@link Long#MAX_VALUE} (none) under {@code legacy} or on a transport that is not plain (TCP,
     * or in-process): never an encrypting one, whose bytes must pass through memory anyway.
     * Decided on the transport the connection enters transmission with (after a STARTTLS, the TLS
     * one), by the reader task, before it reads the first request.
     */
    volatile long readReferenceMinBytes = Long.MAX_VALUE;

    NbdConnection(NbdServer server, NbdTransport transport, String name, String peer, int inFlightMax,
            int maxPayloadMax) {
        this.server = server;
        this.kernel = server.kernel();
        this.transport = transport;
        this.name = name;
        this.peer = peer;
        this.done = new Completion(name + " done");
        this.timers = new ConnectionTimers(this, server, name);
        int biosMax = Math.max(4, (maxPayloadMax + BIO_BYTES_MAX - 1) / BIO_BYTES_MAX) + READ_EXTENTS_MAX / 2 + 1;
        this.slots = new RequestSlots(this, name, inFlightMax, biosMax, STATUS_EXTENTS_MAX);
    }

    String name() {
        return name;
    }

    NbdServer server() {
        return server;
    }

    /** The export this client opened, or null before it is attached. */
    String openedExport() {
        return openedExport;
    }

    Kernel kernel() {
        return kernel;
    }

    /** Requests taken and not yet released (for tests, state and the idle timer). */
    int inFlight() {
        return slots.inUse();
    }

    /**
     * Waits until at most {@code n} (0 or 1) requests of this connection are in flight, the replies
     * of all others sent: the reader, for a long READ with simple replies, which must have the wire
     * to itself ({@link ReadWriteCommands}).
     */
    void awaitInFlightAtMost(int n) {
        slots.awaitInUseAtMost(n);
    }

    /** The reader task's body: handshake, start the writer, read requests until the end. */
    void runReader() {
        runReader(null);
    }

    /**
     * The reader task's body. With {@code preset} the handshake is skipped and the connection
     * starts in transmission with what it says (an in-process client that needs no haggling);
     * otherwise the handshake decides.
     */
    void runReader(NbdHandshake.Negotiated preset) {
        boolean writerStarted = false;
        try {
            timers.startHandshake();
            NbdTransport io = transport;
            NbdHandshake.Negotiated negotiated = preset;
            if (preset == null) {
                NbdHandshake handshake = new NbdHandshake(transport, server.exports(), server.options().tls(), name,
                        server::log);
                negotiated = handshake.run();
                io = handshake.transport(); // TLS after STARTTLS
            }
            if (negotiated == null || !timers.enterTransmission()) {
                return;
            }
            ExportStats stats = server.attach(this, negotiated.export());
            if (stats == null) {
                return; // the export was removed while this client negotiated it
            }
            exportStats = stats; // before the writer starts, which reads it too
            openedExport = negotiated.export().name();
            server.logConnection(name + " (" + peer + "): opened export " + openedExport + " ("
                    + (negotiated.structuredReplies() ? "structured replies" : "simple replies")
                    + (negotiated.baseAllocation() ? ", base:allocation" : "")
                    + (negotiated.blockSizesKnown() ? ", block sizes" : "") + ")");
            readReferenceMinBytes = readReferenceMinBytes(kernel.policies().value(PolicySwitch.READ_REFERENCES), io);
            RequestInput input = new RequestInput(io, timers);
            RequestBios bios = new RequestBios(server, negotiated.export().device(), budgetShare, endingCheck);
            RequestHandler handler = new RequestHandler(this, input, bios, negotiated);
            ReplyWriter writer = new ReplyWriter(this, slots, timers, io, bios, negotiated.structuredReplies());
            Runnable sendReady = null;
            String inlinePolicy = kernel.policies().value(PolicySwitch.INLINE_REPLY);
            if (!inlinePolicy.equals(PolicySwitch.LEGACY) && writer.inlineEnabled()) {
                // This reader sends what is ready before it blocks (and after a large READ); its
                // own completions' replies wake the writer only if it left them (issue 16's noisy
                // neighbours).
                Runnable send = writer::sendFromReader;
                input.sendBeforeRead(send);
                slots.holdWakeupsOf(Task.current());
                if (inlinePolicy.equals("on")) {
                    sendReady = send;
                }
            }
            kernel.spawn(name + "-writer", TaskKind.USER, writer::run);
            writerStarted = true;
            // Plugged: the requests parsed from one read reach the device queues before their I/O
            // tasks are woken, and the plug is flushed before every read from the transport.
            Task self = Task.current();
            try (Task.NoioScope noio = self.noio(); Plug.Scope plugged = self.plug().start()) {
                readRequests(input, handler, sendReady);
            }
        } catch (java.net.ProtocolException e) {
            server.log(name + " (" + peer + "): disconnected: " + e.getMessage());
        } catch (IOException e) {
            // The client went away or broke the protocol: this connection ends, nothing else.
        } catch (RuntimeException e) {
            fault("while serving a request", e);
        } finally {
            timers.logTimeout(peer);
            if (writerStarted) {
                readerDone = true;
                slots.wakeWriter();
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
            timers.startHandshake();
            new NbdHandshake(transport, server.exports()).refuse(message);
        } catch (IOException e) {
            // the refused client went away or broke the protocol: nothing more to tell it
        } finally {
            timers.logTimeout(peer);
            finish();
        }
    }

    /**
     * Reads and dispatches requests until DISC, end of stream, garbage or an unskippable payload;
     * runs {@code sendReady} (unless null) after each READ of {@link #SEND_AT_ONCE_BYTES} or more.
     */
    private void readRequests(RequestInput input, RequestHandler handler, Runnable sendReady) throws IOException {
        while (true) {
            NbdRequest r = slots.take();
            if (r == null) {
                return; // the connection broke
            }
            boolean more;
            try {
                more = input.readHeader(r);
            } catch (IOException e) {
                slots.giveBack(r);
                throw e;
            } catch (RuntimeException e) {
                slots.giveBack(r); // a fault (here, or in the replies sent before the read); nothing submitted
                throw e;
            }
            if (!more) {
                slots.giveBack(r);
                return;
            }
            boolean largeRead = r.command == NbdProtocol.CMD_READ && r.length >= SEND_AT_ONCE_BYTES;
            boolean served;
            try {
                served = handler.serve(r);
            } catch (RuntimeException e) {
                slots.lose(r); // which of its bios are out is unknown: the writer must not wait for it
                throw e;
            }
            if (!served) {
                return;
            }
            if (largeRead && sendReady != null) {
                sendReady.run(); // r may be back in the free slots here: only what was read before serve is used
            }
        }
    }

    /** A request's {@link NbdRequest#timedSinceNanos} from now ({@link ConnectionTimers#requestStamp}). */
    long requestStamp() {
        return timers.requestStamp();
    }

    /** Whether a completed WRITE window goes back to the reader ({@link RequestSlots#windowToReader}). */
    boolean windowToReader(NbdRequest r) {
        return slots.windowToReader(r);
    }

    /** Loses the request the request timeout watches longest if it is past {@code cutoffNanos} ({@link RequestSlots#loseOverdue}). */
    NbdRequest loseOverdue(long cutoffNanos) {
        return slots.loseOverdue(cutoffNanos);
    }

    /** The request the request timeout watches longest, or null ({@link RequestSlots#oldestTimed}). */
    NbdRequest oldestTimed() {
        return slots.oldestTimed();
    }

    /**
     * The request timer lost {@code r} (not done within the request timeout) and marked the
     * connection broken ({@link RequestSlots#loseOverdue}): its transport is closed, so the client
     * sees the stream end, and a reader waiting for the window {@code r} was in goes on to find it
     * lost. Never blocks.
     */
    void requestTimedOut(NbdRequest r) {
        kernel.counters().get("nbd.request-timeouts").incrementAndGet();
        closeSocket();
        slots.wakeAll();
        r.windowSent.complete();
    }

    /** {@code r} and where its bios are, for a log line. */
    String describeRequest(NbdRequest r) {
        StringBuilder where = new StringBuilder();
        int bios = Math.min(r.bioCount, r.bios.length);
        for (int i = 0; i < bios; i++) {
            Bio bio = r.bios[i];
            if (bio != null && bio.state() != BioState.FREE) {
                where.append(where.isEmpty() ? "" : "; ").append(bio.describeHolder());
            }
        }
        return where.isEmpty() ? r.toString() : r + " [its bios: " + where + "]";
    }

    /** Whether the reader still owns {@code r} after a window ({@link RequestSlots#ownsWindow}). */
    boolean ownsWindow(NbdRequest r) {
        return slots.ownsWindow(r);
    }

    /** Whether {@code r} was lost to a fault ({@link RequestSlots#lose}). */
    boolean lost(NbdRequest r) {
        return slots.isLost(r);
    }

    /** Queues a finished request for the writer; called from completions, never blocks. */
    void replyReady(NbdRequest r) {
        slots.replyReady(r);
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

    // ---- ending --------------------------------------------------------------------------------

    /** Makes a blocked read return end of stream (server close, or the writer lost the transport). */
    void shutdownInput() {
        endBudgetWait();
        try {
            transport.shutdownInput();
        } catch (IOException e) {
            // already closed
        }
    }

    /** Ends writes on the transport (the handshake timer, for a client that stopped reading). */
    void shutdownOutput() {
        try {
            transport.shutdownOutput();
        } catch (IOException e) {
            // already closed
        }
    }

    /**
     * Ends this connection after a fault of the code (a target's or the server's RuntimeException)
     * on one of its tasks, which has already {@link RequestSlots#lose lost} the request it held: the
     * fault is reported like a task's crash and logged, the connection is marked broken (replies are
     * dropped, the reader takes no more requests) and its transport closed, so its client sees the
     * stream end instead of waiting for a reply that may never come; the writer ends once every
     * request still in flight is lost or done. Other connections go on. Never blocks.
     */
    void fault(String where, RuntimeException e) {
        kernel.reportFault(Task.currentOrNull(), e);
        server.log(name + " (" + peer + "): ended by a fault " + where + ": " + e);
        broken = true;
        closeSocket();
        slots.wakeAll();
    }

    /** Closes the transport now (a server past its drain deadline); the tasks see it and end as they can. */
    void closeSocket() {
        endBudgetWait();
        try {
            transport.close();
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
        sb.append("connection ").append(name).append(": ").append(slots.inUse()).append(" request(s) in flight");
        if (slots.lost() > 0) {
            sb.append(" (").append(slots.lost()).append(" lost to a fault or the request timeout)");
        }
        int shown = 0;
        for (NbdRequest r : slots.requests()) {
            if (r == null || r.remaining.get() <= 0) {
                continue; // a slot never used yet has no request
            }
            if (shown++ == 8) {
                sb.append(" ...");
                break;
            }
            sb.append(shown == 1 ? ": " : ", ").append(describeRequest(r));
        }
        return sb.toString();
    }

    /** Stops the timers, closes the transport, leaves the server's table and signals the end. */
    void finish() {
        timers.stop();
        try {
            transport.close();
        } catch (IOException e) {
            // nothing left to do with it
        }
        // Logged here, not by the reader: the reader may have ended (a client that shut its output)
        // before the timer cut the writer. By now every request's budget is back.
        timers.logReplyTimeout(peer);
        if (slots.lost() > 0) {
            server.log(name + " (" + peer + "): " + slots.lost() + " request(s) lost to a fault or the request timeout"
                    + " keep " + slots.lostBudgetPages() + " page(s) of the payload budget and their bios until they"
                    + " come back");
        }
        String export = openedExport;
        if (export != null) {
            server.logConnection(name + " (" + peer + "): closed export " + export);
        }
        server.connectionEnded(this);
        done.completeAll();
    }

    @Override
    public String toString() {
        return "nbd connection " + name;
    }

    /** The smallest READ offered by reference under policy value {@code policy} on transport {@code io}. */
    private static long readReferenceMinBytes(String policy, NbdTransport io) {
        if (policy.equals(PolicySwitch.LEGACY) || !(io instanceof SocketTransport || InProcessClient.isServerEnd(io))) {
            return Long.MAX_VALUE;
        }
        return policy.equals("large") ? READ_REFERENCE_LARGE_BYTES : 0;
    }
}
