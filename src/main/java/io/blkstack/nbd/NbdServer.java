package io.blkstack.nbd;

import io.blkstack.bio.BioSet;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.mem.Page;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;

/**
 * An NBD server (fixed newstyle, {@code doc/proto.md} of the NBD project) serving named
 * {@link Export exports} of block devices to real clients: nbdinfo, nbdcopy, qemu-img, qemu-io,
 * the Linux nbd client.
 *
 * <p>Tasks: one accept task, and per connection a reader and a writer ({@link NbdConnection}).
 * Socket I/O is blocking {@link SocketChannel} I/O inside those tasks (it stands for hardware, as
 * device I/O does); every wait between tasks is a kernel primitive.
 *
 * <p>Memory: request payloads live in pages of the kernel's arena, in bios of this server's own
 * {@link BioSet}. A server-wide payload budget (in pages, three quarters of the arena above its
 * min watermark unless told otherwise) is taken by each READ and WRITE before its pages are
 * allocated and returned after its reply is sent. Why: pages of a request stay allocated until
 * its reply is sent, so without the budget several connections each holding part of a large
 * request could exhaust the arena and wait on each other forever; with it, every admitted request
 * can get all its pages (rule 5 of DESIGN.md section 1: backpressure is a wait on a reserve).
 * Each export's advertised maximum payload is lowered to fit the budget if needed.
 *
 * <p>Life: {@link #start} binds and starts accepting; {@link #close} stops accepting, lets every
 * connection finish its in-flight requests and close, then closes the bio set. The server is a
 * kernel component, so closing the kernel closes it first if the owner did not. An owner that must
 * stop within a deadline calls {@link #drain} with a timeout first (which {@link #skipDrain} can cut
 * short), and for connections still open after it {@link #cutConnections}.
 */
public final class NbdServer implements Component {

    /**
     * Server settings.
     *
     * @param listen the address to bind (port 0 for an ephemeral port)
     * @param connectionsMax connections served at once; more are closed at accept
     * @param inFlightPerConnection requests in flight per connection before the reader waits
     * @param payloadBudgetBytes bytes of request payload in pages at once, server-wide; 0 for
     *     the default (three quarters of the arena above its min watermark)
     */
    public record Options(InetSocketAddress listen, int connectionsMax, int inFlightPerConnection,
            long payloadBudgetBytes) {

        /** Checks the bounds. */
        public Options {
            if (listen == null) {
                throw new IllegalArgumentException("nbd server needs a listen address");
            }
            if (connectionsMax < 1 || inFlightPerConnection < 1 || payloadBudgetBytes < 0) {
                throw new IllegalArgumentException("nbd server options: connections " + connectionsMax
                        + ", in flight per connection " + inFlightPerConnection + ", payload budget "
                        + payloadBudgetBytes + " must be positive");
            }
        }

        /** 64 connections, 64 requests in flight each, the default budget. */
        public static Options defaults(InetSocketAddress listen) {
            return new Options(listen, 64, 64, 0);
        }
    }

    /** Bios in the reserve of the server's bio set (each connection holds at most one unsubmitted bio). */
    static final int BIO_POOL_SIZE = 4;

    private final Kernel kernel;
    private final Options options;
    private final List<Export> exports;
    private final BioSet bioSet;
    private final PayloadBudget budget;
    private final SpinLock lock = new SpinLock("nbd server");
    private final Set<NbdConnection> connections = new HashSet<>();
    private final Completion acceptDone = new Completion("nbd accept done");
    private final WaitQueue drainWait = new WaitQueue("nbd server drain");
    /** What a draining task waits on: names every open connection and its requests in flight. */
    private final Object drainTarget = new Object() {
        @Override
        public String toString() {
            return "nbd server drain: " + describeConnections();
        }
    };
    private volatile boolean drainSkipped;
    private final AtomicLong connectionIds = new AtomicLong();
    private ServerSocketChannel listener;
    private InetSocketAddress boundAddress;
    private boolean started;
    private boolean stopping;
    private boolean closed;

    /** A server with default options on {@code listen}. */
    public NbdServer(Kernel kernel, List<Export> exports, InetSocketAddress listen) {
        this(kernel, exports, Options.defaults(listen));
    }

