package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioIter;
import io.blkstack.bio.BioStatus;
import io.blkstack.bio.ReadReference;
import io.blkstack.block.SegmentViews;
import io.blkstack.block.TrackedRequests;
import io.blkstack.kernel.Mutex;
import io.blkstack.kernel.Task;
import io.blkstack.mem.Page;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.WritableByteChannel;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.BooleanSupplier;

/**
 * A connection's writer task: takes finished requests off the reply ring, encodes their replies
 * (simple, or structured chunks: data, holes, errors, block status) and writes them to the
 * transport, then frees each request's pages and bios, returns its budget and its slot.
 *
 * <p>Replies leave in completion order, not request order. Each wake-up takes every finished reply
 * (up to {@link #BATCH_MAX}) and sends them together, so a busy connection pays one gathering write
 * for many replies; a READ's data goes out straight from its pages (views, no copy).
 *
 * <p><b>Reply timeout.</b> The writer sends at most {@link #WRITE_CHUNK_BYTES} per write call and
 * notes the time after each ({@link ConnectionTimers}), so a client that reads slowly but steadily
 * moves a chunk within the timeout and is never cut, while one that never reads is.
 *
 * <p>If the transport fails, the writer marks the connection broken, stops the reader and keeps
 * draining completions without sending, so every request still returns its pages and budget.
 * When the reader has ended and every slot is back, the writer finishes the connection.
 */
final class ReplyWriter {

    /** Most finished replies the writer takes per wake-up. */
    static final int BATCH_MAX = 64;
    /** Most buffers (headers and page views) in one gathering write of replies. */
    static final int GATHER_MAX = 1024;
    /**
     * Most bytes the writer hands to one write call: the unit in which it notes progress for the
     * reply timeout, so a client must read at least this much (beyond what the socket buffers
     * hold) per timeout. Small against any sane timeout, and as large as the largest reply
     * payload a client gets without asking for block sizes (1 MiB), so such a reply costs one write
     * call (or one {@code transferTo}, which the JDK makes as three system calls: a failed
     * {@code copy_file_range}, {@code fstat}, {@code sendfile}); at 128 KiB it cost eight.
     */
    static final int WRITE_CHUNK_BYTES = 1024 * 1024;
    /** The copy buffer's size, for referenced READs on a transport that is not a socket (TLS). */
    private static final int COPY_BUFFER_BYTES = 128 * 1024;
    /** Bytes of one batched reply header (the larger of simple and structured, with its payload). */
    private static final int BATCHED_HEADER_BYTES = 32;
    /**
     * A structured READ reply of at least this much data goes out as two OFFSET_DATA chunks (see
     * {@link #gatherReply}); smaller ones as one.
     */
    static final long SPLIT_READ_MIN_BYTES = 64 * 1024;
    /** The data of the first of those two chunks. */
    static final int SPLIT_READ_LEAD_BYTES = 64;

    private final NbdConnection connection;
    private final RequestSlots slots;
    private final ConnectionTimers timers;
    private final NbdTransport transport;
    private final RequestBios bios;
    private final boolean structured;

    private final ByteBuffer replyHeader = ByteBuffer.allocateDirect(STRUCTURED_HEADER_BYTES + 4
            + 8 * NbdConnection.STATUS_EXTENTS_MAX);
    private final ByteBuffer[] gather = new ByteBuffer[GATHER_MAX];
    /** One buffer as a gather array, for {@link #writeReply}. */
    private final ByteBuffer[] gatherOne = new ByteBuffer[1];
    private final BioIter iter = new BioIter();
    private final Page[] pages = new Page[Bio.VECS_MAX];
    private final NbdRequest[] batch = new NbdRequest[BATCH_MAX];
    private final ByteBuffer[] replyHeaders = new ByteBuffer[BATCH_MAX];
    /** The second chunk's header of each batched reply that is split ({@link #gatherReply}). */
    private final ByteBuffer[] secondHeaders = new ByteBuffer[BATCH_MAX];
    private final BooleanSupplier hasWork;
    /**
     * Held by whoever sends on the transport: the writer for each batch, the reader for its
     * non-waiting send ({@link #sendFromReader}, which only tries it). Guards {@link #batch},
     * {@link #gather}, {@link #replyHeaders} and the hand-over.
     */
    private final Mutex sendLock = new Mutex("nbd reply send");
    /** Whether the reader sends ready replies itself ({@link #inlineEnabled}). */
    private boolean inline;
    /** A batch the reader popped and left to the writer: {@code batch[0..handedCount)}, ... */
    private volatile boolean handedOver;
    private int handedCount;
    /** ... with {@code gather[0..handedGather)} partly sent (0: nothing gathered, send it whole). */
    private int handedGather;
    /** The socket for sendfile, or null for a transport that is not one (copied through {@link #copyBuffer}). */
    private final WritableByteChannel socket;
    private ByteBuffer copyBuffer;
    /**
     * Kernel counter {@code nbd.read-reference-bytes}: READ payload bytes sent from file references,
     * counted as a send begins.
     */
    private final AtomicLong referencedBytes;
    /** Kernel counter {@code nbd.reader-replies}: replies the reader sent whole ({@link #sendFromReader}). */
    private final AtomicLong readerReplies;
    /** Kernel counter {@code nbd.reader-handovers}: batches the reader popped and left to the writer. */
    private final AtomicLong readerHandovers;

