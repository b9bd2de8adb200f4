package io.blkstack.cli;

import io.blkstack.block.BlockDevice;
import io.blkstack.block.MemoryDevice;
import io.blkstack.config.ConfigException;
import io.blkstack.config.ListenAddress;
import io.blkstack.config.Stack;
import io.blkstack.config.StackConfig;
import io.blkstack.control.ControlServer;
import io.blkstack.control.LiveStack;
import io.blkstack.control.MetricsServer;
import io.blkstack.kernel.Completion;
import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.sim.Knot;
import io.blkstack.nbd.Export;
import io.blkstack.nbd.Listener;
import io.blkstack.nbd.NbdServer;
import io.blkstack.nbd.ServerTls;
import io.blkstack.units.Durations;
import io.blkstack.units.Sizes;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.UnixDomainSocketAddress;
import java.net.UnknownHostException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.time.Duration;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicInteger;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;
import sun.misc.Signal;
import sun.misc.SignalHandler;

/**
 * {@code blkstack serve}: builds a stack from a YAML configuration (or the embedded default,
 * {@code default-stack.yaml}: sparse files in {@code ./blkstack-data/}) and exports it over NBD.
 *
 * <p>Start-up: a {@link Kernel} with the page arena ({@code --memory}, else the configuration's
 * {@code memory}), the {@link Stack}, an {@link NbdServer} on the listen address ({@code --listen},
 * else the configuration's {@code listen}, else 127.0.0.1:10809; port 0 picks a free port and the
 * real one is printed). It prints each export's URI and an example {@code nbdinfo} command, then
 * the line {@code blkstack serve: ready}, which scripts and tests wait for. Binding beyond loopback
 * prints a warning: NBD has no authentication here, anyone who can reach the port can write.
 *
 * <p>Shutdown: SIGINT and SIGTERM are handled (not left to the JVM's shutdown, which would race the
 * drain and end the process with 128 + the signal number): the handler only wakes the serving
 * thread, which stops accepting and drains connections ({@link NbdServer#drain}) for at most the
 * drain timeout ({@code --drain-timeout}, else the configuration's {@code drain-timeout}, else
 * 30 s). A second SIGINT or SIGTERM ends the drain at once (and puts the JVM's handlers back, so a
 * third one kills the process). Whatever is still in flight then is failed back: bios that targets
 * hold back waiting for a resource that may never come (a full thin pool's queued writes) fail
 * with EIO, so their clients get error replies; connections still open after a short grace are cut
 * (their clients see the connection end). Then a FLUSH goes to every device
 * ({@link Stack#flushAll}, bounded too), the stack and the kernel are closed (which checks that
 * every page came back), and the exit code is 0, or 2 if a flush failed or any request had to be
 * failed. If devices still hold requests, nothing waits for them: the process exits 2 without
 * closing the devices, after saying which requests they hold.
 *
 * <p>Every wait in this sequence has an end (DESIGN.md's promise): the drain and the flush have
 * deadlines, and a hung-task watchdog ({@code --hung-task-timeout}, 30 s by default) reports any
 * task blocked longer than that with the checker's wait-for explanation ({@link Knot#explainWait}):
 * what it waits on, and who holds it, down to a thin pool's out-of-data-space queue.
 *
 * <p>Control: once the NBD server listens, a control socket ({@code --control}, else the
 * configuration's {@code control}, else {@code blkstack-data/control.sock}) serves the live
 * control plane ({@link ControlServer}, {@code blkstack ctl}); a path another live server answers
 * on is refused (exit 2). It is closed first when the server stops, so no live change races the
 * drain.
 *
 * <p>Metrics: with {@code --metrics ADDR:PORT} (else the configuration's {@code metrics}) a
 * Prometheus {@code /metrics} endpoint ({@link MetricsServer}) serves the devices' statistics and
 * the kernel's counters, announced before the ready line; beyond loopback it warns as the NBD
 * listener does. It is closed after the drain, so the drain can be watched.
 *
 * <p>Configuration errors exit 1 with the file, line and value; I/O errors (a backing file that
 * cannot be created, a port in use) exit 2.
 *
 * <p>Logs: what happens while serving (warnings, the NBD server's lines, the control plane's
 * changes, hung-task reports, the shutdown steps) goes through SLF4J loggers below
 * {@code io.blkstack} at the level of {@code --log-level} (else the configuration's
 * {@code log-level}, else info); {@code logback.xml} prints them on standard error as
 * {@code blkstack serve: MESSAGE}, the lines serve always printed. The message that ends the
 * command with an error code is the command's result, not a log line: it goes to the command's
 * error stream like picocli's usage errors, whatever the level.
 */
@Command(
        name = "serve",
        mixinStandardHelpOptions = true,
        versionProvider = BlkstackVersion.class,
        description = "Serve a stack of block devices over NBD.")
final class ServeCommand implements Callable<Integer> {