    /**
     * Creates the server and its bio set; nothing is bound until {@link #start}.
     *
     * @param exports at least one; names must be unique
     */
    @SuppressWarnings("this-escape")
    public NbdServer(Kernel kernel, List<Export> exports, Options options) {
        if (exports == null || exports.isEmpty()) {
            throw new IllegalArgumentException("nbd server needs at least one export");
        }
        Set<String> names = new HashSet<>();
        for (Export e : exports) {
            if (!names.add(e.name())) {
                throw new IllegalArgumentException("nbd server: export name '" + e.name() + "' used twice");
            }
        }
        this.kernel = kernel;
        this.options = options;
        long budgetBytes = options.payloadBudgetBytes() != 0 ? options.payloadBudgetBytes()
                : (long) (kernel.pages().totalPages() - kernel.pages().minPages()) * Page.SIZE * 3 / 4;
        long budgetPages = budgetBytes / Page.SIZE;
        List<Export> fitted = new ArrayList<>();
        for (Export e : exports) {
            fitted.add(fitToBudget(e, budgetPages * Page.SIZE));
        }
        this.exports = List.copyOf(fitted);
        this.budget = new PayloadBudget(budgetPages);
        this.bioSet = new BioSet(kernel, "nbd", BIO_POOL_SIZE, BIO_POOL_SIZE, null, false);
        kernel.register(this);
    }

    /** The export with its maximum payload lowered to the largest power of two within the budget. */
    private static Export fitToBudget(Export e, long budgetBytes) {
        if (e.maximumPayload() <= budgetBytes) {
            return e;
        }
        long max = Long.highestOneBit(budgetBytes);
        if (max < e.preferredBlockSize()) {
            throw new IllegalArgumentException("export " + e.name() + ": payload budget " + budgetBytes
                    + " bytes is below the preferred block size " + e.preferredBlockSize() + "; give the kernel more memory");
        }
        return e.withMaximumPayload((int) max);
    }

    /** Binds the listen address and starts the accept task. */
    public void start() throws IOException {
        lock.lock();
        try {
            if (started || closed) {
                throw new IllegalStateException("nbd server already " + (closed ? "closed" : "started"));
            }
            started = true;
        } finally {
            lock.unlock();
        }
        ServerSocketChannel channel = ServerSocketChannel.open();
        channel.setOption(StandardSocketOptions.SO_REUSEADDR, true);
        channel.bind(options.listen());
        listener = channel;
        boundAddress = (InetSocketAddress) channel.getLocalAddress();
        kernel.spawn("nbd-accept", TaskKind.USER, this::acceptLoop);
    }

    /** The bound address (with the real port when the options asked for port 0). */
    public InetSocketAddress localAddress() {
        if (boundAddress == null) {
            throw new IllegalStateException("nbd server not started");
        }
        return boundAddress;
    }

    /** The exports as served (maximum payload possibly lowered to the budget). */
    public List<Export> exports() {
        return exports;
    }

    /** Connections currently open. */
    public int connectionCount() {
        lock.lock();
        try {
            return connections.size();
        } finally {
            lock.unlock();
        }
    }

    Kernel kernel() {
        return kernel;
    }

    BioSet bioSet() {
        return bioSet;
    }

    PayloadBudget budget() {
        return budget;
    }

    /** The accept task: a reader task per accepted connection, until the listener closes. */
    private void acceptLoop() {
        try {
            while (true) {
                SocketChannel channel = listener.accept();
                channel.setOption(StandardSocketOptions.TCP_NODELAY, true);
                String name = "nbd-" + connectionIds.incrementAndGet();
                int maxPayload = 0;
                for (Export e : exports) {
                    maxPayload = Math.max(maxPayload, e.maximumPayload());
                }
                NbdConnection connection = new NbdConnection(this, channel, name, options.inFlightPerConnection(),
                        maxPayload);
                if (!admit(connection)) {
                    channel.close();
                    continue;
                }
                kernel.spawn(name + "-reader", TaskKind.USER, connection::runReader);
            }
        } catch (ClosedChannelException e) {
            // close() closed the listener
        } catch (IOException e) {
            if (!isClosed()) {
                kernel.reportCrash(io.blkstack.kernel.Task.currentOrNull(), e);
            }
        } finally {
            acceptDone.completeAll();
        }
    }

    /** Adds a connection unless closing or full. */
    private boolean admit(NbdConnection connection) {
        lock.lock();
        try {
            if (closed || stopping || connections.size() >= options.connectionsMax()) {
                return false;
            }
            connections.add(connection);
            return true;
        } finally {
            lock.unlock();
        }
    }

    /** A connection's last act: leave the table. */
    void connectionEnded(NbdConnection connection) {
        lock.lock();
        try {
            connections.remove(connection);
        } finally {
            lock.unlock();
        }
        drainWait.wakeAll();
    }

    private boolean isClosed() {
        lock.lock();
        try {
            return closed || stopping;
        } finally {
            lock.unlock();
        }
    }

    @Override
    public String name() {
        return "nbd server " + (boundAddress == null ? "(not started)" : boundAddress);
    }