    ReplyWriter(NbdConnection connection, RequestSlots slots, ConnectionTimers timers, NbdTransport transport,
            RequestBios bios, boolean structured) {
        this.connection = connection;
        this.slots = slots;
        this.timers = timers;
        this.transport = transport;
        this.bios = bios;
        this.structured = structured;
        this.socket = transport instanceof SocketTransport st ? st.channel() : null;
        this.referencedBytes = connection.kernel().counters().get("nbd.read-reference-bytes");
        this.readerReplies = connection.kernel().counters().get("nbd.reader-replies");
        this.readerHandovers = connection.kernel().counters().get("nbd.reader-handovers");
        this.hasWork = () -> handedOver || slots.hasReplies() || (connection.readerDone && slots.settled());
        ByteBuffer headers = ByteBuffer.allocateDirect(2 * BATCH_MAX * BATCHED_HEADER_BYTES);
        for (int i = 0; i < BATCH_MAX; i++) {
            replyHeaders[i] = headers.slice(i * BATCHED_HEADER_BYTES, BATCHED_HEADER_BYTES);
            secondHeaders[i] = headers.slice((BATCH_MAX + i) * BATCHED_HEADER_BYTES, BATCHED_HEADER_BYTES);
        }
    }

    /** The writer task's body: send replies as requests finish; after the reader ends, drain and finish. */
    void run() {
        boolean faulted = false;
        try {
            timers.startReplyTimer();
            while (true) {
                slots.awaitWriterWork(hasWork, connection);
                int n;
                sendLock.lock();
                try {
                    if (handedOver) {
                        n = handedCount;
                        transmit(n, handedGather);
                        handedOver = false;
                    } else {
                        n = slots.popReplies(batch);
                        transmit(n, 0);
                    }
                } catch (RuntimeException e) {
                    // A fault outside a request's sending and freeing (which catch their own): the
                    // batch's requests left are lost, the connection ends, the writer drains the
                    // rest. A second such fault ends the writer (it would repeat for ever).
                    if (faulted) {
                        throw e;
                    }
                    faulted = true;
                    n = -1;
                    loseBatch();
                    connection.fault("in the writer", e);
                } finally {
                    sendLock.unlock();
                }
                if (n == 0 && connection.readerDone && slots.settled()) {
                    // Only lost requests are left (if any): whoever completes one later frees it.
                    slots.endReplies(this::releaseLate);
                    sendLock.lock();
                    try {
                        while ((n = slots.popReplies(batch)) > 0) {
                            releaseBatch(n); // those that came back before endReplies took effect
                        }
                    } finally {
                        sendLock.unlock();
                    }
                    return;
                }
            }
        } finally {
            connection.finish();
        }
    }

    /**
     * Sends the replies of {@code batch[0..n)} (the rest of {@code gather[0..gathered)} when the
     * reader gathered them and the socket took part), then frees what they held; the caller holds
     * the send lock. On a broken transport nothing is sent and everything is still freed.
     */
    private void transmit(int n, int gathered) {
        if (n == 0) {
            return;
        }
        if (!connection.broken) {
            try {
                timers.beginSending();
                if (gathered > 0) {
                    flushGather(gathered);
                } else {
                    sendBatch(n);
                }
                timers.noteActivity();
            } catch (IOException e) {
                transportFailed();
            } catch (RuntimeException e) {
                // A fault of this code mid-send: the stream may hold half a reply, so it ends here;
                // the batch is still freed below, without sending (the connection is broken now).
                connection.fault("while sending replies", e);
            } finally {
                timers.endSending();
            }
        }
        Arrays.fill(gather, 0, gathered, null);
        releaseBatch(n);
    }