    /** The embedded default configuration (a class-path resource). */
    static final String DEFAULT_CONFIG_RESOURCE = "/default-stack.yaml";
    /** The signals that ask the server to drain and stop. */
    static final List<String> STOP_SIGNALS = List.of("TERM", "INT");
    /** The line printed once the server listens. */
    static final String READY = "blkstack serve: ready";
    /** After the drain deadline and failing what waited: how long connections get to send those replies. */
    static final long REPLY_GRACE_NANOS = 2_000_000_000L;
    /** The final flush's deadline is the drain timeout, but never less than this. */
    static final long FLUSH_TIMEOUT_MIN_NANOS = 10_000_000_000L;

    @Spec
    private CommandSpec spec;

    @Option(names = "--config", paramLabel = "FILE",
            description = "YAML configuration; without it, the embedded default stack over sparse"
                    + " files in ./blkstack-data/.")
    Path configFile;

    @Option(names = "--memory", paramLabel = "SIZE", converter = SizeConverter.class,
            description = "Page arena for the data path, such as 64MiB or 1GiB (default: the"
                    + " configuration's memory, else 64MiB).")
    Long memoryBytes;

    @Option(names = "--listen", paramLabel = "ADDR:PORT|unix:PATH",
            description = "Address to listen on, repeatable: HOST:PORT (port 0 picks a free port) or unix:PATH (a Unix"
                    + " socket of mode 0600) (default: the configuration's listen, else 127.0.0.1:10809).")
    List<String> listenAddresses;

    @Option(names = "--tls-mode", paramLabel = "off|on|require",
            description = "NBD over TLS (STARTTLS): on serves TLS and plain clients, require refuses plain ones with"
                    + " NBD_REP_ERR_TLS_REQD (default: the configuration's tls.mode, else off).")
    String tlsMode;

    @Option(names = "--tls-cert", paramLabel = "PEM", description = "The server's certificate (chain) in PEM.")
    Path tlsCert;

    @Option(names = "--tls-key", paramLabel = "PEM", description = "The server's private key in PEM (unencrypted).")
    Path tlsKey;

    @Option(names = "--tls-ca", paramLabel = "PEM",
            description = "A CA in PEM: clients must present a certificate it signed (default: no client certificates).")
    Path tlsCa;

    @Option(names = "--max-connections", paramLabel = "N",
            description = "Clients served at once; one more is refused with an NBD error saying so (default: the"
                    + " configuration's max-connections, else 1024).")
    Integer maxConnections;

    @Option(names = "--handshake-timeout", paramLabel = "DURATION", converter = DurationConverter.Positive.class,
            description = "How long a client may take to negotiate an export before it is disconnected, such as"
                    + " 10s (default: the configuration's handshake-timeout, else 10s).")
    Long handshakeTimeoutNanos;

    @Option(names = "--idle-timeout", paramLabel = "DURATION|off", converter = DurationConverter.OrOff.class,
            description = "Disconnect a client that has sent no request and has none in flight for this long, or"
                    + " off (default: the configuration's idle-timeout, else off).")
    Long idleTimeoutNanos;

    @Option(names = "--reply-timeout", paramLabel = "DURATION|off", converter = DurationConverter.OrOff.class,
            description = "Disconnect a client whose replies could not be sent (it does not read them), or that"
                    + " stopped sending a request's payload, for this long, or off (default: the configuration's"
                    + " reply-timeout, else 30s).")
    Long replyTimeoutNanos;

    @Option(names = "--request-timeout", paramLabel = "DURATION|off", converter = DurationConverter.OrOff.class,
            description = "Disconnect a client one of whose requests is not done this long after its header (a device"
                    + " that lost or stalls its I/O), so that it sees the connection end instead of waiting for ever, or off"
                    + " (default: the configuration's request-timeout, else 120s).")
    Long requestTimeoutNanos;

    @Option(names = "--drain-timeout", paramLabel = "DURATION", converter = DurationConverter.class,
            description = "On SIGINT or SIGTERM, how long open requests may take to finish before those still"
                    + " waiting are failed back to their clients, such as 30s or 1500ms (default: the configuration's"
                    + " drain-timeout, else 30s). A second signal ends the drain at once.")
    Long drainTimeoutNanos;

    @Option(names = "--control", paramLabel = "PATH",
            description = "The control socket (HTTP + JSON, mode 0600) that blkstack ctl talks to (default: the"
                    + " configuration's control, else " + StackConfig.DEFAULT_CONTROL + " in the working directory).")
    Path controlPath;

    @Option(names = "--metrics", paramLabel = "ADDR:PORT",
            description = "Serve Prometheus metrics on http://ADDR:PORT/metrics (default: the configuration's"
                    + " metrics, else none), such as 127.0.0.1:9109; port 0 picks a free port.")
    String metricsAddress;

    @Option(names = "--suspend-timeout", paramLabel = "DURATION", converter = DurationConverter.Positive.class,
            defaultValue = "10s",
            description = "How long a suspend (ctl suspend, reload) waits for the I/O in flight before it fails and"
                    + " leaves the device running (default: ${DEFAULT-VALUE}; a request may give its own).")
    long suspendTimeoutNanos;

