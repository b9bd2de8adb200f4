package io.blkstack.sim.workload;

import io.blkstack.bio.Bio;
import io.blkstack.block.BlockDevice;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Page;
import io.blkstack.nbd.Export;
import io.blkstack.nbd.InProcessClient;
import io.blkstack.nbd.NbdProtocol;
import io.blkstack.nbd.NbdServer;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.function.Consumer;

/**
 * A {@link WorkloadSpec} that enters through the real NBD request path instead of straight into
 * the top device ({@code blkstack check --via nbd}): the stack's top device is exported by an
 * {@link NbdServer} built in the run's kernel, and each workload task is an NBD client speaking the
 * transmission phase over an in-process connection ({@link NbdServer#connectInProcess}). Its
 * requests go through the server's parsing, validation, payload budget, bio set, reader and writer
 * tasks, all under the deterministic scheduler, so an over-commit of the payload budget is a
 * checker finding (a DEADLOCK or LIVELOCK with readers waiting in the page allocator), not a hang
 * in production.
 *
 * <p>The data check is {@link Workload}'s: each task owns one slice of the region and has one
 * request in flight at a time, writes carry a pattern of a per-write stamp and the byte's offset,
 * and every read is compared with what the task last wrote (a request that fails makes its range
 * unknown). With {@code pressure=on}, every free page is taken after the stack is built and
 * <em>before</em> the server, but {@code sparePages} or, if more, the fewest the server's admission
 * accepts ({@link NbdServer#admissionFreePagesMin}): the server's admission sees what is really
 * left, as it would in {@code serve} with a stack that keeps part of the arena. The server runs
 * with no idle and no reply timeout (clients here always read their replies).
 */
public final class NbdWorkload implements Consumer<Kernel> {

    /** The export the clients use. */
    public static final String EXPORT = "check";
    /** Requests in flight per connection (each client keeps one). */
    private static final int IN_FLIGHT_PER_CONNECTION = 4;
    /** Bytes of a simple reply header: magic, error, cookie. */
    private static final int SIMPLE_REPLY_BYTES = 16;

    private final Workload.StackBuilder stack;
    private final WorkloadSpec spec;
    private final boolean mayLoseUnflushed;

    public NbdWorkload(Workload.StackBuilder stack, WorkloadSpec spec) {
        this(stack, spec, false);
    }

    /**
     * As {@link #NbdWorkload(Workload.StackBuilder, WorkloadSpec)}; {@code mayLoseUnflushed} for a
     * stack whose bottom devices may lose unflushed writes ({@link DrivenStack#mayLoseUnflushed}):
     * each client then keeps an {@link UnflushedWindow}, as {@link Workload}'s tasks do.
     */
    public NbdWorkload(Workload.StackBuilder stack, WorkloadSpec spec, boolean mayLoseUnflushed) {
        this.stack = stack;
        this.spec = spec;
        this.mayLoseUnflushed = mayLoseUnflushed;
    }

    public WorkloadSpec spec() {
        return spec;
    }