    /**
     * After a fault in the writer's loop: the batch's requests not yet freed are lost (a window's
     * reader is let go on, to find its request lost), and nothing is left handed over.
     */
    private void loseBatch() {
        handedOver = false;
        Arrays.fill(gather, null);
        for (int i = 0; i < batch.length; i++) {
            NbdRequest r = batch[i];
            batch[i] = null;
            if (r != null) {
                slots.lose(r);
                if (!r.lastWindow) {
                    r.windowSent.complete();
                }
            }
        }
    }

    /** The transport failed: keep draining completions without sending, and stop the reader too. */
    private void transportFailed() {
        connection.broken = true;
        connection.shutdownInput();
    }

    /**
     * The reader, before it blocks on a read: sends the replies that are ready with a send that
     * never waits, if the writer is not sending (the send lock is free) and nothing handed over
     * is still pending. Whatever the socket does not take now, and any batch with a reply that
     * cannot go out in one gathering write (a hole chunk, block status, a multi-window or referenced
     * READ), is handed to the writer as it stands, so the reader never waits for the client to
     * read. A no-op unless {@link #inlineEnabled}.
     */
    void sendFromReader() {
        if (!inline || handedOver || connection.broken || !slots.hasReplies() || !sendLock.tryLock()) {
            return;
        }
        try {
            if (handedOver || connection.broken) {
                return; // looked at again under the lock: the writer may have failed the transport just now
            }
            int n = slots.popReplies(batch);
            if (n == 0) {
                return;
            }
            int used = 0;
            try {
                used = gatherAll(n);
                if (used >= 0 && sendNow(used)) {
                    timers.noteActivity();
                    readerReplies.addAndGet(n);
                    Arrays.fill(gather, 0, used, null);
                    releaseBatch(n);
                    return;
                }
            } catch (IOException e) {
                transportFailed(); // the writer frees the batch without sending
            } catch (RuntimeException | Error e) {
                Arrays.fill(gather, null); // a fault of this code: the writer still frees the batch
                handOver(n, 0);
                throw e;
            }
            // The socket did not take it all (or a reply needs the writer's path): the writer sends the rest.
            handOver(n, Math.max(used, 0));
        } finally {
            sendLock.unlock();
        }
    }

    /** Sends {@code gather[0..used)} without waiting; whether all of it went. */
    private boolean sendNow(int used) throws IOException {
        long bytes = 0;
        for (int i = 0; i < used; i++) {
            bytes += gather[i].remaining();
        }
        return transport.writeNow(gather, 0, used) == bytes;
    }

    /** Leaves {@code batch[0..n)} (and {@code gather[0..gathered)}, partly sent) to the writer; under the send lock. */
    private void handOver(int n, int gathered) {
        handedCount = n;
        handedGather = gathered;
        handedOver = true;
        readerHandovers.incrementAndGet();
        slots.wakeWriter();
    }

    /** Lets the reader send ready replies ({@link #sendFromReader}); true if the transport can. */
    boolean inlineEnabled() {
        inline = transport.enableWriteNow();
        return inline;
    }

    /** Frees what {@code batch[0..n)} held, returns the budget and slots of requests that are over. */
    private void releaseBatch(int n) {
        int budgetPages = 0;
        for (int i = 0; i < n; i++) {
            NbdRequest r = batch[i];
            batch[i] = null;
            budgetPages += release(r, pages, false);
        }
        bios.returnBudget(budgetPages);
    }