    // Off by default, although large measured faster: the hold ends when sendfile returns, but the
    // client takes the bytes later (TCP's retransmissions, a local client's receive queue), so a
    // table reload that gives a range to another export could let an unread reply show that
    // export's writes (thin and snapshot never pass references for the same reason; see
    // docs/architecture.md). Measured with bench/nbd-peers.sh on a quiet 2-core machine (2026-12-07,
    // 5 s rounds, each side on its own copy of the file), large against off gave 1 MiB sequential
    // read 1.90 and 1.74 (two runs), 1 MiB reads over four connections 1.33, 4 KiB random read 1.07
    // (small READs take pages under large); on (every READ) lost 4 KiB random read (0.70).
    @Option(names = "--read-references", paramLabel = "on|large|off", defaultValue = "off",
            description = "Send READs over plain TCP from the files with sendfile when the stack only remaps onto"
                    + " buffered files (linear, striped, mirror, log-writes, snapshot-origin): every READ (on),"
                    + " READs of 64 KiB or more (large), or none (off: always read into memory pages first)"
                    + " (default: ${DEFAULT-VALUE}; the policy switch read-references).")
    String readReferences;

    // Reads and writes by default since the reader replies inline (--inline-reply): measured with
    // bench/nbd-peers.sh on a quiet 2-core machine (2026-12-07, 5 s x 3 rounds, side by side), on
    // against reads gave 4 KiB random write 1.24, 1 MiB sequential write 1.40, 1 MiB writes over four
    // connections 1.15, the 64 KiB mixed job 1.30, and 4 KiB random write with a core kept busy 1.69.
    // Before inline replies a directly issued write still woke the writer, and writes were a wash
    // (0.92-1.12) or lost (4 KiB random write 0.53 on a loaded machine, 2026-12-06).
    @Option(names = "--direct-issue", paramLabel = "on|reads|writes|off", defaultValue = "on",
            description = "Let the connection's reader serve a plain READ or WRITE on a file device itself when the"
                    + " device's queue is idle, instead of handing it to an I/O task (reads, writes: only those),"
                    + " or off: always hand it over (default: ${DEFAULT-VALUE}; the policy switch direct-issue).")
    String directIssue;

    // On by default: measured with bench/nbd-peers.sh (2026-12-07, 5 s x 3 rounds, side by side),
    // on against off gave 4 KiB random read 2.37 with a core kept busy (137.7 against 58.2 MiB/s,
    // 1.36x nbdkit) but 0.89 quiet (164 against 185 MiB/s: with both cores free the writer's sends
    // ran beside the reader); the 1 MiB and 64 KiB jobs 0.88-1.10 quiet.
    // Sending at once after a READ of 64 KiB or more (on against before-read, 2026-12-07, side by
    // side, 5 s x 3 rounds): 1 MiB sequential read 1.25-1.82, 1 MiB reads over four connections
    // 1.13-1.21, even with a core kept busy and on the 64 KiB mixed job.
    @Option(names = "--inline-reply", paramLabel = "on|before-read|off", defaultValue = "on",
            description = "Let a connection's reader send the replies that are ready before it waits for the next"
                    + " request and right after a READ of 64 KiB or more, with a send that never blocks (what the"
                    + " socket does not take goes to the writer); before-read: only before it waits; off: the"
                    + " writer sends every reply (default: ${DEFAULT-VALUE}; the policy switch inline-reply).")
    String inlineReply;

    @Option(names = "--hung-task-timeout", paramLabel = "DURATION", converter = DurationConverter.class,
            defaultValue = "30s",
            description = "Report a task blocked longer than this, with what it waits on and who holds it"
                    + " (default: ${DEFAULT-VALUE}; 0s turns the watchdog off).")
    long hungTaskTimeoutNanos;

    @Option(names = "--log-level", paramLabel = "LEVEL",
            description = "How much to log: error, warn, info, debug or trace (default: the configuration's"
                    + " log-level, else info).")
    String logLevel;

    /** Serve's own lines: warnings and the shutdown steps. */
    private final Logger log = LoggerFactory.getLogger("io.blkstack.serve");