    /** Builds the stack, applies pressure, builds the server, runs the clients, closes the server and gives memory back. */
    @Override
    public void accept(Kernel kernel) {
        BlockDevice top;
        try {
            top = stack.build(kernel);
        } catch (RuntimeException e) {
            if (!Workload.ioFaultFired(kernel)) {
                throw e;
            }
            // As in Workload: a stack refusing to start after an injected I/O error is the right answer.
            kernel.counters().get("workload.stack-refused").incrementAndGet();
            kernel.tracer().event(Task.currentOrNull(), "stack-refused", String.valueOf(e.getMessage()));
            return;
        }
        if (spec.regionEndBytes() > top.capacityBytes()) {
            throw new IllegalArgumentException("workload region " + spec.regionStartBytes() + "-" + spec.regionEndBytes()
                    + " ends past device " + top.name() + " of " + top.capacityBytes() + " bytes");
        }
        List<Page> hoard = new ArrayList<>();
        Export export = new Export(EXPORT, top, false, "checker workload");
        try {
            if (spec.pressure()) {
                Workload.exhaust(kernel, hoard, Math.max(spec.sparePages(), NbdServer.admissionFreePagesMin(kernel, export)));
            }
            NbdServer.Options options = new NbdServer.Options(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0),
                    WorkloadSpec.TASKS_MAX, IN_FLIGHT_PER_CONNECTION, 0).withReplyTimeoutNanos(0).withIdleTimeoutNanos(0)
                    .withRequestTimeoutNanos(0) // a stall is what the checker looks for: no timeout may hide it
                    .withLog(line -> kernel.tracer().event(Task.currentOrNull(), "nbd-log", line));
            NbdServer server = new NbdServer(kernel, List.of(export), options);
            try {
                List<Task> tasks = new ArrayList<>();
                for (int t = 0; t < spec.tasks(); t++) {
                    ClientRun run = new ClientRun(kernel, server.connectInProcess(EXPORT), top.name(), t,
                            Workload.randomSeed(kernel, t));
                    tasks.add(kernel.spawn("nbd-client" + t, TaskKind.USER, run::run));
                }
                for (Task t : tasks) {
                    kernel.scheduler().join(t);
                }
            } finally {
                server.close();
            }
        } finally {
            hoard.forEach(kernel.pages()::free);
        }
    }

    /** One client: its connection, slice, random stream, buffers (heap, not the arena) and reference model. */
    private final class ClientRun {
        private final Kernel kernel;
        private final InProcessClient client;
        private final String deviceName;
        private final int index;
        private final SplittableRandom random;
        private final SliceModel slice;
        private final ByteBuffer header = ByteBuffer.allocate(NbdProtocol.REQUEST_HEADER_BYTES);
        private final ByteBuffer reply = ByteBuffer.allocate(SIMPLE_REPLY_BYTES);
        private final ByteBuffer data;
        /** Writes since the last good flush, when the stack may lose unflushed writes; else null. */
        private final UnflushedWindow window;
        private final byte[] sector = new byte[Bio.SECTOR_SIZE];
        private long cookie;
        private int dataOps;

        ClientRun(Kernel kernel, InProcessClient client, String deviceName, int index, long seed) {
            this.kernel = kernel;
            this.client = client;
            this.deviceName = deviceName;
            this.index = index;
            this.random = new SplittableRandom(seed);
            this.slice = new SliceModel(spec, index, random);
            this.data = ByteBuffer.allocate(spec.sizeMaxBytes());
            this.window = mayLoseUnflushed ? new UnflushedWindow(slice, spec.opsPerTask()) : null;
        }

        /** Issues the task's operations one at a time, then disconnects; stops at the first mismatch. */
        void run() {
            try {
                for (int op = 0; op < spec.opsPerTask(); op++) {
                    int draw = random.nextInt(100);
                    boolean ok;
                    if (draw < spec.writePercent()) {
                        ok = write();
                    } else if (draw < spec.writePercent() + spec.readPercent()) {
                        ok = read(op);
                    } else {
                        flush();
                        continue;
                    }
                    if (!ok) {
                        break;
                    }
                    dataOps++;
                    if (spec.flushEvery() > 0 && dataOps % spec.flushEvery() == 0) {
                        flush();
                    }
                }
                sendHeader(NbdProtocol.CMD_DISC, 0, 0);
                client.shutdownOutput();
            } catch (IOException e) {
                throw new IllegalStateException("nbd client " + index + ": connection failed: " + e.getMessage(), e);
            }
            client.awaitEnd();
        }

        /** Writes a fresh pattern; on success the model takes it, on failure the range becomes unknown. */
        private boolean write() throws IOException {
            long[] r = slice.pickRange();
            long offset = r[0];
            int size = (int) r[1];
            long stamp = random.nextLong();
            slice.stamp(stamp, offset, size);
            slice.fill(data.clear().limit(size), 0, offset, size);
            sendHeader(NbdProtocol.CMD_WRITE, slice.start + offset, size);
            client.send(data);
            slice.setKnown(offset, size, receiveReply() == 0);
            if (window != null) {
                window.record(stamp, offset, size);
            }
            return true;
        }

        /** Reads a range and compares every known sector with the model. */
        private boolean read(int op) throws IOException {
            long[] r = slice.pickRange();
            long offset = r[0];
            int size = (int) r[1];
            sendHeader(NbdProtocol.CMD_READ, slice.start + offset, size);
            if (receiveReply() != 0) {
                return true; // an error reply carries no data: nothing to compare
            }
            data.clear().limit(size);
            client.receive(data);
            for (int pos = 0; pos < size; pos += Bio.SECTOR_SIZE) {
                int at = (int) (offset + pos);
                if (!slice.known[at / Bio.SECTOR_SIZE]) {
                    continue;
                }
                data.get(pos, sector);
                int differs = slice.mismatch(sector, at);
                if (differs >= 0 && window != null && Workload.lossHappened(kernel) && window.accepts(sector, at)) {
                    kernel.counters().get("workload.unflushed-lost-reads").incrementAndGet();
                    continue;
                }
                if (differs >= 0) {
                    mismatch(op, slice.start + at + differs, slice.expectedByte(at + differs), sector[differs], size);
                    return false;
                }
            }
            return true;
        }

        /** Flushes the export and waits for the reply. */
        private void flush() throws IOException {
            sendHeader(NbdProtocol.CMD_FLUSH, 0, 0);
            boolean ok = receiveReply() == 0;
            if (window != null) {
                java.util.concurrent.atomic.AtomicLong failures = kernel.counters().get(Workload.FLUSH_FAILURES);
                window.flushed(ok, ok ? failures.get() : failures.incrementAndGet());
            }
        }

        /** Sends one request header with the next cookie. */
        private void sendHeader(int command, long offset, int length) throws IOException {
            header.clear();
            header.putInt(NbdProtocol.REQUEST_MAGIC).putShort((short) 0).putShort((short) command).putLong(++cookie)
                    .putLong(offset).putInt(length).flip();
            client.send(header);
        }

        /** Reads a simple reply header for the request just sent; returns its error (0 for success). */
        private int receiveReply() throws IOException {
            reply.clear();
            client.receive(reply);
            reply.flip();
            int magic = reply.getInt();
            int error = reply.getInt();
            long replyCookie = reply.getLong();
            if (magic != NbdProtocol.SIMPLE_REPLY_MAGIC || replyCookie != cookie) {
                throw new IllegalStateException("nbd client " + index + ": reply magic " + Integer.toHexString(magic)
                        + " cookie " + replyCookie + ", expected a simple reply for cookie " + cookie);
            }
            return error;
        }

        /** Reports a read that disagrees with the model. */
        private void mismatch(int op, long deviceOffset, byte want, byte got, int size) {
            String what = String.format("data mismatch on %s via nbd: operation %d of client %d read %d bytes; byte at"
                    + " device offset %d (sector %d) is 0x%02x, the last write there put 0x%02x", deviceName, op, index,
                    size, deviceOffset, deviceOffset >>> Bio.SECTOR_SHIFT, got & 0xff, want & 0xff);
            Workload.report(kernel, what);
        }
    }
}