    /**
     * Frees what {@code r} held (its reply sent or dropped) and, if the request is over, gives its
     * slot back and returns its budget pages (0 otherwise: a window, whose request goes on). A
     * window of a lost request ends the request. {@code scratch} holds {@link Bio#VECS_MAX} pages.
     * A fault here loses the request and ends the connection ({@code late}: it has ended, so the
     * fault is only reported).
     */
    private int release(NbdRequest r, Page[] scratch, boolean late) {
        int budgetPages = 0;
        boolean window = !r.lastWindow;
        try {
            // Held READ bios complete now, after their payload left (or was dropped), then pages go.
            r.releaseReferences(connection.broken ? BioStatus.IOERR : BioStatus.OK);
            r.release(scratch);
            if (!window || (r.command == CMD_READ && r.errno() != 0) || connection.lost(r)) {
                // The request is over: its last window, a READ that failed in an earlier one, or a
                // lost request's window that came back after all (whose range it still tracks).
                TrackedRequests tracker = r.tracker;
                if (tracker != null) {
                    r.tracker = null;
                    tracker.end(r.tracked);
                }
                budgetPages = r.budgetPages;
                r.budgetPages = 0;
                r.finished(); // its reply is sent: the request's latency ends here
                slots.giveBack(r);
            }
        } catch (RuntimeException e) {
            // A fault of this code or of an end-io above a held READ bio: this request is lost
            // (it keeps what it held), the connection ends, and the rest of the batch is freed.
            slots.lose(r);
            if (late) {
                connection.kernel().reportFault(Task.currentOrNull(), e);
            } else {
                connection.fault("while freeing a reply", e);
            }
        }
        if (window) {
            r.windowSent.complete(); // the reader goes on with the next window (or sees the end)
        }
        return budgetPages;
    }