    /**
     * Where the serving task waits for the first stop signal. An idle wait (it owes nothing to
     * anyone), so the hung-task watchdog does not report a server that simply runs for long.
     */
    private final WaitQueue stopWait = new WaitQueue("serve: waiting for SIGINT or SIGTERM");
    private volatile boolean stopRequested;
    /** SIGINT and SIGTERM received so far: the first stops, the second skips the drain. */
    private final AtomicInteger stopSignals = new AtomicInteger();
    /** The server being drained, for the second signal. */
    private volatile NbdServer serving;
    /** The handlers SIGINT and SIGTERM had before serve took them. */
    private volatile List<SignalHandler> previousHandlers;
    /** Where to serve {@code /metrics}, or null; the URL once it listens. */
    private InetSocketAddress metricsBind;
    private String metricsUrl;
    /** The TLS settings in effect (flags over the configuration) and the context loaded from them. */
    private StackConfig.TlsSpec tlsInEffect = StackConfig.TlsSpec.OFF;
    private ServerTls serverTls = ServerTls.OFF;
    /** Set when devices still hold requests at exit: then the stack and the kernel are left open. */
    private boolean abandoned;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter err = spec.commandLine().getErr();
        StackConfig config;
        List<Listener> listeners = new ArrayList<>();
        try {
            config = configFile != null ? StackConfig.load(configFile) : defaultConfig();
            for (ListenAddress listen : listenAddresses(config)) {
                listeners.add(listen.isUnix() ? Listener.unix(listen.socket(), listen.socketMode())
                        : Listener.tcp(listen.resolve()));
            }
        } catch (ConfigException | IllegalArgumentException e) {
            return fail(err, ExitCodes.USAGE, e.getMessage());
        } catch (UnknownHostException e) {
            return fail(err, ExitCodes.USAGE, "--listen: unknown host " + e.getMessage());
        } catch (IOException e) {
            return fail(err, ExitCodes.USAGE, configFile + ": cannot read: " + e);
        }
        String level = logLevel != null ? logLevel : config.logLevelOrDefault();
        if (!StackConfig.LOG_LEVELS.contains(level)) {
            return fail(err, ExitCodes.USAGE, "--log-level: '" + level + "' is not one of "
                    + String.join(", ", StackConfig.LOG_LEVELS));
        }
        LogLevel.apply("blkstack serve", level);
        InetSocketAddress metrics;
        ListenAddress metricsListen;
        try {
            metricsListen = metricsAddress != null ? ListenAddress.parse(metricsAddress) : config.metrics();
            metrics = metricsListen == null ? null : metricsListen.resolve();
        } catch (IllegalArgumentException e) {
            return fail(err, ExitCodes.USAGE, "--metrics: " + e.getMessage());
        } catch (UnknownHostException e) {
            return fail(err, ExitCodes.USAGE, "--metrics: '" + metricsAddress + "': unknown host " + e.getMessage());
        }
        if (metrics != null && !metrics.getAddress().isLoopbackAddress()) {
            // On the command's stderr, as the check that follows may end serve before any logger is set up.
            err.println("blkstack serve: warning: metrics on " + metricsListen + ", beyond loopback: /metrics has no"
                    + " authentication, so anyone who can reach this port can read the stack's names and counters");
            err.flush();
        }
        metricsBind = metrics;
        try {
            tlsInEffect = tlsSpec(config);
            serverTls = tlsInEffect.mode() == ServerTls.Mode.OFF ? ServerTls.OFF
                    : ServerTls.load(tlsInEffect.mode(), tlsInEffect.cert(), tlsInEffect.key(), tlsInEffect.ca());
        } catch (IllegalArgumentException | IOException e) {
            return fail(err, ExitCodes.USAGE, e.getMessage());
        }
        if (maxConnections != null && (maxConnections < 1 || maxConnections > NbdServer.Options.CONNECTIONS_MAX)) {
            return fail(err, ExitCodes.USAGE, "--max-connections: " + maxConnections + " is not in 1.."
                    + NbdServer.Options.CONNECTIONS_MAX);
        }
        long memory = memoryBytes != null ? memoryBytes : config.memoryBytes();
        String memoryProblem = StackConfig.memoryProblem(memory);
        if (memoryProblem != null) {
            return fail(err, ExitCodes.USAGE, "--memory: '" + Sizes.format(memory) + "' " + memoryProblem
                    + " (the smallest page arena serve accepts is " + Sizes.format(StackConfig.MEMORY_BYTES_MIN) + ")");
        }
        for (Listener l : listeners) {
            if (!l.isUnix() && !l.tcp().getAddress().isLoopbackAddress()) {
                log.warn("warning: listening on {}, beyond loopback: NBD has no authentication, so anyone who can"
                        + " reach this port can read and write the exports", l.tcp());
            }
        }
        for (String badChoice : new String[] {badChoice(PolicySwitch.READ_REFERENCES, readReferences),
                badChoice(PolicySwitch.DIRECT_ISSUE, directIssue), badChoice(PolicySwitch.INLINE_REPLY, inlineReply)}) {
            if (badChoice != null) {
                return fail(err, ExitCodes.USAGE, badChoice);
            }
        }
        if (!"off".equals(inlineReply) && !NbdServer.inlineRepliesAvailable()) {
            log.warn("warning: inline replies are off: this JVM does not let blkstack send on a socket without waiting"
                    + " (it needs native access and java.base/sun.nio.ch exported, as ./blkstack and the jar give);"
                    + " every reply goes through the connection's writer task");
        }
        Kernel kernel;
        try {
            Kernel.Builder builder = Kernel.builder().name("blkstack-serve").memory(memory).reserves(config.reserves());
            builder.policies(Policies.defaults()
                    .with(PolicySwitch.DIRECT_ISSUE, policyValue(directIssue))
                    .with(PolicySwitch.INLINE_REPLY, policyValue(inlineReply))
                    .with(PolicySwitch.READ_REFERENCES, policyValue(readReferences)));
            if (hungTaskTimeoutNanos > 0) {
                Logger hung = LoggerFactory.getLogger("io.blkstack.kernel.HungTaskWatchdog");
                builder.watchdog(Duration.ofNanos(hungTaskTimeoutNanos), report -> hung.warn(report.describe().stripTrailing()))
                        .watchdogExplainer(task -> Knot.explainWait(task.kernel(), task));
            }
            kernel = builder.build();
        } catch (IllegalArgumentException e) {
            return fail(err, ExitCodes.USAGE, "--memory: " + e.getMessage());
        }
        int code;
        try (Kernel.Attachment self = kernel.attach("serve")) {
            try {
                code = serve(kernel, config, listeners, memory, out, err);
            } catch (RuntimeException e) {
                code = fail(err, ExitCodes.RUNTIME, "internal error while serving: " + e);
            }
            if (abandoned) {
                return code; // devices still hold requests: closing would wait for them
            }
            try {
                kernel.close();
            } catch (RuntimeException e) {
                code = fail(err, ExitCodes.RUNTIME, "closing the kernel: " + e.getMessage());
            }
        }
        return code;
    }

    /** Builds the stack, serves until asked to stop, then drains, flushes and closes. */
    private int serve(Kernel kernel, StackConfig config, List<Listener> listeners, long memory, PrintWriter out,
            PrintWriter err) {
        Stack stack;
        try {
            stack = Stack.build(kernel, config, Stack.Mode.SERVE);
        } catch (ConfigException e) {
            return fail(err, ExitCodes.USAGE, e.getMessage());
        } catch (IOException e) {
            return fail(err, ExitCodes.RUNTIME, e.getMessage());
        }
        warnIfMemoryDevicesPassTheHeap(kernel, stack);
        int code;
        try {
            code = serveStack(kernel, config, stack, listeners, memory, out, err);
        } finally {
            if (!abandoned) {
                stack.close();
            }
        }
        if (code == ExitCodes.SUCCESS) {
            log.info("stopped; every device flushed and closed");
        }
        return code;
    }

    /**
     * Warns when the memory devices could hold more than the heap lets them ({@link
     * io.blkstack.kernel.HeapQuota}): writes past it fail with ENOSPC, which a user should hear of
     * before a client does.
     */
    private void warnIfMemoryDevicesPassTheHeap(Kernel kernel, Stack stack) {
        long total = 0;
        List<String> names = new ArrayList<>();
        for (BlockDevice d : stack.bottomDevices()) {
            if (d instanceof MemoryDevice) {
                total += d.capacityBytes();
                names.add(d.name());
            }
        }
        long limit = kernel.heapQuota().limitBytes();
        if (total > limit) {
            log.warn("memory device(s) {} hold up to {} on the Java heap, but may fill only {} of it (half the"
                    + " heap): writes past that fail with ENOSPC; raise the heap (BLKSTACK_JAVA_OPTS=-Xmx...) or use"
                    + " file devices", String.join(", ", names), Sizes.format(total), Sizes.format(limit));
        }
    }

    /** Serves {@code stack} until asked to stop, then stops within the deadlines; returns the exit code. */
    private int serveStack(Kernel kernel, StackConfig config, Stack stack, List<Listener> listeners, long memory,
            PrintWriter out, PrintWriter err) {
        NbdServer server;
        try {
            server = new NbdServer(kernel, stack.exports(), serverOptions(config, listeners));
        } catch (IllegalArgumentException e) {
            return fail(err, ExitCodes.USAGE, e.getMessage());
        }
        try {
            server.start();
        } catch (IOException e) {
            server.close();
            return fail(err, ExitCodes.RUNTIME, "cannot listen on " + listeners + ": " + e.getMessage());
        }
        long drain = drainTimeoutNanos != null ? drainTimeoutNanos : config.drainTimeoutNanos();
        ControlServer control;
        try {
            control = startControl(kernel, config, stack, server, memory, drain, err);
        } catch (IOException e) {
            server.close();
            return fail(err, ExitCodes.RUNTIME, e.getMessage());
        }
        MetricsServer metrics = null;
        if (metricsBind != null) {
            try {
                metrics = MetricsServer.start(kernel, metricsBind);
            } catch (IOException e) {
                control.close();
                server.close();
                return fail(err, ExitCodes.RUNTIME, e.getMessage());
            }
            InetAddress shown = metricsBind.getAddress().isAnyLocalAddress() ? InetAddress.getLoopbackAddress()
                    : metricsBind.getAddress();
            metricsUrl = "http://" + ListenAddress.uriHost(shown) + ":" + metrics.port() + "/metrics";
        }
        serving = server;
        previousHandlers = handleStopSignals(kernel);
        announce(config, server, memory, drain, control.path(), out);
        stopWait.waitEventTimeout(() -> stopRequested, stopWait, -1, true);
        control.close(); // no live change races the drain
        try {
            return stop(kernel, stack, server, drain, err);
        } finally {
            restoreSignals();
            if (metrics != null) {
                metrics.close();
            }
        }
    }

    /**
     * Starts the control socket over the running stack: the configuration in effect (flags
     * applied) is what {@code ctl dump} writes out.
     */
    private ControlServer startControl(Kernel kernel, StackConfig config, Stack stack, NbdServer server, long memory,
            long drain, PrintWriter err) throws IOException {
        NbdServer.Options o = server.options();
        Path socket = controlPath != null ? controlPath.toAbsolutePath() : config.controlPath();
        StackConfig effective = new StackConfig(config.source(), memory,
                listenAddresses(config), config.devices(),
                config.mapped(), config.exports(), new StackConfig.Connections(o.connectionsMax(),
                        o.handshakeTimeoutNanos(), o.idleTimeoutNanos(), o.replyTimeoutNanos(),
                        o.requestTimeoutNanos()),
                config.noSpaceTimeoutNanos(), drain, config.reserves(), socket,
                logLevel != null ? logLevel : config.logLevel(),
                metricsAddress != null ? ListenAddress.parse(metricsAddress) : config.metrics(), tlsInEffect);
        Logger controlLog = LoggerFactory.getLogger("io.blkstack.control");
        java.util.function.Consumer<String> changes = line -> controlLog.info("control: {}", line);
        LiveStack live = new LiveStack(kernel, stack, server, effective, suspendTimeoutNanos, changes);
        return ControlServer.start(socket, live, changes);
    }

    /**
     * The shutdown sequence, every step bounded: resume suspended devices (no resume can come once
     * the control socket closed), drain until the deadline (or a second signal),
     * fail what still waits, give the replies a grace, cut what is left, flush every device.
     * Returns the exit code; sets {@link #abandoned} when devices still hold requests.
     */
    private int stop(Kernel kernel, Stack stack, NbdServer server, long drainNanos, PrintWriter err) {
        log.info("stopping: no new connections, draining {} connection(s) for at most {} (a second SIGINT or"
                + " SIGTERM skips the drain)", server.connectionCount(), Durations.format(drainNanos));
        boolean failedAny = false;
        List<String> resumed = stack.resumeSuspended();
        if (!resumed.isEmpty()) {
            // The control socket is closed: no resume can come, and the drain would wait for what they hold.
            log.info("resumed suspended device(s) {} with their live tables, so that the requests they held can"
                    + " finish", String.join(", ", resumed));
        }
        if (!server.drain(drainNanos, true)) {
            log.warn("{} with {} connection(s) open: {}", stopSignals.get() > 1 ? "second signal: skipping the drain"
                    : "drain deadline of " + Durations.format(drainNanos) + " passed", server.connectionCount(),
                    server.describeConnections());
            int failed = stack.failWaiting(BioStatus.IOERR);
            if (failed > 0) {
                failedAny = true;
                log.warn("failed {} request(s) waiting in devices with EIO", failed);
            }
            if (!server.drain(REPLY_GRACE_NANOS, false)) {
                failedAny = true;
                List<String> cut = server.cutConnections();
                log.warn("closed {} connection(s) whose requests are still held: {}", cut.size(), String.join("; ", cut));
            }
        }
        List<String> failures = flushWithin(kernel, stack, Math.max(drainNanos, FLUSH_TIMEOUT_MIN_NANOS));
        if (failures == null || server.connectionCount() > 0) {
            abandoned = true;
            return fail(err, ExitCodes.RUNTIME, "exiting with devices still holding requests ("
                    + server.describeConnections() + "); the devices are not closed");
        }
        server.close();
        if (!failures.isEmpty()) {
            return fail(err, ExitCodes.RUNTIME, "flush failed on " + String.join(", ", failures));
        }
        if (failedAny) {
            return fail(err, ExitCodes.RUNTIME, "stopped after failing requests that did not finish within the drain;"
                    + " every device flushed and closed");
        }
        return ExitCodes.SUCCESS;
    }

    /** The addresses to listen on: every {@code --listen}, else the configuration's. */
    private List<ListenAddress> listenAddresses(StackConfig config) {
        if (listenAddresses == null || listenAddresses.isEmpty()) {
            return config.listeners();
        }
        List<ListenAddress> out = new ArrayList<>();
        for (String text : listenAddresses) {
            out.add(ListenAddress.parse(text));
        }
        return out;
    }

    /** The TLS settings: each {@code --tls-*} flag over the configuration's {@code tls}. */
    private StackConfig.TlsSpec tlsSpec(StackConfig config) {
        StackConfig.TlsSpec c = config.tls();
        ServerTls.Mode mode = c.mode();
        if (tlsMode != null) {
            mode = switch (tlsMode) {
                case "off" -> ServerTls.Mode.OFF;
                case "on" -> ServerTls.Mode.ON;
                case "require" -> ServerTls.Mode.REQUIRE;
                default -> throw new IllegalArgumentException("--tls-mode: '" + tlsMode + "' is not off, on or require");
            };
        }
        Path cert = tlsCert != null ? tlsCert.toAbsolutePath() : c.cert();
        Path key = tlsKey != null ? tlsKey.toAbsolutePath() : c.key();
        Path ca = tlsCa != null ? tlsCa.toAbsolutePath() : c.ca();
        if (mode != ServerTls.Mode.OFF && (cert == null || key == null)) {
            throw new IllegalArgumentException("--tls-mode " + mode.name().toLowerCase() + " needs --tls-cert and --tls-key"
                    + " (or the configuration's tls.cert and tls.key)");
        }
        return new StackConfig.TlsSpec(mode, cert, key, ca);
    }

    /** The server's options: the configuration's connection settings, overridden by the flags. */
    private NbdServer.Options serverOptions(StackConfig config, List<Listener> listeners) {
        StackConfig.Connections c = config.connections();
        Logger nbdLog = LoggerFactory.getLogger("io.blkstack.nbd");
        return NbdServer.Options.defaults(new InetSocketAddress(0)).withListeners(listeners).withTls(serverTls)
                .withConnectionsMax(maxConnections != null ? maxConnections : c.max())
                .withHandshakeTimeoutNanos(handshakeTimeoutNanos != null ? handshakeTimeoutNanos : c.handshakeTimeoutNanos())
                .withIdleTimeoutNanos(idleTimeoutNanos != null ? idleTimeoutNanos : c.idleTimeoutNanos())
                .withReplyTimeoutNanos(replyTimeoutNanos != null ? replyTimeoutNanos : c.replyTimeoutNanos())
                .withRequestTimeoutNanos(requestTimeoutNanos != null ? requestTimeoutNanos : c.requestTimeoutNanos())
                .withLog(nbdLog::info);
    }

    /**
     * Flushes every device ({@link Stack#flushAll}) on a task of its own and waits at most
     * {@code timeoutNanos}; returns the failures, or null if the flush did not finish in time.
     */
    private List<String> flushWithin(Kernel kernel, Stack stack, long timeoutNanos) {
        Completion flushed = new Completion("serve final flush");
        List<List<String>> result = new ArrayList<>(1);
        kernel.spawn("serve-flush", TaskKind.USER, () -> {
            try {
                result.add(stack.flushAll());
            } finally {
                flushed.completeAll();
            }
        });
        if (!flushed.await(timeoutNanos)) {
            log.warn("the final flush did not finish within {}", Durations.format(timeoutNanos));
            return null;
        }
        return result.isEmpty() ? List.of("internal error in the flush task") : result.get(0);
    }

    /** Prints the exports' URIs, an nbdinfo example and the ready line. */
    private void announce(StackConfig config, NbdServer server, long memory, long drainNanos, Path control,
            PrintWriter out) {
        List<String> shownAt = new ArrayList<>();
        List<String> listFirst = new ArrayList<>();
        for (SocketAddress bound : server.boundAddresses()) {
            if (bound instanceof InetSocketAddress tcp) {
                shownAt.add(ListenAddress.uriHost(tcp.getAddress()) + ":" + tcp.getPort());
            } else {
                shownAt.add(ListenAddress.UNIX_PREFIX + ((UnixDomainSocketAddress) bound).getPath());
            }
        }
        out.println("blkstack serve: " + config.source() + ", page arena " + Sizes.format(memory)
                + ", listening on " + String.join(", ", shownAt));
        for (SocketAddress bound : server.boundAddresses()) {
            for (Export e : server.exports()) {
                String uri = exportUri(bound, e.name());
                listFirst.add(uri);
                out.println("  " + uri + "  " + Sizes.format(e.sizeBytes())
                        + (e.readOnly() ? " read-only" : " read-write")
                        + (e.description().isEmpty() ? "" : "  " + e.description()));
            }
        }
        String base = exportUri(server.boundAddresses().get(0), "");
        base = base.endsWith("/") ? base.substring(0, base.length() - 1) : base;
        NbdServer.Options o = server.options();
        out.println("  at most " + o.connectionsMax() + " connections, handshake timeout "
                + NbdServer.formatNanos(o.handshakeTimeoutNanos()) + ", idle timeout "
                + (o.idleTimeoutNanos() == 0 ? "off" : NbdServer.formatNanos(o.idleTimeoutNanos())) + ", reply timeout "
                + (o.replyTimeoutNanos() == 0 ? "off" : NbdServer.formatNanos(o.replyTimeoutNanos())) + ", request timeout "
                + (o.requestTimeoutNanos() == 0 ? "off" : NbdServer.formatNanos(o.requestTimeoutNanos())));
        if (serverTls.mode() != ServerTls.Mode.OFF) {
            out.println("  " + serverTls + ": TLS clients use nbds:// (nbds+unix://), such as nbdinfo"
                    + " 'nbds://HOST:PORT/EXPORT?tls-certificates=DIR'"
                    + (serverTls.mode() == ServerTls.Mode.REQUIRE ? "; plain clients are refused" : ""));
        }
        out.println("try:  nbdinfo --list " + shellWord(base));
        out.println("      nbdinfo " + shellWord(listFirst.get(0)));
        out.println("control: " + control + "  (blkstack ctl --socket " + control + " ls)");
        if (metricsUrl != null) {
            out.println("metrics: " + metricsUrl + "  (curl -s " + metricsUrl + " | grep blkstack_)");
        }
        out.println("stop: Ctrl-C or SIGTERM (drains connections for at most " + Durations.format(drainNanos)
                + ", flushes every device; a second one skips the drain)");
        out.println(READY);
        out.flush();
    }

    /**
     * The URI of an export at a bound address: {@code nbd://HOST:PORT/EXPORT} (a wildcard address
     * shown as loopback) or {@code nbd+unix:///EXPORT?socket=PATH}, as libnbd and qemu write them.
     */
    static String exportUri(SocketAddress bound, String export) {
        if (bound instanceof InetSocketAddress tcp) {
            InetAddress shown = tcp.getAddress().isAnyLocalAddress() ? InetAddress.getLoopbackAddress() : tcp.getAddress();
            return "nbd://" + ListenAddress.uriHost(shown) + ":" + tcp.getPort() + "/" + export;
        }
        return "nbd+unix:///" + export + "?socket=" + ((UnixDomainSocketAddress) bound).getPath();
    }

    /** A URI as one shell word: quoted when it has a {@code ?} (a Unix socket's). */
    private static String shellWord(String uri) {
        return uri.indexOf('?') >= 0 ? "'" + uri + "'" : uri;
    }

    /** Makes SIGTERM and SIGINT stop the server; returns the handlers they had. */
    private List<SignalHandler> handleStopSignals(Kernel kernel) {
        List<SignalHandler> previous = new ArrayList<>();
        for (String name : STOP_SIGNALS) {
            previous.add(Signal.handle(new Signal(name), signal -> onStopSignal(kernel)));
        }
        return previous;
    }

    /** Puts back the handlers {@link #handleStopSignals} replaced (once). */
    private void restoreSignals() {
        List<SignalHandler> previous = previousHandlers;
        previousHandlers = null;
        if (previous == null) {
            return;
        }
        for (int i = 0; i < STOP_SIGNALS.size(); i++) {
            Signal.handle(new Signal(STOP_SIGNALS.get(i)), previous.get(i));
        }
    }

    /**
     * Runs on the JVM's signal thread and returns at once: the first signal wakes the serving
     * thread, the second ends the drain and gives the signals back to the JVM.
     */
    private void onStopSignal(Kernel kernel) {
        int n = stopSignals.incrementAndGet();
        try (Kernel.Attachment a = kernel.attach("serve-signal")) {
            if (n == 1) {
                stopRequested = true;
                stopWait.wakeAll();
            } else {
                NbdServer server = serving;
                if (server != null) {
                    server.skipDrain();
                }
            }
        }
        if (n > 1) {
            restoreSignals();
        }
    }

    /** The embedded default configuration, with backing files relative to the working directory. */
    static StackConfig defaultConfig() throws ConfigException, IOException {
        try (InputStream in = ServeCommand.class.getResourceAsStream(DEFAULT_CONFIG_RESOURCE)) {
            if (in == null) {
                throw new IOException("embedded configuration " + DEFAULT_CONFIG_RESOURCE + " is missing from the jar");
            }
            String text = new String(in.readAllBytes(), StandardCharsets.UTF_8);
            return StackConfig.parse("default-stack.yaml (embedded)", text, Path.of("").toAbsolutePath());
        }
    }

    /**
     * The usage error for option {@code --KEY} of switch {@code sw} set to {@code choice}, or null if
     * it accepts it: the option takes the switch's values, with {@code off} for {@code legacy}.
     */
    private static String badChoice(PolicySwitch sw, String choice) {
        List<String> choices = sw.choices().stream().map(c -> c.equals(PolicySwitch.LEGACY) ? "off" : c).toList();
        if (choices.contains(choice)) {
            return null;
        }
        return "--" + sw.key() + " must be " + String.join(", ", choices.subList(0, choices.size() - 1)) + " or "
                + choices.getLast() + ", not '" + choice + "'";
    }

    /** The switch value for a choice {@link #badChoice} accepts. */
    private static String policyValue(String choice) {
        return choice.equals("off") ? PolicySwitch.LEGACY : choice;
    }

    private static int fail(PrintWriter err, int code, String message) {
        err.println("blkstack serve: " + message);
        err.flush();
        return code;
    }
}
