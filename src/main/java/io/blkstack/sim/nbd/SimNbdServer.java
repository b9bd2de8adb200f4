package io.blkstack.sim.nbd;

import static io.blkstack.nbd.NbdProtocol.*;

import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.nbd.BytePipe;
import io.blkstack.remote.NbdTransport;
import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * A simulated NBD server for the checker: the peer a {@link io.blkstack.remote.RemoteDevice} talks
 * to under {@code blkstack check --config} when the configuration has {@code nbd:} devices. It is
 * an independent implementation of the server side of the protocol, small on purpose: the fixed
 * newstyle handshake ({@code NBD_OPT_GO}/{@code INFO} with {@code NBD_INFO_EXPORT} and
 * {@code NBD_INFO_BLOCK_SIZE}, structured replies and {@code base:allocation} when the client asks),
 * then READ (hole-aware chunks with structured replies), WRITE, FLUSH, FUA, TRIM, WRITE_ZEROES
 * (with and without {@code NO_HOLE}) and BLOCK_STATUS, over a {@link SparseExport} with a volatile
 * layer that FLUSH and FUA make stable.
 *
 * <p><b>Transport.</b> A connection is two in-process {@link BytePipe}s, so every wait on either side
 * is a kernel wait the simulated scheduler sees and chooses; each connection is served by one
 * {@link TaskKind#DEVICE} task (it stands for the remote machine), which handles its requests in
 * order. {@link #transport} is what the remote device connects through instead of a socket.
 *
 * <p><b>Faults</b>, from the run's seeded stream ({@link io.blkstack.kernel.Faults}):
 * <ul>
 * <li>{@code nbd-drop:<name>}, asked at three points of every request: when its header has
 * arrived (nothing done yet), after it was carried out (not answered: a write's outcome is
 * unknown to the client), and in the middle of its reply (half of the reply's bytes sent). A drop
 * ends the connection as a server that goes away does: the client reads what was sent, then end
 * of stream, and its later writes are lost.</li>
 * <li>{@code nbd-lose:<name>}, asked at each drop: the server also crashes, losing every write it
 * had not flushed, and every other connection to it drops too.</li>
 * <li>{@code nbd-refuse:<name>}, asked at each connect: the connection is refused (a server that
 * is restarting), so a client's reconnect backs off and tries again.</li>
 * <li>{@code latency:nbd:<name>}, asked before every reply: the reply is delayed by the drawn
 * time (virtual), which may pass the client's timeout.</li>
 * </ul>
 *
 * <p>With {@code flushLies} the server acknowledges FLUSH and FUA without making anything stable
 * (a broken server, for the test that shows the checker catches acknowledged writes that a crash
 * then loses). Heap memory only: buffers per connection made once, the export's data as written.
 */
public final class SimNbdServer implements Component {

    /** Smallest block the server accepts (its {@code NBD_INFO_BLOCK_SIZE} minimum). */
    public static final int BLOCK_MIN = 512;
    public static final int BLOCK_PREFERRED = 4096;
    /** The largest payload it accepts; smaller than a bio, so the client splits. */
    public static final int PAYLOAD_MAX = 128 * 1024;
    /** Live connections at most; connects past it are refused. */
    public static final int CONNECTIONS_MAX = 64;
    /** Fault sites, each followed by the server's name. */
    public static final String DROP_SITE = "nbd-drop:";
    public static final String LOSE_SITE = "nbd-lose:";
    public static final String REFUSE_SITE = "nbd-refuse:";
    public static final String DELAY_SITE = "latency:nbd:";
    /** Counters, kernel-wide over every simulated server of the run. */
    public static final String COUNTER_PREFIX = "sim-nbd.";

    static final int PIPE_BYTES = 64 * 1024;
    private static final int OPTION_BYTES_MAX = STRING_BYTES_MAX + 64;
    private static final int OPTIONS_MAX = 32;
    private static final int EXTENTS_MAX = 256;
    private static final long BLOCK_STATUS_BYTES_MAX = 16L << 20;
    private static final long META_CONTEXT_ID = 1;
    private static final int TRANSMISSION_FLAGS = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_TRIM
            | FLAG_SEND_WRITE_ZEROES | FLAG_CAN_MULTI_CONN;

    private final Kernel kernel;
    private final String name;
    private final String exportName;
    private final SparseExport data;
    private final boolean flushLies;
    private final SpinLock lock;
    // Guarded by lock.
    private final List<Connection> live = new ArrayList<>();
    private boolean closed;
    private long connectionIds;
    private long requests;

    /**
     * A server of one export of {@code sizeBytes}, registered with the kernel (so it closes after
     * the devices built on it, which register later).
     */
    public SimNbdServer(Kernel kernel, String name, String exportName, long sizeBytes, boolean flushLies) {
        this.kernel = kernel;
        this.name = name;
        this.exportName = exportName;
        this.data = new SparseExport(sizeBytes);
        this.flushLies = flushLies;
        this.lock = new SpinLock("simulated nbd server " + name);
        kernel.register(this);
    }

    @Override
    public String name() {
        return "simulated nbd server " + name;
    }

    /** The cable a remote device connects through. */
    public NbdTransport transport() {
        return new NbdTransport() {
            @Override
            public NbdTransport.Wire connect(long timeoutNanos) throws IOException {
                return SimNbdServer.this.connect();
            }

            @Override
            public String describe() {
                return SimNbdServer.this.name();
            }
        };
    }

    /** Accepts a connection and starts its task, unless closed, refused by a fault or at the limit. */
    private NbdTransport.Wire connect() throws IOException {
        if (kernel.faults().shouldFail(REFUSE_SITE + name)) {
            count("refusals");
            throw new IOException(name() + ": connection refused (simulated restart)");
        }
        Connection c;
        lock.lock();
        try {
            if (closed) {
                throw new IOException(name() + " is closed");
            }
            if (live.size() >= CONNECTIONS_MAX) {
                throw new IOException(name() + ": " + live.size() + " connections, the limit");
            }
            c = new Connection(++connectionIds);
            live.add(c);
        } finally {
            lock.unlock();
        }
        count("connects");
        try {
            c.task = kernel.spawn(name + "-srv" + c.id, TaskKind.DEVICE, c::run);
        } catch (RuntimeException e) {
            c.end();
            forget(c);
            throw new IOException(name() + ": cannot start a connection task: " + e, e);
        }
        return c.clientWire;
    }

    private void forget(Connection c) {
        lock.lock();
        try {
            live.remove(c);
        } finally {
            lock.unlock();
        }
    }

    private void count(String what) {
        kernel.counters().get(COUNTER_PREFIX + what).incrementAndGet();
    }

    /** Crashes: every unflushed write is lost and every connection drops. */
    private void crash() {
        List<Connection> all;
        int lost;
        lock.lock();
        try {
            lost = data.lose();
            all = new ArrayList<>(live);
        } finally {
            lock.unlock();
        }
        count("crashes");
        if (lost > 0) {
            count("losses");
        }
        kernel.tracer().event(Task.currentOrNull(), "sim-nbd-crash", name + " lost " + lost + " unflushed chunk(s)");
        for (Connection c : all) {
            c.hangUp();
        }
    }

    /** Whether the client's request may go on (the connection was not dropped meanwhile). */
    private boolean dropHere(Connection c, String point) {
        if (!kernel.faults().shouldFail(DROP_SITE + name)) {
            return false;
        }
        count("drops");
        kernel.tracer().event(Task.currentOrNull(), "sim-nbd-drop", name + " connection " + c.id + " " + point);
        c.hangUp();
        if (kernel.faults().shouldFail(LOSE_SITE + name)) {
            crash();
        }
        return true;
    }

    @Override
    public long fingerprint() {
        lock.lock();
        try {
            return requests * 31 + connectionIds;
        } finally {
            lock.unlock();
        }
    }

    @Override
    public String describeState() {
        lock.lock();
        try {
            return name() + ": " + live.size() + " connection(s), " + requests + " request(s) served, "
                    + data.dirtyChunks() + " unflushed chunk(s)" + (closed ? ", closed" : "");
        } finally {
            lock.unlock();
        }
    }

    /** Ends every connection and waits for their tasks. */
    @Override
    public void close() {
        List<Connection> all;
        lock.lock();
        try {
            if (closed) {
                return;
            }
            closed = true;
            all = new ArrayList<>(live);
        } finally {
            lock.unlock();
        }
        for (Connection c : all) {
            c.end();
        }
        for (Connection c : all) {
            if (c.task != null) {
                kernel.scheduler().join(c.task);
            }
        }
        if (!kernel.isClosed()) {
            kernel.unregister(this);
        }
    }

    /** One connection: its two pipes, its task's buffers and what its handshake agreed. */
    private final class Connection {
        final long id;
        final BytePipe requestPipe;
        final BytePipe replyPipe;
        final WaitQueue wait;
        final ClientWire clientWire = new ClientWire();
        final ByteBuffer[] readOne = new ByteBuffer[1];
        final ByteBuffer[] writeOne = new ByteBuffer[1];
        final ByteBuffer small = ByteBuffer.allocate(OPTION_BYTES_MAX + 32);
        final ByteBuffer payload = ByteBuffer.allocate(PAYLOAD_MAX);
        final ByteBuffer out = ByteBuffer.allocate(PAYLOAD_MAX + (PAYLOAD_MAX / SparseExport.CHUNK + 2) * 32);
        volatile boolean ended;
        Task task;
        boolean structured;
        boolean allocationContext;

        Connection(long id) {
            this.id = id;
            this.requestPipe = new BytePipe(name + "-" + id + " requests", PIPE_BYTES);
            this.replyPipe = new BytePipe(name + "-" + id + " replies", PIPE_BYTES);
            this.wait = new WaitQueue(name() + " connection " + id);
        }

        /** The server goes away: the client reads what was sent, then end of stream; its later writes vanish. */
        void hangUp() {
            ended = true;
            replyPipe.closeWrite();
            requestPipe.shutdownRead();
            wait.wakeAll();
        }

        /** Both directions fail now (the client cut the wire, or the server closes). Never blocks. */
        void end() {
            ended = true;
            requestPipe.close();
            replyPipe.close();
            wait.wakeAll();
        }

        /** The connection's task: handshake, then requests until the end. */
        void run() {
            try {
                if (handshake()) {
                    serve();
                }
            } catch (IOException e) {
                // the client went away or the connection was dropped: this connection ends
            } finally {
                if (!ended) {
                    end(); // a client that disconnected; a dropped connection stays readable to the client
                }
                forget(this);
            }
        }

        // ---- bytes -----------------------------------------------------------------------------

        private void readFully(ByteBuffer b) throws IOException {
            readOne[0] = b;
            try {
                while (b.hasRemaining()) {
                    if (requestPipe.read(readOne, 0, 1) < 0) {
                        throw new EOFException("client closed");
                    }
                }
            } finally {
                readOne[0] = null;
            }
        }

        private void writeFully(ByteBuffer b) throws IOException {
            writeOne[0] = b;
            try {
                while (b.hasRemaining()) {
                    replyPipe.write(writeOne, 0, 1);
                }
            } finally {
                writeOne[0] = null;
            }
        }

        // ---- handshake -------------------------------------------------------------------------

        /** The fixed newstyle handshake; true once GO was acknowledged. */
        private boolean handshake() throws IOException {
            small.clear().putLong(NBDMAGIC).putLong(IHAVEOPT).putShort((short) (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)).flip();
            writeFully(small);
            small.clear().limit(4);
            readFully(small);
            if ((small.getInt(0) & FLAG_C_FIXED_NEWSTYLE) == 0) {
                return false;
            }
            for (int i = 0; i < OPTIONS_MAX; i++) {
                small.clear().limit(16);
                readFully(small);
                long magic = small.getLong(0);
                int option = small.getInt(8);
                int length = small.getInt(12);
                if (magic != IHAVEOPT || length < 0 || length > OPTION_BYTES_MAX) {
                    return false;
                }
                small.clear().limit(length);
                readFully(small);
                small.flip();
                switch (option) {
                    case OPT_STRUCTURED_REPLY -> {
                        if (length != 0) {
                            optionReply(option, REP_ERR_INVALID, null);
                        } else {
                            structured = true;
                            optionReply(option, REP_ACK, null);
                        }
                    }
                    case OPT_SET_META_CONTEXT -> setMetaContext(option);
                    case OPT_GO, OPT_INFO -> {
                        if (goOrInfo(option) && option == OPT_GO) {
                            return true;
                        }
                    }
                    case OPT_ABORT -> {
                        optionReply(option, REP_ACK, null);
                        return false;
                    }
                    default -> optionReply(option, REP_ERR_UNSUP, null);
                }
            }
            return false;
        }

        /** The export name at the start of an option's data, or null if malformed. */
        private String exportNameOf(ByteBuffer b) {
            if (b.remaining() < 4) {
                return null;
            }
            int n = b.getInt();
            if (n < 0 || n > b.remaining()) {
                return null;
            }
            byte[] bytes = new byte[n];
            b.get(bytes);
            return new String(bytes, StandardCharsets.UTF_8);
        }

        private void setMetaContext(int option) throws IOException {
            String export = exportNameOf(small);
            if (!structured || export == null || small.remaining() < 4) {
                optionReply(option, REP_ERR_INVALID, null);
                return;
            }
            if (!export.equals(exportName)) {
                optionReply(option, REP_ERR_UNKNOWN, null);
                return;
            }
            int queries = small.getInt();
            boolean found = false;
            for (int q = 0; q < queries && small.remaining() >= 4; q++) {
                int n = small.getInt();
                if (n < 0 || n > small.remaining()) {
                    break;
                }
                byte[] bytes = new byte[n];
                small.get(bytes);
                found |= META_BASE_ALLOCATION.equals(new String(bytes, StandardCharsets.US_ASCII));
            }
            if (found) {
                byte[] context = META_BASE_ALLOCATION.getBytes(StandardCharsets.US_ASCII);
                ByteBuffer b = ByteBuffer.allocate(4 + context.length).putInt((int) META_CONTEXT_ID).put(context).flip();
                optionReply(option, REP_META_CONTEXT, b);
            }
            allocationContext = found;
            optionReply(option, REP_ACK, null);
        }

        /** Answers GO or INFO: the export's size and flags, its block sizes, ACK; false for an unknown export. */
        private boolean goOrInfo(int option) throws IOException {
            String export = exportNameOf(small);
            if (export == null) {
                optionReply(option, REP_ERR_INVALID, null);
                return false;
            }
            if (!export.equals(exportName)) {
                optionReply(option, REP_ERR_UNKNOWN, null);
                return false;
            }
            ByteBuffer b = ByteBuffer.allocate(14);
            b.putShort((short) INFO_EXPORT).putLong(data.sizeBytes()).putShort((short) TRANSMISSION_FLAGS).flip();
            optionReply(option, REP_INFO, b);
            b.clear().putShort((short) INFO_BLOCK_SIZE).putInt(BLOCK_MIN).putInt(BLOCK_PREFERRED).putInt(PAYLOAD_MAX).flip();
            optionReply(option, REP_INFO, b);
            optionReply(option, REP_ACK, null);
            return true;
        }

        private void optionReply(int option, int type, ByteBuffer body) throws IOException {
            int length = body == null ? 0 : body.remaining();
            ByteBuffer h = ByteBuffer.allocate(20 + length);
            h.putLong(OPTION_REPLY_MAGIC).putInt(option).putInt(type).putInt(length);
            if (body != null) {
                h.put(body);
            }
            writeFully(h.flip());
        }

        // ---- transmission ----------------------------------------------------------------------

        /** Serves requests in order until the client disconnects or the connection drops. */
        private void serve() throws IOException {
            ByteBuffer header = ByteBuffer.allocate(REQUEST_HEADER_BYTES);
            while (!ended) {
                header.clear();
                readFully(header);
                if (header.getInt(0) != REQUEST_MAGIC) {
                    return; // a protocol error: the server hangs up
                }
                int flags = Short.toUnsignedInt(header.getShort(4));
                int type = Short.toUnsignedInt(header.getShort(6));
                long cookie = header.getLong(8);
                long offset = header.getLong(16);
                long length = Integer.toUnsignedLong(header.getInt(24));
                if (type == CMD_DISC) {
                    return;
                }
                if (type == CMD_WRITE) {
                    if (length > PAYLOAD_MAX) {
                        return; // more than advertised: cannot stay in sync with the stream
                    }
                    payload.clear().limit((int) length);
                    readFully(payload);
                    payload.flip();
                }
                if (dropHere(this, "before carrying out a request")) {
                    return;
                }
                int error = carryOut(type, flags, offset, length);
                if (dropHere(this, "before replying")) {
                    return;
                }
                long delay = kernel.faults().extraLatencyNanos(DELAY_SITE + name);
                if (delay > 0) {
                    count("delays");
                    wait.waitEventTimeout(() -> ended, this, delay, false);
                }
                if (ended) {
                    return;
                }
                buildReply(type, cookie, offset, (int) length, error);
                if (dropMidReply()) {
                    return;
                }
                writeFully(out);
            }
        }

        /** Sends half of the reply, then drops, if the fault says so. */
        private boolean dropMidReply() throws IOException {
            if (!kernel.faults().shouldFail(DROP_SITE + name)) {
                return false;
            }
            int half = Math.max(1, out.remaining() / 2);
            ByteBuffer part = out.duplicate();
            part.limit(part.position() + half);
            writeFully(part);
            count("drops");
            kernel.tracer().event(Task.currentOrNull(), "sim-nbd-drop", name + " connection " + id + " after "
                    + half + " of " + out.remaining() + " reply bytes");
            hangUp();
            if (kernel.faults().shouldFail(LOSE_SITE + name)) {
                crash();
            }
            return true;
        }

        /** Validates and carries out a request on the data; returns its errno (0 for success). */
        private int carryOut(int type, int flags, long offset, long length) {
            boolean inRange = offset >= 0 && length <= Integer.MAX_VALUE && offset + length <= data.sizeBytes();
            boolean aligned = offset % BLOCK_MIN == 0 && length % BLOCK_MIN == 0;
            boolean fua = (flags & CMD_FLAG_FUA) != 0;
            lock.lock();
            try {
                requests++;
                switch (type) {
                    case CMD_READ, CMD_BLOCK_STATUS -> {
                        if (!inRange || !aligned || length == 0 || (type == CMD_READ && length > PAYLOAD_MAX)) {
                            return EINVAL;
                        }
                        return type == CMD_BLOCK_STATUS && !allocationContext ? EINVAL : 0;
                    }
                    case CMD_WRITE -> {
                        if (!inRange || !aligned) {
                            return EINVAL;
                        }
                        data.write(offset, payload);
                    }
                    case CMD_TRIM, CMD_WRITE_ZEROES -> {
                        if (!inRange || !aligned) {
                            return EINVAL;
                        }
                        data.zero(offset, (int) length, type == CMD_TRIM || (flags & CMD_FLAG_NO_HOLE) == 0);
                    }
                    case CMD_FLUSH -> fua = true;
                    default -> {
                        return EINVAL;
                    }
                }
                if (fua && !flushLies) {
                    data.flush();
                }
                return 0;
            } finally {
                lock.unlock();
            }
        }

        /** Puts the whole reply to a request in {@link #out}, ready to send. */
        private void buildReply(int type, long cookie, long offset, int length, int error) {
            out.clear();
            if (!structured) {
                out.putInt(SIMPLE_REPLY_MAGIC).putInt(error).putLong(cookie);
                if (type == CMD_READ && error == 0) {
                    readInto(offset, length, out);
                }
            } else if (error != 0) {
                byte[] message = ("simulated server: request refused (errno " + error + ")").getBytes(StandardCharsets.UTF_8);
                chunkHeader(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, 6 + message.length);
                out.putInt(error).putShort((short) message.length).put(message);
            } else if (type == CMD_READ) {
                readChunks(cookie, offset, length);
            } else if (type == CMD_BLOCK_STATUS) {
                blockStatus(cookie, offset, length);
            } else {
                chunkHeader(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0);
            }
            out.flip();
        }

        private void chunkHeader(int flags, int type, long cookie, int length) {
            out.putInt(STRUCTURED_REPLY_MAGIC).putShort((short) flags).putShort((short) type).putLong(cookie).putInt(length);
        }

        private void readInto(long offset, int length, ByteBuffer dst) {
            lock.lock();
            try {
                data.read(offset, length, dst);
            } finally {
                lock.unlock();
            }
        }

        /** The end of the run of data or holes starting at {@code at}, within {@code end}. */
        private long runEnd(long at, long end, boolean isData) {
            long next = (at / SparseExport.CHUNK + 1) * SparseExport.CHUNK;
            lock.lock();
            try {
                while (next < end && data.isData(next) == isData) {
                    next += SparseExport.CHUNK;
                }
            } finally {
                lock.unlock();
            }
            return Math.min(next, end);
        }

        private boolean isData(long at) {
            lock.lock();
            try {
                return data.isData(at);
            } finally {
                lock.unlock();
            }
        }

        /** A structured READ reply: one OFFSET_DATA or OFFSET_HOLE chunk per run, the last one DONE. */
        private void readChunks(long cookie, long offset, int length) {
            long end = offset + length;
            for (long at = offset; at < end; ) {
                boolean isData = isData(at);
                long to = runEnd(at, end, isData);
                int n = (int) (to - at);
                int flags = to == end ? REPLY_FLAG_DONE : 0;
                if (isData) {
                    chunkHeader(flags, REPLY_TYPE_OFFSET_DATA, cookie, 8 + n);
                    out.putLong(at);
                    readInto(at, n, out);
                } else {
                    chunkHeader(flags, REPLY_TYPE_OFFSET_HOLE, cookie, 12);
                    out.putLong(at).putInt(n);
                }
                at = to;
            }
        }

        /** A BLOCK_STATUS reply for {@code base:allocation}: up to {@link #EXTENTS_MAX} runs from the offset. */
        private void blockStatus(long cookie, long offset, int length) {
            // A server may describe less than asked: at most 16 MiB, so a reply costs a bounded walk.
            long end = offset + Math.min(Integer.toUnsignedLong(length), BLOCK_STATUS_BYTES_MAX);
            int at = out.position();
            chunkHeader(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, cookie, 0);
            out.putInt((int) META_CONTEXT_ID);
            int extents = 0;
            for (long from = offset; from < end && extents < EXTENTS_MAX; extents++) {
                boolean isData = isData(from);
                long to = runEnd(from, end, isData);
                out.putInt((int) (to - from)).putInt(isData ? 0 : STATE_HOLE | STATE_ZERO);
                from = to;
            }
            out.putInt(at + 16, 4 + extents * 8);
        }

        /** The client's end of the connection. */
        private final class ClientWire implements NbdTransport.Wire {
            private final ByteBuffer[] one = new ByteBuffer[1];
            private final ByteBuffer[] oneOut = new ByteBuffer[1];

            @Override
            public int read(ByteBuffer buffer) throws IOException {
                one[0] = buffer;
                try {
                    return (int) replyPipe.read(one, 0, 1);
                } finally {
                    one[0] = null;
                }
            }

            @Override
            public long read(ByteBuffer[] buffers, int offset, int length) throws IOException {
                return replyPipe.read(buffers, offset, length);
            }

            @Override
            public int write(ByteBuffer buffer) throws IOException {
                oneOut[0] = buffer;
                try {
                    return (int) requestPipe.write(oneOut, 0, 1);
                } finally {
                    oneOut[0] = null;
                }
            }

            @Override
            public long write(ByteBuffer[] buffers, int offset, int length) throws IOException {
                return requestPipe.write(buffers, offset, length);
            }

            @Override
            public void cut() {
                end();
            }

            @Override
            public void close() {
                end();
            }
        }
    }
}