    /**
     * Frees a lost request that came back after the writer ended (see {@link RequestSlots#endReplies}),
     * on the task that completed it; rare, so it takes a scratch array of its own.
     */
    private void releaseLate(NbdRequest r) {
        bios.returnBudget(release(r, new Page[Bio.VECS_MAX], true));
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
            int buffers = gatherBuffers(r);
            if (buffers < 0) {
                used = flushGather(used);
                send(r);
                continue;
            }
            if (used + buffers > GATHER_MAX) {
                used = flushGather(used);
            }
            used = gatherReply(i, used);
        }
        flushGather(used);
    }

    /**
     * Gathers every reply of {@code batch[0..n)} into {@code gather}; the buffers used, or -1 (and
     * {@code gather} left clear) if one of them cannot be gathered or they do not fit one array.
     */
    private int gatherAll(int n) {
        int used = 0;
        for (int i = 0; i < n; i++) {
            int buffers = gatherBuffers(batch[i]);
            if (buffers < 0 || used + buffers > GATHER_MAX) {
                Arrays.fill(gather, 0, used, null);
                return -1;
            }
            used = gatherReply(i, used);
        }
        return used;
    }

    /**
     * The buffers a reply takes in a gathering write (its header and its data's page views), or -1
     * for a reply that goes out on its own: hole chunks, block status, a READ's window or trimmed
     * part, a READ held by reference (its file extents go out with transferTo, between headers),
     * one with more views than an array holds.
     */
    private int gatherBuffers(NbdRequest r) {
        int errno = r.errno();
        boolean read = r.command == CMD_READ && errno == 0;
        if (!read) {
            return r.lastWindow && (r.command != CMD_BLOCK_STATUS || errno != 0) ? 1 : -1;
        }
        boolean whole = r.lastWindow && !r.replyStarted && r.trimHead == 0 && r.trimTail == 0;
        if (!whole || (structured && (r.extentCount != 1 || r.extentHole[0])) || r.referencesArmed > 0) {
            return -1;
        }
        int buffers = splitsRead(r) ? 3 : 1;
        for (int b = 0; b < r.bioCount; b++) {
            buffers += r.bios[b].vecCount();
        }
        return buffers <= GATHER_MAX ? buffers : -1;
    }

    /** Whether a whole, gathered READ reply goes out as two chunks ({@link #gatherReply}). */
    private boolean splitsRead(NbdRequest r) {
        return structured && r.command == CMD_READ && r.errno() == 0 && r.extentBytes[0] >= SPLIT_READ_MIN_BYTES;
    }

    /**
     * Puts {@code batch[i]}'s reply header and data views into {@code gather} from {@code used}; the new fill.
     *
     * <p>A structured READ reply of {@link #SPLIT_READ_MIN_BYTES} or more is two OFFSET_DATA chunks
     * (the spec lets a server split a READ's data unless the client set DF, which this server does
     * not offer): the first {@link #SPLIT_READ_LEAD_BYTES} bytes, then the rest. The reason is the
     * copy into the socket. The kernel copies with {@code rep movsb}, which on this project's
     * development machine (AMD EPYC) runs about fifteen times slower when the destination is 1 to
     * 31 bytes past the source modulo 4 KiB. The data starts page-aligned in the arena, and the
     * socket's buffer commonly has it 28 bytes (one chunk header) past a page boundary: the whole
     * MiB crossed in the slow mode. After a second header the rest lands 56 bytes on, whatever the
     * lead's length, and only the 64-byte lead is copied slowly.
     */
    private int gatherReply(int i, int used) {
        NbdRequest r = batch[i];
        int errno = r.errno();
        boolean split = splitsRead(r);
        ByteBuffer h = replyHeaders[i].clear();
        if (structured && r.command == CMD_READ) {
            if (errno != 0) {
                chunkHeader(h, r, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 6);
                h.putInt(errno).putShort((short) 0);
            } else if (split) {
                dataChunkHeader(h, r, 0, r.offset, SPLIT_READ_LEAD_BYTES);
            } else {
                dataChunkHeader(h, r, REPLY_FLAG_DONE, r.offset, r.extentBytes[0]);
            }
        } else {
            h.putInt(SIMPLE_REPLY_MAGIC).putInt(errno).putLong(r.cookie);
        }
        gather[used++] = h.flip();
        if (r.command == CMD_READ && errno == 0) {
            int data = used;
            for (int b = 0; b < r.bioCount; b++) {
                iter.resetAll(r.bios[b]);
                used = SegmentViews.fill(iter, gather, used);
            }
            if (split) {
                used = insertSecondHeader(i, r, data, used);
            }
        }
        return used;
    }

    /**
     * Splits the data views {@code gather[data..used)} after {@link #SPLIT_READ_LEAD_BYTES} bytes
     * and puts the second chunk's header there; the new fill (two more: the header and the first
     * view's rest). {@link #gatherBuffers} counted them.
     */
    private int insertSecondHeader(int i, NbdRequest r, int data, int used) {
        int at = data;
        int lead = SPLIT_READ_LEAD_BYTES;
        while (gather[at].remaining() <= lead) {
            lead -= gather[at].remaining();
            at++;
        }
        // gather[at] holds the split point, lead bytes in: it becomes the lead's end and the rest's start.
        ByteBuffer view = gather[at];
        ByteBuffer rest = view.slice(view.position() + lead, view.remaining() - lead);
        view.limit(view.position() + lead);
        System.arraycopy(gather, at + 1, gather, at + 3, used - at - 1);
        ByteBuffer h = secondHeaders[i].clear();
        dataChunkHeader(h, r, REPLY_FLAG_DONE, r.offset + SPLIT_READ_LEAD_BYTES, r.extentBytes[0] - SPLIT_READ_LEAD_BYTES);
        gather[at + 1] = h.flip();
        gather[at + 2] = rest;
        return used + 2;
    }

    /** Writes {@code gather[0..used)} fully and clears it; returns 0 (the new fill). */
    private int flushGather(int used) throws IOException {
        if (used == 0) {
            return 0;
        }
        try {
            writeReplies(gather, used);
        } finally {
            Arrays.fill(gather, 0, used, null);
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

    private static void chunkHeader(ByteBuffer h, NbdRequest r, int flags, int type, int length) {
        h.putInt(STRUCTURED_REPLY_MAGIC).putShort((short) flags).putShort((short) type).putLong(r.cookie)
                .putInt(length);
    }

    /** The header of an OFFSET_DATA chunk of {@code bytes} of data at {@code offset}, its offset included. */
    private static void dataChunkHeader(ByteBuffer h, NbdRequest r, int flags, long offset, long bytes) {
        chunkHeader(h, r, flags, REPLY_TYPE_OFFSET_DATA, (int) (8 + bytes));
        h.putLong(offset);
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
                long skip = Math.max(0, from - position);
                long bytes = Math.max(0, to - from);
                if (bytes >= SPLIT_READ_MIN_BYTES) {
                    // Split as gatherReply splits a single-extent READ (see there): the lead, then the rest.
                    dataChunkHeader(h, r, 0, from, SPLIT_READ_LEAD_BYTES);
                    writeReply(h.flip());
                    sendData(r, bio, extentEnd - position, skip, SPLIT_READ_LEAD_BYTES);
                    h.clear();
                    skip += SPLIT_READ_LEAD_BYTES;
                    bytes -= SPLIT_READ_LEAD_BYTES;
                    from += SPLIT_READ_LEAD_BYTES;
                }
                if (bytes > 0) {
                    dataChunkHeader(h, r, flags, from, bytes);
                    writeReply(h.flip());
                }
                bio = sendData(r, bio, extentEnd - position, skip, bytes);
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
            ReadReference reference = r.readyReference(bio);
            if (reference != null) {
                bio++;
                long size = reference.payloadBytes();
                long skipHere = Math.min(skip, size);
                long sendHere = Math.min(bytes, size - skipHere);
                sendReferenced(reference, skipHere, sendHere);
                skip -= skipHere;
                bytes -= sendHere;
                left -= size;
                continue;
            }
            iter.resetAll(r.bios[bio++]);
            int filled = SegmentViews.fill(iter, gather, 0);
            long size = 0;
            for (int i = 0; i < filled; i++) {
                size += gather[i].remaining();
            }
            long skipHere = Math.min(skip, size);
            long sendHere = Math.min(bytes, size - skipHere);
            int count = NbdConnection.trimViews(gather, filled, skipHere, sendHere);
            try {
                writeReplies(gather, count);
            } finally {
                Arrays.fill(gather, 0, filled, null); // only what was filled, not all 1,024
            }
            skip -= skipHere;
            bytes -= sendHere;
            left -= size;
        }
        return bio;
    }

    /**
     * Sends {@code bytes} of a READ held by reference, after its first {@code skip}: straight from
     * the file to the socket with {@code transferTo} (sendfile), at most {@link #WRITE_CHUNK_BYTES}
     * per call (noted for the reply timer); through a copy buffer for a transport that is not a
     * socket. The bios stay held until {@link #releaseBatch}, so the file range cannot be reused
     * while this runs.
     */
    private void sendReferenced(ReadReference reference, long skip, long bytes) throws IOException {
        // Counted before the send, so a client that has the reply also sees the count (tests read it then).
        referencedBytes.addAndGet(bytes);
        long toSkip = skip;
        long left = bytes;
        for (int e = 0; e < reference.extentCount() && left > 0; e++) {
            long length = reference.length(e);
            if (toSkip >= length) {
                toSkip -= length;
                continue;
            }
            long n = Math.min(length - toSkip, left);
            sendExtent(reference.channel(e), reference.position(e) + toSkip, n);
            toSkip = 0;
            left -= n;
        }
    }

    /** Sends {@code length} bytes of {@code file} at {@code position}; past the end of the file, zeroes. */
    private void sendExtent(FileChannel file, long position, long length) throws IOException {
        long pos = position;
        long left = length;
        while (left > 0) {
            long chunk = Math.min(left, socket != null ? WRITE_CHUNK_BYTES : COPY_BUFFER_BYTES);
            long sent;
            if (socket != null) {
                sent = file.transferTo(pos, chunk, socket);
            } else {
                ByteBuffer buffer = copyBuffer().clear().limit((int) chunk);
                sent = Math.max(0, file.read(buffer, pos));
                writeReply(buffer.flip());
            }
            if (sent == 0) {
                if (pos < file.size()) {
                    throw new IOException("sendfile of " + chunk + " bytes at " + pos + " made no progress");
                }
                int zeroBytes = (int) Math.min(chunk, COPY_BUFFER_BYTES);
                ByteBuffer zeros = copyBuffer().clear().limit(zeroBytes);
                MemorySegment.ofBuffer(zeros).fill((byte) 0);
                writeReply(zeros);
                sent = zeroBytes;
            }
            pos += sent;
            left -= sent;
            timers.noteSendProgress();
        }
    }

    /** The copy buffer for transports without sendfile, allocated on first use. */
    private ByteBuffer copyBuffer() {
        if (copyBuffer == null) {
            copyBuffer = ByteBuffer.allocateDirect(COPY_BUFFER_BYTES);
        }
        return copyBuffer;
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
     * Writes every buffer of {@code buffers[0..count)}, at most {@link #WRITE_CHUNK_BYTES} (and a
     * reply header) per write call (a buffer larger than that is cut with its limit), noting
     * progress after each call for the reply timer.
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
                    WireIo.writeFully(transport, first);
                } finally {
                    first.limit(limit);
                }
            } else {
                int end = idx + 1;
                long bytes = first.remaining();
                // A reply's headers (two for a split READ) may ride along with a full chunk of payload.
                while (end < count && bytes + buffers[end].remaining() <= WRITE_CHUNK_BYTES + 2 * BATCHED_HEADER_BYTES) {
                    bytes += buffers[end++].remaining();
                }
                WireIo.writeFully(transport, buffers, idx, end);
            }
            timers.noteSendProgress();
        }
    }
}
