package io.blkstack.nbd;

import io.blkstack.mem.MemoryAdmissionException;
import io.blkstack.mem.Reservation;
import io.blkstack.bio.BioSet;
import io.blkstack.block.IoErrorLog;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Component;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.mem.Page;
import io.blkstack.mem.PageAllocator;
import io.blkstack.units.Sizes;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.UnixDomainSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.BooleanSupplier;
import java.util.function.Consumer;
import jdk.jfr.EventType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

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
 * {@link BioSet}. A server-wide payload budget (in pages: what the arena has left once the stack
 * is built, less reclaim's watermark, this server's reserves and a share for targets' transient
 * allocations; see {@link #admitBudget}) is taken by each READ and WRITE, for its payload pages and
 * its bios' vec arrays, before they are allocated, and returned after its reply is sent; each
 * connection gets a fair share of it ({@link PayloadBudget}). Why: pages of a request stay allocated until
 * its reply is sent, so without the budget several connections each holding part of a large
 * request could exhaust the arena and wait on each other forever; with it, every admitted request
 * can get all its pages (rule 5 of DESIGN.md section 1: backpressure is a wait on a reserve).
 * Each export's advertised maximum payload is lowered to fit the budget if needed, and a stack
 * that leaves too little for one request is refused with the numbers ({@link MemoryAdmissionException}).
 *
 * <p>Clients: at most {@link Options#connectionsMax} are served at once; one more is refused the
 * way the spec allows during haggling (an error with a message to each option, at most
 * {@link #REFUSALS_MAX} refusals under way), never silently closed. Each client has the handshake
 * timeout to negotiate, and, if set, the idle timeout bounds how long a connection may sit with
 * nothing to do ({@link NbdConnection}). A failed accept (out of descriptors, say) is logged and
 * retried after a bounded back-off; the accept task ends only when the server stops accepting. Accept
 * failures, refusals and timeouts go to {@link Options#log} and the kernel counters
 * {@code nbd.accept-failures} and {@code nbd.refusals}.
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
     * @param listeners the addresses to bind, TCP (port 0 for an ephemeral port) and Unix sockets;
     *     at least one
     * @param connectionsMax connections served at once; a client past the limit is refused with an
     *     {@code NBD_REP_ERR_POLICY} reply saying so (see {@link #REFUSALS_MAX})
     * @param inFlightPerConnection requests in flight per connection before the reader waits
     * @param payloadBudgetBytes bytes of request payload in pages at once, server-wide; 0 for
     *     the default (three quarters of the arena above its min watermark)
     * @param handshakeTimeoutNanos how long a client may take from connecting to entering
     *     transmission (or, refused, to leaving); then it is disconnected
     * @param idleTimeoutNanos how long a connection in transmission may sit with no request in
     *     flight and none arriving before it is disconnected; 0 for never
     * @param replyTimeoutNanos how long a connection's writer may be unable to send any byte of
     *     its replies (a client not reading them) before the connection is cut; 0 for never
     * @param requestTimeoutNanos how long a request may go from its header to its reply being
     *     ready (its device holds it, or the server waits for budget on its behalf) before the
     *     connection is cut, so that its client sees the stream end instead of waiting for ever on
     *     a device that lost or stalls its I/O; 0 for never
     * @param log where the server's log lines go (accept failures, refusals, timeouts); called
     *     from its tasks, it must not block on the kernel
     * @param tls whether clients may or must use {@code STARTTLS}, with the certificates; null
     *     for {@link ServerTls#OFF}
     */
    public record Options(List<Listener> listeners, int connectionsMax, int inFlightPerConnection,
            long payloadBudgetBytes, long handshakeTimeoutNanos, long idleTimeoutNanos, long replyTimeoutNanos,
            long requestTimeoutNanos, Consumer<String> log, ServerTls tls) {

        /** Default {@link #connectionsMax}. */
        public static final int CONNECTIONS_DEFAULT = 1024;
        /** Upper bound of {@link #connectionsMax}: each connection costs two tasks and a descriptor. */
        public static final int CONNECTIONS_MAX = 65536;
        /** Default {@link #handshakeTimeoutNanos}: 10 s. */
        public static final long HANDSHAKE_TIMEOUT_DEFAULT_NANOS = 10_000_000_000L;
        /** Default {@link #replyTimeoutNanos}: 30 s. */
        public static final long REPLY_TIMEOUT_DEFAULT_NANOS = 30_000_000_000L;
        /**
         * Default {@link #requestTimeoutNanos}: 2 min, past a thin pool's default
         * {@code no_space_timeout} (60 s), so that a full pool fails its requests with an error
         * before the timeout cuts the connection.
         */
        public static final long REQUEST_TIMEOUT_DEFAULT_NANOS = 120_000_000_000L;

        /** Checks the bounds. */
        public Options {
            if (listeners == null || listeners.isEmpty()) {
                throw new IllegalArgumentException("nbd server needs a listen address");
            }
            listeners = List.copyOf(listeners);
            if (connectionsMax < 1 || connectionsMax > CONNECTIONS_MAX) {
                throw new IllegalArgumentException("nbd server options: connections " + connectionsMax
                        + " not in 1.." + CONNECTIONS_MAX);
            }
            if (inFlightPerConnection < 1 || payloadBudgetBytes < 0) {
                throw new IllegalArgumentException("nbd server options: in flight per connection "
                        + inFlightPerConnection + ", payload budget " + payloadBudgetBytes + " must be positive");
            }
            if (handshakeTimeoutNanos <= 0 || idleTimeoutNanos < 0) {
                throw new IllegalArgumentException("nbd server options: handshake timeout " + handshakeTimeoutNanos
                        + " ns must be positive, idle timeout " + idleTimeoutNanos + " ns positive or 0 (off)");
            }
            if (replyTimeoutNanos < 0 || requestTimeoutNanos < 0) {
                throw new IllegalArgumentException("nbd server options: reply timeout " + replyTimeoutNanos
                        + " ns and request timeout " + requestTimeoutNanos + " ns must be positive or 0 (off)");
            }
            if (log == null) {
                throw new IllegalArgumentException("nbd server options: no log");
            }
            if (tls == null) {
                tls = ServerTls.OFF;
            }
        }

        /** Settings for one TCP address. */
        public Options(InetSocketAddress listen, int connectionsMax, int inFlightPerConnection, long payloadBudgetBytes,
                long handshakeTimeoutNanos, long idleTimeoutNanos, long replyTimeoutNanos, Consumer<String> log) {
            this(List.of(Listener.tcp(listen)), connectionsMax, inFlightPerConnection, payloadBudgetBytes,
                    handshakeTimeoutNanos, idleTimeoutNanos, replyTimeoutNanos, REQUEST_TIMEOUT_DEFAULT_NANOS, log,
                    ServerTls.OFF);
        }

        /** The four basic settings with the default timeouts and log (the SLF4J logger {@code io.blkstack.nbd}, info). */
        public Options(InetSocketAddress listen, int connectionsMax, int inFlightPerConnection, long payloadBudgetBytes) {
            this(List.of(Listener.tcp(listen)), connectionsMax, inFlightPerConnection, payloadBudgetBytes,
                    HANDSHAKE_TIMEOUT_DEFAULT_NANOS, 0, REPLY_TIMEOUT_DEFAULT_NANOS, REQUEST_TIMEOUT_DEFAULT_NANOS,
                    line -> LoggerFactory.getLogger("io.blkstack.nbd").info(line), ServerTls.OFF);
        }

        /**
         * 1,024 connections, 64 requests in flight each, the default budget, 10 s handshake timeout,
         * no idle timeout, 30 s reply timeout, 2 min request timeout.
         */
        public static Options defaults(InetSocketAddress listen) {
            return new Options(listen, CONNECTIONS_DEFAULT, 64, 0);
        }

        public Options withConnectionsMax(int value) {
            return new Options(listeners, value, inFlightPerConnection, payloadBudgetBytes, handshakeTimeoutNanos,
                    idleTimeoutNanos, replyTimeoutNanos, requestTimeoutNanos, log, tls);
        }

        public Options withHandshakeTimeoutNanos(long value) {
            return new Options(listeners, connectionsMax, inFlightPerConnection, payloadBudgetBytes, value,
                    idleTimeoutNanos, replyTimeoutNanos, requestTimeoutNanos, log, tls);
        }

        /** 0 turns the idle timeout off. */
        public Options withIdleTimeoutNanos(long value) {
            return new Options(listeners, connectionsMax, inFlightPerConnection, payloadBudgetBytes, handshakeTimeoutNanos,
                    value, replyTimeoutNanos, requestTimeoutNanos, log, tls);
        }

        /** 0 turns the reply timeout off. */
        public Options withReplyTimeoutNanos(long value) {
            return new Options(listeners, connectionsMax, inFlightPerConnection, payloadBudgetBytes, handshakeTimeoutNanos,
                    idleTimeoutNanos, value, requestTimeoutNanos, log, tls);
        }

        /** 0 turns the request timeout off. */
        public Options withRequestTimeoutNanos(long value) {
            return new Options(listeners, connectionsMax, inFlightPerConnection, payloadBudgetBytes, handshakeTimeoutNanos,
                    idleTimeoutNanos, replyTimeoutNanos, value, log, tls);
        }

        /** The same settings on other listeners. */
        public Options withListeners(List<Listener> value) {
            return new Options(value, connectionsMax, inFlightPerConnection, payloadBudgetBytes, handshakeTimeoutNanos,
                    idleTimeoutNanos, replyTimeoutNanos, requestTimeoutNanos, log, tls);
        }

        public Options withTls(ServerTls value) {
            return new Options(listeners, connectionsMax, inFlightPerConnection, payloadBudgetBytes, handshakeTimeoutNanos,
                    idleTimeoutNanos, replyTimeoutNanos, requestTimeoutNanos, log, value);
        }

        public Options withLog(Consumer<String> value) {
            return new Options(listeners, connectionsMax, inFlightPerConnection, payloadBudgetBytes, handshakeTimeoutNanos,
                    idleTimeoutNanos, replyTimeoutNanos, requestTimeoutNanos, value, tls);
        }
    }

    /**
     * Refusals in progress at once. A client past the connection limit is refused politely (the
     * greeting, then {@code NBD_REP_ERR_POLICY} with a message to each option), which costs a task
     * for up to the handshake timeout; past this many, further clients are closed at once.
     */
    static final int REFUSALS_MAX = 8;
    /** First wait after a failed accept; it doubles on each failure in a row up to {@link #ACCEPT_BACKOFF_MAX_NANOS}. */
    static final long ACCEPT_BACKOFF_MIN_NANOS = 10_000_000L;
    /** Longest wait between accept attempts while accept keeps failing. */
    static final long ACCEPT_BACKOFF_MAX_NANOS = 1_000_000_000L;

    /** How the accept task takes the next client: {@link ServerSocketChannel#accept}, or a test's stand-in. */
    @FunctionalInterface
    interface Acceptor {
        SocketChannel accept(ServerSocketChannel listener) throws IOException;
    }

    /** Bios in the reserve of the server's bio set (each connection holds at most one unsubmitted bio). */
    static final int BIO_POOL_SIZE = 4;
    /** Arena pages one bio's vec array takes (the vec slab's objects are page-sized). */
    static final int VEC_ARRAY_PAGES = 1;
    /** Pages this server's bio set keeps in reserve: its vec arrays and a slab page of bios. */
    static final int SERVER_RESERVE_PAGES = BIO_POOL_SIZE * VEC_ARRAY_PAGES + 1;
    /** The payload budget leaves this fraction (1/N) of what is left to targets' transient allocations. */
    static final int TRANSIENT_SHARE_DIVISOR = 8;
    /** The request size an admission error sizes its suggested memory for. */
    static final long REQUEST_BYTES_WANTED = 1L << 20;
    private static final long MiB = 1L << 20;

    private final Kernel kernel;
    /** The SLF4J logger of the connections' open and close lines. */
    public static final String CONNECTION_LOGGER = "io.blkstack.nbd.connection";

    private final Options options;
    /** One line per connection opened and closed. */
    private final Logger connectionLog = LoggerFactory.getLogger(CONNECTION_LOGGER);
    /** One line per failed request. */
    private final IoErrorLog ioErrors = new IoErrorLog();
    /** JFR's handle on the request latency event: asked before one is built. */
    private final EventType requestEventType = EventType.getEventType(NbdRequestEvent.class);
    /** The exports served now; replaced whole (copy on write) under {@link #lock} by {@link #addExport} and {@link #removeExport}. */
    private volatile List<Export> exports;
    /**
     * The request statistics of each export served now, by name; replaced whole with
     * {@link #exports}. A connection takes its export's object when it attaches and counts into it
     * until it ends, also after a forced remove; an export added again under the same name starts
     * from zero.
     */
    private volatile Map<String, ExportStats> exportStats;
    private final BioSet bioSet;
    private final PayloadBudget budget;
    /**
     * The budget's pages, promised in the arena's ledger so that nothing else can take them (null
     * under policy {@code nbd-budget=legacy}, whose budget over-commits on purpose).
     */
    private final Reservation payloadPages;
    private final SpinLock lock = new SpinLock("nbd server");
    private final Set<NbdConnection> connections = new HashSet<>();
    /** The export each connection in transmission serves (guarded by {@link #lock}). */
    private final Map<NbdConnection, Export> attached = new HashMap<>();
    private int refusing;
    private final WaitQueue acceptBackoff = new WaitQueue("nbd accept back-off");
    private final AtomicLong acceptFailures;
    private final AtomicLong refusals;
    private volatile Acceptor acceptor = ServerSocketChannel::accept;
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
    /** The listeners bound by {@link #start}, each with its accept task. */
    private volatile List<BoundListener> bound = List.of();
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
        long budgetPages = admitBudget(kernel, options.payloadBudgetBytes());
        List<Export> fitted = new ArrayList<>();
        long requestPagesMax = 0;
        for (Export e : exports) {
            Export f = fitToBudget(kernel, e, budgetPages);
            fitted.add(f);
            requestPagesMax = Math.max(requestPagesMax, chargePages(f.maximumPayload()));
        }
        this.exports = List.copyOf(fitted);
        Map<String, ExportStats> stats = new HashMap<>();
        for (Export e : fitted) {
            stats.put(e.name(), new ExportStats(e.name()));
        }
        this.exportStats = Map.copyOf(stats);
        this.budget = new PayloadBudget(budgetPages, requestPagesMax);
        this.payloadPages = kernel.policies().isLegacy(PolicySwitch.NBD_BUDGET) ? null
                : kernel.pages().reserve("nbd payload budget", Math.toIntExact(budgetPages));
        this.bioSet = new BioSet(kernel, "nbd", BIO_POOL_SIZE, BIO_POOL_SIZE, null, false);
        this.acceptFailures = kernel.counters().get("nbd.accept-failures");
        this.refusals = kernel.counters().get("nbd.refusals");
        kernel.register(this);
    }

    /**
     * Budget pages one request of {@code payloadBytes} holds until its reply is sent: its payload
     * pages and the vec array of each of its bios (the vec slab hands out page-sized arrays). What
     * a reader charges before it allocates, so an admitted request can always get all of it.
     */
    static long chargePages(long payloadBytes) {
        if (payloadBytes < 0) {
            throw new IllegalArgumentException("payload of " + payloadBytes + " bytes");
        }
        long pages = (payloadBytes + Page.SIZE - 1) >>> Page.SHIFT;
        long bios = (payloadBytes + NbdConnection.BIO_BYTES_MAX - 1) / NbdConnection.BIO_BYTES_MAX;
        return pages + bios * VEC_ARRAY_PAGES;
    }

    /**
     * The most a request of {@code payloadBytes} can be charged: a READ with structured replies
     * runs a bio chain per data extent (up to {@link NbdConnection#READ_EXTENTS_MAX}), each with
     * its own vec array and its own partly used last page.
     */
    static long chargePagesWorst(long payloadBytes) {
        return chargePages(payloadBytes) + 2L * (NbdConnection.READ_EXTENTS_MAX - 1);
    }

    /**
     * The payload budget in pages (DESIGN.md section 3, "Admission, not hope"): what the arena has
     * left now, once the stack is built (targets' pools, copy buffers, caches' reserves), less the
     * pages above the low watermark that reclaim keeps, the reserves of this server's own bio set,
     * and an eighth for what targets allocate and give back while I/O runs (slab growth, cache
     * buffers that reclaim can take back). Never a fraction of the arena's size: a stack that keeps
     * a quarter of the arena would then be promised pages that do not exist, and readers holding
     * part of their pages would wait for each other for ever. An explicit budget that would
     * over-commit what is left is refused.
     */
    private static long admitBudget(Kernel kernel, long explicitBytes) {
        if (kernel.policies().isLegacy(PolicySwitch.NBD_BUDGET)) {
            return legacyBudget(kernel, explicitBytes);
        }
        PageAllocator pages = kernel.pages();
        long left = pages.availablePages() - pages.lowPages() - SERVER_RESERVE_PAGES;
        long computed = left - left / TRANSIENT_SHARE_DIVISOR;
        if (explicitBytes == 0) {
            return Math.max(0, computed);
        }
        long explicitPages = explicitBytes / Page.SIZE;
        if (explicitPages > Math.max(0, computed)) {
            throw new MemoryAdmissionException("payload budget of " + explicitPages + " pages over-commits the arena: "
                    + describeArena(kernel) + ", " + Math.max(0, computed) + " left for payload");
        }
        return explicitPages;
    }

    /**
     * The budget as it was sized before admission (policy {@code nbd-budget=legacy}, for the
     * checker only): three quarters of the whole arena above its min watermark, or the explicit
     * budget unchecked, whatever the stack already keeps. With a stack that keeps a good part of the
     * arena this promises pages that do not exist, and readers holding part of their pages wait in
     * the page allocator for each other: the over-commit the checker must find.
     */
    private static long legacyBudget(Kernel kernel, long explicitBytes) {
        PageAllocator pages = kernel.pages();
        long bytes = explicitBytes != 0 ? explicitBytes
                : (long) (pages.totalPages() - pages.minPages()) * Page.SIZE * 3 / 4;
        return bytes / Page.SIZE;
    }

    /**
     * The fewest free arena pages with which a server of {@code export} is admitted: a payload
     * budget that holds two of its worst-charged requests of the preferred block size, plus what
     * admission sets aside (reclaim's low watermark, this server's reserves, the targets' share).
     * The checker's pressure leaves this many, so that a run tests the smallest budget serve accepts.
     */
    public static int admissionFreePagesMin(Kernel kernel, Export export) {
        long budget = 2 * chargePagesWorst(Math.max(export.preferredBlockSize(), export.minimumBlockSize()));
        long left = budget;
        while (left - left / TRANSIENT_SHARE_DIVISOR < budget) {
            left++; // at most budget / 7 + 1 steps
        }
        return Math.toIntExact(left + kernel.pages().lowPages() + SERVER_RESERVE_PAGES);
    }

    /** The arena in numbers, for admission errors: its size, what the stack keeps, what reclaim keeps. */
    private static String describeArena(Kernel kernel) {
        PageAllocator pages = kernel.pages();
        int total = pages.totalPages();
        int kept = total - pages.freePages();
        return "page arena of " + total + " pages (" + Sizes.format((long) total * Page.SIZE) + "), the stack keeps "
                + kept + " (" + Sizes.format((long) kept * Page.SIZE) + "), reclaim keeps " + pages.lowPages()
                + " free and this server's reserves take " + SERVER_RESERVE_PAGES + " (" + pages.describeLedger() + ")";
    }

    /**
     * The export with its maximum payload lowered to the largest power of two whose charge fits half
     * the budget; refused, with the numbers and the memory that would do, when not even one request of
     * the preferred block size fits.
     */
    private static Export fitToBudget(Kernel kernel, Export e, long budgetPages) {
        if (kernel.policies().isLegacy(PolicySwitch.NBD_BUDGET)) {
            return legacyFit(e, budgetPages * Page.SIZE);
        }
        long requestPagesMax = budgetPages / 2; // room for a second connection's request (PayloadBudget)
        if (chargePagesWorst(e.maximumPayload()) <= requestPagesMax) {
            return e;
        }
        long max = Long.highestOneBit(Math.max(1, e.maximumPayload()));
        while (max >= e.preferredBlockSize() && chargePagesWorst(max) > requestPagesMax) {
            max >>>= 1;
        }
        if (max < e.preferredBlockSize() || max < e.minimumBlockSize()) {
            long missing = 2 * chargePagesWorst(Math.max(e.preferredBlockSize(), REQUEST_BYTES_WANTED))
                    - Math.max(0, budgetPages);
            long grow = (missing * TRANSIENT_SHARE_DIVISOR / (TRANSIENT_SHARE_DIVISOR - 1) + 1) * Page.SIZE;
            long total = (long) kernel.pages().totalPages() * Page.SIZE;
            long wanted = ((total + grow) * 65 / 64 + MiB - 1) / MiB * MiB;
            throw new MemoryAdmissionException("export " + e.name() + ": the payload budget of " + Math.max(0, budgetPages)
                    + " pages cannot hold one request of " + e.preferredBlockSize() + " bytes: " + describeArena(kernel)
                    + "; about " + Sizes.format(wanted) + " of memory would serve requests of "
                    + Sizes.format(REQUEST_BYTES_WANTED));
        }
        return e.withMaximumPayload((int) max);
    }

    /** The export with its maximum payload lowered to the largest power of two within the budget (legacy sizing). */
    private static Export legacyFit(Export e, long budgetBytes) {
        if (e.maximumPayload() <= budgetBytes) {
            return e;
        }
        long max = Long.highestOneBit(Math.max(1, budgetBytes));
        if (max < e.preferredBlockSize()) {
            throw new MemoryAdmissionException("export " + e.name() + ": payload budget " + budgetBytes
                    + " bytes is below the preferred block size " + e.preferredBlockSize());
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
        List<BoundListener> all = new ArrayList<>();
        try {
            for (Listener l : options.listeners()) {
                all.add(bind(l));
            }
        } catch (IOException | RuntimeException e) {
            for (BoundListener b : all) {
                b.close();
            }
            throw e;
        }
        bound = List.copyOf(all);
        for (int i = 0; i < all.size(); i++) {
            BoundListener b = all.get(i);
            kernel.spawn(i == 0 ? "nbd-accept" : "nbd-accept-" + i, TaskKind.USER, () -> acceptLoop(b));
        }
    }

    /**
     * Binds one listener: a TCP address with {@code SO_REUSEADDR}, or a Unix socket file claimed
     * first (a stale socket is replaced, a live one refused) and created with its mode.
     */
    private BoundListener bind(Listener l) throws IOException {
        if (l.isUnix()) {
            UnixSocketFile.claim(l.unixPath(), "nbd socket", "listen", this::log);
            ServerSocketChannel channel = UnixSocketFile.bind(l.unixPath(), l.unixMode());
            return new BoundListener(l, channel, UnixDomainSocketAddress.of(l.unixPath()),
                    UnixSocketFile.fileKey(l.unixPath()));
        }
        ServerSocketChannel channel = ServerSocketChannel.open();
        try {
            channel.setOption(StandardSocketOptions.SO_REUSEADDR, true);
            channel.bind(l.tcp());
            return new BoundListener(l, channel, channel.getLocalAddress(), null);
        } catch (IOException | RuntimeException e) {
            channel.close();
            throw new IOException(l + ": " + e.getMessage(), e);
        }
    }

    /**
     * One bound listener: its channel, the address clients reach (the real port of a TCP
     * listener bound to port 0), the socket file's identity, and the end of its accept task.
     */
    private static final class BoundListener {
        final Listener spec;
        final ServerSocketChannel channel;
        final SocketAddress address;
        final Object fileKey;
        final Completion acceptDone;

        BoundListener(Listener spec, ServerSocketChannel channel, SocketAddress address, Object fileKey) {
            this.spec = spec;
            this.channel = channel;
            this.address = address;
            this.fileKey = fileKey;
            this.acceptDone = new Completion("nbd accept done " + spec);
        }

        /** Closes the channel and removes the socket file if it is still the one bound. */
        void close() {
            try {
                channel.close();
            } catch (IOException e) {
                // nothing to do
            }
            if (spec.isUnix()) {
                UnixSocketFile.removeIfOurs(spec.unixPath(), fileKey);
            }
        }
    }

    /** The first TCP listener's bound address (with the real port when the options asked for port 0). */
    public InetSocketAddress localAddress() {
        List<BoundListener> all = bound;
        if (all.isEmpty()) {
            throw new IllegalStateException("nbd server not started");
        }
        for (BoundListener b : all) {
            if (b.address instanceof InetSocketAddress tcp) {
                return tcp;
            }
        }
        throw new IllegalStateException("nbd server listens on no TCP address: " + options.listeners());
    }

    /**
     * Every bound address in the order of {@link Options#listeners}: an {@link InetSocketAddress}
     * (with its real port) or a {@link UnixDomainSocketAddress}; empty before {@link #start}.
     */
    public List<SocketAddress> boundAddresses() {
        List<SocketAddress> out = new ArrayList<>();
        for (BoundListener b : bound) {
            out.add(b.address);
        }
        return out;
    }

    /** The exports as served (maximum payload possibly lowered to the budget). */
    public List<Export> exports() {
        return exports;
    }

    /**
     * Adds an export at run time (the control socket's {@code export add}); new clients can
     * negotiate it at once. Its maximum payload is lowered to fit the payload budget as at
     * construction, and never above what the budget was sized for. Returns the export as served.
     *
     * @throws IllegalArgumentException the name is taken, or the budget cannot hold one request of it
     */
    public Export addExport(Export export) {
        Export fitted = fitToBudget(kernel, export, budget.totalPages());
        long max = fitted.maximumPayload();
        while (chargePages(max) > budget.requestPagesMax() && max / 2 >= fitted.preferredBlockSize()) {
            max /= 2;
        }
        if (chargePages(max) > budget.requestPagesMax()) {
            throw new IllegalArgumentException("export " + export.name() + ": a request of " + max
                    + " bytes does not fit this server's payload budget");
        }
        fitted = fitted.withMaximumPayload((int) max);
        lock.lock();
        try {
            for (Export e : exports) {
                if (e.name().equals(export.name())) {
                    throw new IllegalArgumentException("export '" + export.name() + "' exists (device "
                            + e.device().name() + ")");
                }
            }
            List<Export> next = new ArrayList<>(exports);
            next.add(fitted);
            Map<String, ExportStats> stats = new HashMap<>(exportStats);
            stats.put(fitted.name(), new ExportStats(fitted.name()));
            exports = List.copyOf(next);
            exportStats = Map.copyOf(stats);
        } finally {
            lock.unlock();
        }
        return fitted;
    }

    /**
     * Removes an export at run time: new clients can no longer negotiate it. Without
     * {@code force} it is refused while clients are connected to it; with {@code force} their
     * input is ended, so each connection finishes its in-flight requests, sends their replies and
     * closes (as a drain does). Returns how many connections were told to close.
     *
     * @throws IllegalArgumentException no such export
     * @throws IllegalStateException clients are connected and {@code force} is false (nothing changed)
     */
    public int removeExport(String name, boolean force) {
        List<NbdConnection> clients = new ArrayList<>();
        lock.lock();
        try {
            Export found = null;
            for (Export e : exports) {
                if (e.name().equals(name)) {
                    found = e;
                }
            }
            if (found == null) {
                throw new IllegalArgumentException("no export '" + name + "'");
            }
            for (Map.Entry<NbdConnection, Export> a : attached.entrySet()) {
                if (a.getValue() == found) {
                    clients.add(a.getKey());
                }
            }
            if (!clients.isEmpty() && !force) {
                throw new IllegalStateException("export '" + name + "' has " + clients.size()
                        + " client(s) connected; remove it with force to close them after their in-flight requests");
            }
            List<Export> next = new ArrayList<>(exports);
            next.remove(found);
            Map<String, ExportStats> stats = new HashMap<>(exportStats);
            stats.remove(name);
            exports = List.copyOf(next);
            exportStats = Map.copyOf(stats);
        } finally {
            lock.unlock();
        }
        for (NbdConnection c : clients) {
            c.shutdownInput();
        }
        return clients.size();
    }

    /** How many connections are serving export {@code name} now. */
    public int clientCount(String name) {
        lock.lock();
        try {
            int n = 0;
            for (Export e : attached.values()) {
                n += e.name().equals(name) ? 1 : 0;
            }
            return n;
        } finally {
            lock.unlock();
        }
    }

    /** How many connections are serving an export of {@code device} now (also of exports already removed). */
    public int clientCountOn(io.blkstack.block.BlockDevice device) {
        lock.lock();
        try {
            int n = 0;
            for (Export e : attached.values()) {
                n += e.device() == device ? 1 : 0;
            }
            return n;
        } finally {
            lock.unlock();
        }
    }

    /**
     * A connection that negotiated {@code export} enters transmission, and gets the statistics it
     * counts its requests into: null if the export was removed meanwhile (the client negotiated
     * from the list as it was), and the connection ends.
     */
    ExportStats attach(NbdConnection connection, Export export) {
        lock.lock();
        try {
            if (!exports.contains(export)) {
                return null;
            }
            attached.put(connection, export);
            return exportStats.get(export.name());
        } finally {
            lock.unlock();
        }
    }

    /** The request statistics of the export {@code name} served now, or null if there is none. */
    public ExportStats exportStats(String name) {
        return exportStats.get(name);
    }

    /** Connections currently open (served, and refusals under way). */
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

    /** The promise the payload pages are taken through, or null under the legacy budget. */
    Reservation payloadPages() {
        return payloadPages;
    }

    /** The options the server runs with. */
    public Options options() {
        return options;
    }

    /** The log line of each failed request (non-blocking; see {@link IoErrorLog}). */
    IoErrorLog ioErrors() {
        return ioErrors;
    }

    /** Whether a JFR recording wants {@link NbdRequestEvent}s now: a flag read, nothing allocated. */
    boolean requestEventsEnabled() {
        return requestEventType.isEnabled();
    }

    /**
     * Logs a connection opening or closing (SLF4J logger {@link #CONNECTION_LOGGER}, info). Not
     * through {@link Options#log}: that one carries what went wrong, and every client's coming and
     * going would drown it.
     */
    void logConnection(String line) {
        connectionLog.info("nbd: {}", line);
    }

    /** Writes one line to the server's log. */
    void log(String line) {
        options.log().accept("nbd: " + line);
    }

    /** Replaces how the accept task takes clients (tests inject accept failures); call before {@link #start}. */
    void acceptWith(Acceptor value) {
        if (started) {
            throw new IllegalStateException("nbd server: acceptor replaced after start");
        }
        this.acceptor = value;
    }

    /**
     * The accept task: a reader task per accepted connection, until the listener closes. A failed
     * accept ({@code EMFILE}, {@code ENFILE}, {@code ENOBUFS}, any I/O error) is logged and retried
     * after a back-off that doubles from 10 ms to 1 s and resets on the next success: the pending
     * client stays in the listen backlog, so once descriptors are free it is served. The back-off
     * is a kernel wait that {@link #close} cuts short.
     */
    private void acceptLoop(BoundListener listening) {
        long backoffNanos = 0;
        int failuresInRow = 0;
        try {
            while (!isClosed()) {
                SocketChannel channel;
                try {
                    channel = acceptor.accept(listening.channel);
                } catch (ClosedChannelException e) {
                    return; // close() closed the listener (AsynchronousCloseException is one too)
                } catch (IOException e) {
                    if (isClosed()) {
                        return;
                    }
                    failuresInRow++;
                    acceptFailures.incrementAndGet();
                    backoffNanos = backoffNanos == 0 ? ACCEPT_BACKOFF_MIN_NANOS
                            : Math.min(2 * backoffNanos, ACCEPT_BACKOFF_MAX_NANOS);
                    log("accept failed (" + failuresInRow + " in a row): " + e.getMessage() + "; retrying in "
                            + formatNanos(backoffNanos));
                    acceptBackoff.waitEventTimeout(this::isClosed, "nbd accept back-off", backoffNanos, true);
                    continue;
                }
                if (failuresInRow > 0) {
                    log("accepting again after " + failuresInRow + " failed accept(s)");
                    failuresInRow = 0;
                    backoffNanos = 0;
                }
                serveAccepted(listening, channel);
            }
        } finally {
            listening.acceptDone.completeAll();
        }
    }

    /** Starts serving, or refusing, one accepted client; a failure here costs only that client. */
    private void serveAccepted(BoundListener listening, SocketChannel channel) {
        String name = "nbd-" + connectionIds.incrementAndGet();
        // A Unix client's address is unnamed: the socket it came in on says more.
        String peer = listening.spec.isUnix() ? "unix:" + listening.spec.unixPath() : peerOf(channel);
        if (!listening.spec.isUnix()) {
            try {
                channel.setOption(StandardSocketOptions.TCP_NODELAY, true);
            } catch (IOException e) {
                log(name + " (" + peer + "): dropped: cannot set TCP_NODELAY: " + e.getMessage());
                closeQuietly(channel);
                return;
            }
        }
        int maxPayload = 0;
        for (Export e : exports) {
            maxPayload = Math.max(maxPayload, e.maximumPayload());
        }
        NbdConnection connection = new NbdConnection(this, new SocketTransport(channel), name, peer, options.inFlightPerConnection(),
                maxPayload);
        switch (admit(connection)) {
            case SERVE -> spawnOrDrop(connection, name + "-reader", connection::runReader);
            case REFUSE -> {
                refusals.incrementAndGet();
                String message = refusalMessage();
                log("refused " + name + " from " + peer + ": " + message);
                spawnOrDrop(connection, name + "-refusal", () -> connection.runRefusal(message));
            }
            case DROP -> {
                refusals.incrementAndGet();
                log("dropped " + name + " from " + peer + ": " + refusalMessage() + ", and " + REFUSALS_MAX
                        + " refusals are already under way");
                closeQuietly(channel);
            }
            case CLOSING -> closeQuietly(channel);
        }
    }

    /**
     * Whether this JVM lets a connection's reader send on a socket without waiting (the policy
     * {@code inline-reply}): native access and {@code java.base/sun.nio.ch} exported to this code,
     * as the launcher and the jar's manifest give. Without it socket clients get every reply from
     * their connection's writer task.
     */
    public static boolean inlineRepliesAvailable() {
        return SendNow.available();
    }

    /**
     * Opens an in-process connection to {@code exportName}: a connection like an accepted client's
     * (same reader, writer, payload budget and bio set), already in transmission, over a pair of
     * kernel-wait pipes instead of a socket. The checker's NBD workloads enter through it; the
     * server need not be {@link #start started}. Counts against the connection limit.
     *
     * @throws IllegalArgumentException for an unknown export
     * @throws IllegalStateException when the server is closing or the connection limit is reached
     */
    public InProcessClient connectInProcess(String exportName) {
        Export export = null;
        for (Export e : exports) {
            if (e.name().equals(exportName)) {
                export = e;
            }
        }
        if (export == null) {
            throw new IllegalArgumentException("nbd server: no export '" + exportName + "'");
        }
        String name = "nbd-local-" + connectionIds.incrementAndGet();
        InProcessClient client = new InProcessClient(name, export);
        NbdConnection connection = new NbdConnection(this, client.serverEnd(), name, "in-process",
                options.inFlightPerConnection(), export.maximumPayload());
        client.attach(connection);
        Admission admission = admit(connection);
        if (admission != Admission.SERVE) {
            if (admission == Admission.REFUSE) {
                connectionEnded(connection);
            }
            throw new IllegalStateException("nbd server: in-process connection to " + exportName + " not served ("
                    + admission + ")");
        }
        NbdHandshake.Negotiated negotiated = new NbdHandshake.Negotiated(export, false, false, false);
        spawnOrDrop(connection, name + "-reader", () -> connection.runReader(negotiated));
        return client;
    }

    /**
     * Starts an admitted connection's first task; if no task can be started (no thread to be had:
     * the process's thread limit, or memory), the connection ends at once and the server goes on.
     */
    private void spawnOrDrop(NbdConnection connection, String taskName, Runnable body) {
        try {
            kernel.spawn(taskName, TaskKind.USER, body);
        } catch (RuntimeException | OutOfMemoryError e) {
            log("dropped " + connection.name() + ": cannot start its task: " + e);
            connection.endUnstarted();
        }
    }

    /** The message a client past the limit gets. */
    private String refusalMessage() {
        return "too many connections (limit " + options.connectionsMax() + ")";
    }

    /** What {@link #admit} decided for a new client. */
    private enum Admission { SERVE, REFUSE, DROP, CLOSING }

    /**
     * Adds a connection to serve, or to refuse when the limit is reached (at most
     * {@link #REFUSALS_MAX} refusals at once); nothing when closing.
     */
    private Admission admit(NbdConnection connection) {
        lock.lock();
        try {
            if (closed || stopping) {
                return Admission.CLOSING;
            }
            if (connections.size() - refusing < options.connectionsMax()) {
                connections.add(connection);
                return Admission.SERVE;
            }
            if (refusing >= REFUSALS_MAX) {
                return Admission.DROP;
            }
            connection.refused = true;
            connections.add(connection);
            refusing++;
            return Admission.REFUSE;
        } finally {
            lock.unlock();
        }
    }

    /** A connection's last act: leave the table. */
    void connectionEnded(NbdConnection connection) {
        lock.lock();
        try {
            if (connections.remove(connection) && connection.refused) {
                refusing--;
            }
            attached.remove(connection);
        } finally {
            lock.unlock();
        }
        drainWait.wakeAll();
    }

    /** The client's address for log lines. */
    private static String peerOf(SocketChannel channel) {
        try {
            return String.valueOf(channel.getRemoteAddress());
        } catch (IOException e) {
            return "(unknown peer)";
        }
    }

    private static void closeQuietly(SocketChannel channel) {
        try {
            channel.close();
        } catch (IOException e) {
            // nothing left to do with it
        }
    }

    /** A duration for log lines: whole seconds, else milliseconds, else nanoseconds. */
    public static String formatNanos(long nanos) {
        if (nanos % 1_000_000_000L == 0) {
            return nanos / 1_000_000_000L + "s";
        }
        if (nanos % 1_000_000L == 0) {
            return nanos / 1_000_000L + "ms";
        }
        return nanos + "ns";
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
        List<BoundListener> all = bound;
        if (all.isEmpty()) {
            return "nbd server (not started)";
        }
        StringBuilder sb = new StringBuilder("nbd server");
        for (BoundListener b : all) {
            sb.append(' ').append(b.spec.isUnix() ? "unix:" + b.spec.unixPath() : b.address);
        }
        return sb.toString();
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
        List<BoundListener> all = bound;
        for (BoundListener b : all) {
            b.close();
        }
        acceptBackoff.wakeAll();
        for (BoundListener b : all) {
            b.acceptDone.await();
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
        if (payloadPages != null) {
            payloadPages.close();
        }
    }

    /**
     * The server-wide count of pages that admitted requests may hold (payload pages and one vec
     * array per bio), shared fairly between connections. A reader waits here before it allocates a
     * request's pages, so every admitted request can get all of them: the budget was computed from
     * what the arena had left once the stack and this server were built (rule 5 of DESIGN.md
     * section 1: backpressure is a wait on a reserve, never on memory that may not come back).
     *
     * <p>Fair share: a connection that already holds pages may take more only up to
     * {@code max(one maximum request, (total - one maximum request) / participants)}, where the
     * participants are the connections holding or waiting for budget; a connection holding nothing
     * may always take one request when the pages are free. Even alone, a connection leaves room for
     * one maximum request of another, so a client that never reads its replies (its requests keep
     * their pages until the replies leave) cannot keep an active client out; as soon as others
     * wait, the first stops growing and the pages it returns go to them. The advertised maximum
     * request is at most half the budget, so that room always exists.
     *
     * <p>First come, first served for space: a connection whose request is within its fair share
     * but finds too few pages free joins a queue, and while it is queued no later request takes
     * pages, even one small enough for what is free. Otherwise a large request, woken with the
     * others whenever pages come back, could find them taken by smaller ones every time (the soak
     * at a 4 MiB arena saw single connections wait 6-11 s). A queued connection that is over its
     * fair share or going away leaves the queue and wakes the others to re-check.
     */
    static final class PayloadBudget {
        private final long totalPages;
        private final long requestPagesMax;
        private final SpinLock lock = new SpinLock("nbd payload budget");
        /** Connections waiting beyond their fair share (they wait for their own pages to come back). */
        private final WaitQueue overShare = new WaitQueue("nbd payload budget");
        // Guarded by lock.
        private long free;
        private int participants;
        /** Connections waiting for space, oldest first (intrusive: one wait per connection at a time). */
        private Share queueHead;
        private Share queueTail;

        /** One connection's holding. */
        static final class Share {
            private long held;
            private boolean waiting;
            /** In the queue of connections waiting for space (guarded by the budget's lock). */
            private boolean queued;
            private Share nextQueued;
            /** Pages the queued request needs. */
            private int want;
            /** Where this connection's reader waits while queued: woken only when it may go. */
            private final WaitQueue turn = new WaitQueue("nbd payload budget");

            long heldPages() {
                return held;
            }
        }

        PayloadBudget(long pages, long requestPagesMax) {
            if (pages < 1 || requestPagesMax < 1) {
                throw new IllegalArgumentException("nbd payload budget of " + pages + " pages with requests of up to "
                        + requestPagesMax + " pages");
            }
            this.totalPages = pages;
            this.requestPagesMax = requestPagesMax;
            this.free = pages;
        }

        /**
         * Waits until {@code pages} are free and within the connection's fair share, and takes
         * them; returns false, having taken nothing, if {@code ending} turns true first (the
         * connection is going away: its wait must end too, see {@link #wakeWaiters}).
         *
         * <p>A connection queued for space waits on its own wait queue and is woken only when it
         * is first in line with its pages free, so a release wakes one reader, not all of them
         * (with 64 connections waiting, waking all of them for every release cut a soak's
         * throughput tenfold). A connection over its fair share waits on the shared queue, woken
         * when pages of its own come back or the participants change.
         */
        boolean acquire(Share share, int pages, BooleanSupplier ending) {
            if (pages > totalPages) {
                throw new IllegalArgumentException("request of " + pages + " pages exceeds the budget of " + totalPages);
            }
            while (true) {
                if (tryTake(share, pages)) {
                    return true; // the common case: no wait, and no condition object built
                }
                if (ending.getAsBoolean()) {
                    leave(share);
                    return false;
                }
                if (isQueued(share)) {
                    share.turn.waitEvent(() -> ending.getAsBoolean() || mayGo(share, pages), this);
                } else {
                    overShare.waitEvent(() -> ending.getAsBoolean() || isFair(share, pages), this);
                }
            }
        }

        private boolean isQueued(Share share) {
            lock.lock();
            try {
                return share.queued;
            } finally {
                lock.unlock();
            }
        }

        /** Whether the queued connection is first in line with its pages free (or no longer within its share). */
        private boolean mayGo(Share share, int pages) {
            lock.lock();
            try {
                return !share.queued || (queueHead == share && free >= pages) || !fairLocked(share, pages);
            } finally {
                lock.unlock();
            }
        }

        private boolean isFair(Share share, int pages) {
            lock.lock();
            try {
                return fairLocked(share, pages);
            } finally {
                lock.unlock();
            }
        }

        private boolean fairLocked(Share share, int pages) {
            long fairShare = Math.max(requestPagesMax, (totalPages - requestPagesMax) / Math.max(1, participants));
            return share.held == 0 || share.held + pages <= fairShare;
        }

        /** A connection that stopped waiting without taking anything is no longer a participant. */
        private void leave(Share share) {
            Share next;
            boolean fewer = false;
            lock.lock();
            try {
                next = dequeueLocked(share) ? nextToGoLocked() : null;
                if (share.waiting) {
                    share.waiting = false;
                    if (share.held == 0) {
                        participants--;
                        fewer = true;
                    }
                }
            } finally {
                lock.unlock();
            }
            wake(next, fewer);
        }

        /** Wakes every waiter to re-check (a connection ending, so its reader stops waiting). */
        void wakeWaiters() {
            List<Share> queued = new ArrayList<>();
            lock.lock();
            try {
                for (Share q = queueHead; q != null; q = q.nextQueued) {
                    queued.add(q);
                }
            } finally {
                lock.unlock(); // even if the list cannot grow: every connection's budget goes through this lock
            }
            overShare.wakeAll();
            for (Share q : queued) {
                q.turn.wakeAll();
            }
        }

        /**
         * Takes the pages if free, fair and no older connection waits for space; otherwise marks
         * the connection waiting (a participant), queued for space if it is within its share.
         */
        private boolean tryTake(Share share, int pages) {
            boolean taken;
            Share next = null;
            lock.lock();
            try {
                boolean fair = fairLocked(share, pages);
                boolean first = queueHead == null || queueHead == share;
                if (share.held == 0 && !share.waiting) {
                    participants++;
                }
                if (fair && first && free >= pages) {
                    if (dequeueLocked(share)) {
                        next = nextToGoLocked();
                    }
                    share.waiting = false;
                    share.held += pages;
                    free -= pages;
                    taken = true;
                } else {
                    share.waiting = true;
                    taken = false;
                    if (fair && !share.queued) {
                        share.want = pages;
                        enqueueLocked(share);
                    } else if (!fair && dequeueLocked(share)) {
                        // Over its share it must not hold up those behind it: it waits for its own pages.
                        next = nextToGoLocked();
                    }
                }
            } finally {
                lock.unlock();
            }
            wake(next, false);
            return taken;
        }

        /** Under the lock: the first in line if its pages are free (it should be woken), else null. */
        private Share nextToGoLocked() {
            return queueHead != null && free >= queueHead.want ? queueHead : null;
        }

        /** Wakes the connection that may go now, and those over their share if the participants fell. */
        private void wake(Share next, boolean fewerParticipants) {
            if (next != null) {
                next.turn.wakeAll();
            }
            if (fewerParticipants) {
                overShare.wakeAll();
            }
        }

        private void enqueueLocked(Share share) {
            share.queued = true;
            share.nextQueued = null;
            if (queueTail == null) {
                queueHead = share;
            } else {
                queueTail.nextQueued = share;
            }
            queueTail = share;
        }

        /** Removes {@code share} from the space queue; true if it was the head (others may go now). */
        private boolean dequeueLocked(Share share) {
            if (!share.queued) {
                return false;
            }
            boolean head = queueHead == share;
            Share prev = null;
            for (Share q = queueHead; q != null; prev = q, q = q.nextQueued) {
                if (q == share) {
                    if (prev == null) {
                        queueHead = q.nextQueued;
                    } else {
                        prev.nextQueued = q.nextQueued;
                    }
                    if (queueTail == q) {
                        queueTail = prev;
                    }
                    break;
                }
            }
            share.queued = false;
            share.nextQueued = null;
            return head;
        }

        /**
         * Returns pages the connection held; wakes the first in line if its pages are now free, and
         * the connections over their share if this one's own pages came back or the participants fell.
         */
        void release(Share share, long pages) {
            if (pages == 0) {
                return;
            }
            Share next;
            boolean overShareMayGo;
            lock.lock();
            try {
                if (pages > share.held) {
                    throw new IllegalStateException("nbd payload budget: a connection returns " + pages
                            + " pages but holds " + share.held);
                }
                share.held -= pages;
                free += pages;
                boolean fewer = share.held == 0 && !share.waiting;
                if (fewer) {
                    participants--;
                }
                if (free > totalPages) {
                    throw new IllegalStateException("nbd payload budget over-released: " + free + " > " + totalPages);
                }
                next = nextToGoLocked();
                overShareMayGo = fewer || (share.waiting && !share.queued);
            } finally {
                lock.unlock();
            }
            wake(next, overShareMayGo);
        }

        /** Free pages now; a snapshot for explanations and tests. */
        long freePages() {
            lock.lock();
            try {
                return free;
            } finally {
                lock.unlock();
            }
        }

        long totalPages() {
            return totalPages;
        }

        /** The largest request charge the budget was sized for. */
        long requestPagesMax() {
            return requestPagesMax;
        }

        @Override
        public String toString() {
            return "nbd payload budget (" + free + "/" + totalPages + " pages free, " + participants
                    + " connection(s) holding or waiting)";
        }
    }
}