    @Override
    public String describeState() {
        return name() + ": " + connectionCount() + " connection(s), payload budget " + budget.freePages() + " of "
                + budget.totalPages() + " pages free, " + bioSet.outstanding() + " bio(s) out"
                + (connectionCount() == 0 ? "" : "; " + describeConnections());
    }

    /** Every open connection with its requests in flight and where their bios are. */
    public String describeConnections() {
        List<NbdConnection> open = openConnections();
        if (open.isEmpty()) {
            return "no connection open";
        }
        StringBuilder sb = new StringBuilder();
        for (NbdConnection c : open) {
            sb.append(sb.isEmpty() ? "" : "; ").append(c.describeInFlight());
        }
        return sb.toString();
    }

    private List<NbdConnection> openConnections() {
        lock.lock();
        try {
            return new ArrayList<>(connections);
        } finally {
            lock.unlock();
        }
    }

    /** Stops accepting connections (once) and waits for the accept task to end. */
    public void stopAccepting() {
        lock.lock();
        try {
            if (stopping) {
                return;
            }
            stopping = true;
        } finally {
            lock.unlock();
        }
        if (listener != null) {
            try {
                listener.close();
            } catch (IOException e) {
                // nothing to do
            }
            acceptDone.await();
        }
    }

    /**
     * Stops accepting and ends every connection's input, so each finishes its in-flight requests,
     * sends their replies and closes; waits until every connection has closed, {@code timeoutNanos}
     * passed (negative: no limit), or (if {@code skippable}) {@link #skipDrain} was called.
     *
     * @return whether every connection closed
     */
    public boolean drain(long timeoutNanos, boolean skippable) {
        stopAccepting();
        for (NbdConnection c : openConnections()) {
            c.shutdownInput();
        }
        drainWait.waitEventTimeout(() -> connectionCount() == 0 || (skippable && drainSkipped), drainTarget,
                timeoutNanos, false);
        return connectionCount() == 0;
    }

    /** Makes a skippable {@link #drain} return now (a second stop signal); never blocks. */
    public void skipDrain() {
        drainSkipped = true;
        drainWait.wakeAll();
    }

    /**
     * Closes the socket of every connection still open: its client sees the connection end, which
     * fails every request it has outstanding, and a writer blocked on a client that stopped reading
     * is released. Requests still held by devices are released when the devices complete them.
     * Returns the descriptions of the connections cut (with their requests in flight).
     */
    public List<String> cutConnections() {
        List<String> cut = new ArrayList<>();
        for (NbdConnection c : openConnections()) {
            cut.add(c.describeInFlight());
            c.closeSocket();
        }
        return cut;
    }

    /**
     * Stops accepting, lets every connection finish its in-flight requests (their readers see end
     * of stream), waits for them to close, then closes the bio set.
     */
    @Override
    public void close() {
        lock.lock();
        try {
            if (closed) {
                return;
            }
            closed = true;
        } finally {
            lock.unlock();
        }
        kernel.unregister(this);
        drain(-1, false);
        bioSet.close();
    }

    /**
     * A server-wide count of payload pages that admitted requests may hold; a reader waits on it
     * (a kernel wait queue) before allocating a request's pages.
     */
    static final class PayloadBudget {
        private final long totalPages;
        private final AtomicLong free;
        private final WaitQueue waiters = new WaitQueue("nbd payload budget");

        PayloadBudget(long pages) {
            if (pages < 1) {
                throw new IllegalArgumentException("nbd payload budget of " + pages + " pages");
            }
            this.totalPages = pages;
            this.free = new AtomicLong(pages);
        }

        /** Waits until {@code pages} are free and takes them. */
        void acquire(int pages) {
            if (pages > totalPages) {
                throw new IllegalArgumentException("request of " + pages + " pages exceeds the budget of " + totalPages);
            }
            if (tryTake(pages)) {
                return; // the common case: no wait, and no condition object built
            }
            waiters.waitEvent(() -> tryTake(pages), this);
        }

        private boolean tryTake(int pages) {
            while (true) {
                long now = free.get();
                if (now < pages) {
                    return false;
                }
                if (free.compareAndSet(now, now - pages)) {
                    return true;
                }
            }
        }

        /** Returns pages and wakes every waiter (sizes differ, so each re-checks). */
        void release(int pages) {
            if (pages == 0) {
                return;
            }
            long now = free.addAndGet(pages);
            if (now > totalPages) {
                throw new IllegalStateException("nbd payload budget over-released: " + now + " > " + totalPages);
            }
            waiters.wakeAll();
        }

        long freePages() {
            return free.get();
        }

        long totalPages() {
            return totalPages;
        }

        @Override
        public String toString() {
            return "nbd payload budget (" + free.get() + "/" + totalPages + " pages free)";
        }
    }
}
