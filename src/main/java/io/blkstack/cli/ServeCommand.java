package io.blkstack.cli;

import io.blkstack.config.ConfigException;
import io.blkstack.config.ListenAddress;
import io.blkstack.config.Stack;
import io.blkstack.config.StackConfig;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.nbd.Export;
import io.blkstack.nbd.NbdServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.UnknownHostException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

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
 * thread, which stops accepting and drains connections ({@link NbdServer#close}), sends a FLUSH to
 * every device ({@link Stack#flushAll}), closes the stack and the kernel (which checks that every
 * page came back), and returns exit code 0 (2 if a flush failed).
 *
 * <p>Configuration errors exit 1 with the file, line and value; I/O errors (a backing file that
 * cannot be created, a port in use) exit 2.
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

    @Option(names = "--listen", paramLabel = "ADDR:PORT",
            description = "Address to listen on; port 0 picks a free port (default: the configuration's"
                    + " listen, else 127.0.0.1:10809).")
    String listenAddress;

    @Option(names = "--max-connections", paramLabel = "N",
            description = "Clients served at once; one more is refused with an NBD error saying so (default: the"
                    + " configuration's max-connections, else 1024).")
    Integer maxConnections;

    @Option(names = "--handshake-timeout", paramLabel = "DURATION", converter = DurationConverter.class,
            description = "How long a client may take to negotiate an export before it is disconnected, such as"
                    + " 10s (default: the configuration's handshake-timeout, else 10s).")
    Long handshakeTimeoutNanos;

    @Option(names = "--idle-timeout", paramLabel = "DURATION|off", converter = DurationConverter.OrOff.class,
            description = "Disconnect a client that has sent no request and has none in flight for this long, or"
                    + " off (default: the configuration's idle-timeout, else off).")
    Long idleTimeoutNanos;

    private final Completion stopRequested = new Completion("serve stop requested");

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter err = spec.commandLine().getErr();
        StackConfig config;
        InetSocketAddress address;
        try {
            config = configFile != null ? StackConfig.load(configFile) : defaultConfig();
            ListenAddress listen = listenAddress != null ? ListenAddress.parse(listenAddress) : config.listen();
            address = listen.resolve();
        } catch (ConfigException | IllegalArgumentException e) {
            return fail(err, ExitCodes.USAGE, e.getMessage());
        } catch (UnknownHostException e) {
            return fail(err, ExitCodes.USAGE, "--listen: unknown host " + e.getMessage());
        } catch (IOException e) {
            return fail(err, ExitCodes.USAGE, configFile + ": cannot read: " + e);
        }
        if (maxConnections != null && (maxConnections < 1 || maxConnections > NbdServer.Options.CONNECTIONS_MAX)) {
            return fail(err, ExitCodes.USAGE, "--max-connections: " + maxConnections + " is not in 1.."
                    + NbdServer.Options.CONNECTIONS_MAX);
        }
        long memory = memoryBytes != null ? memoryBytes : config.memoryBytes();
        if (!address.getAddress().isLoopbackAddress()) {
            err.println("blkstack serve: warning: listening on " + address + ", beyond loopback: NBD has no"
                    + " authentication, so anyone who can reach this port can read and write the exports");
            err.flush();
        }
        Kernel kernel;
        try {
            kernel = Kernel.builder().name("blkstack-serve").memory(memory).build();
        } catch (IllegalArgumentException e) {
            return fail(err, ExitCodes.USAGE, "--memory: " + e.getMessage());
        }
        int code;
        try (Kernel.Attachment self = kernel.attach("serve")) {
            try {
                code = serve(kernel, config, address, memory, out, err);
            } catch (RuntimeException e) {
                code = fail(err, ExitCodes.RUNTIME, "internal error while serving: " + e);
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
    private int serve(Kernel kernel, StackConfig config, InetSocketAddress address, long memory, PrintWriter out,
            PrintWriter err) {
        Stack stack;
        try {
            stack = Stack.build(kernel, config, Stack.Mode.SERVE);
        } catch (ConfigException e) {
            return fail(err, ExitCodes.USAGE, e.getMessage());
        } catch (IOException e) {
            return fail(err, ExitCodes.RUNTIME, e.getMessage());
        }
        try (stack) {
            NbdServer server;
            try {
                server = new NbdServer(kernel, stack.exports(), serverOptions(config, address, err));
            } catch (IllegalArgumentException e) {
                return fail(err, ExitCodes.USAGE, e.getMessage());
            }
            try {
                server.start();
            } catch (IOException e) {
                server.close();
                return fail(err, ExitCodes.RUNTIME, "cannot listen on " + address + ": " + e.getMessage());
            }
            List<SignalHandler> previous = handleStopSignals(kernel);
            announce(config, server, memory, out);
            stopRequested.await();
            restoreSignals(previous);
            err.println("blkstack serve: stopping: no new connections, draining " + server.connectionCount()
                    + " connection(s)");
            err.flush();
            server.close();
            List<String> failures = stack.flushAll();
            if (!failures.isEmpty()) {
                return fail(err, ExitCodes.RUNTIME, "flush failed on " + String.join(", ", failures));
            }
        }
        err.println("blkstack serve: stopped; every device flushed and closed");
        err.flush();
        return ExitCodes.SUCCESS;
    }

    /** The server's options: the configuration's connection settings, overridden by the flags. */
    private NbdServer.Options serverOptions(StackConfig config, InetSocketAddress address, PrintWriter err) {
        StackConfig.Connections c = config.connections();
        return NbdServer.Options.defaults(address)
                .withConnectionsMax(maxConnections != null ? maxConnections : c.max())
                .withHandshakeTimeoutNanos(handshakeTimeoutNanos != null ? handshakeTimeoutNanos : c.handshakeTimeoutNanos())
                .withIdleTimeoutNanos(idleTimeoutNanos != null ? idleTimeoutNanos : c.idleTimeoutNanos())
                .withLog(line -> {
                    err.println("blkstack serve: " + line);
                    err.flush();
                });
    }

    /** Prints the exports' URIs, an nbdinfo example and the ready line. */
    private void announce(StackConfig config, NbdServer server, long memory, PrintWriter out) {
        InetSocketAddress bound = server.localAddress();
        InetAddress shown = bound.getAddress().isAnyLocalAddress() ? InetAddress.getLoopbackAddress() : bound.getAddress();
        String base = "nbd://" + ListenAddress.uriHost(shown) + ":" + bound.getPort();
        out.println("blkstack serve: " + config.source() + ", page arena " + TableCommand.Sizes.format(memory)
                + ", listening on " + ListenAddress.uriHost(bound.getAddress()) + ":" + bound.getPort());
        for (Export e : server.exports()) {
            out.println("  " + base + "/" + e.name() + "  " + TableCommand.Sizes.format(e.sizeBytes())
                    + (e.readOnly() ? " read-only" : " read-write")
                    + (e.description().isEmpty() ? "" : "  " + e.description()));
        }
        NbdServer.Options o = server.options();
        out.println("  at most " + o.connectionsMax() + " connections, handshake timeout "
                + NbdServer.formatNanos(o.handshakeTimeoutNanos()) + ", idle timeout "
                + (o.idleTimeoutNanos() == 0 ? "off" : NbdServer.formatNanos(o.idleTimeoutNanos())));
        out.println("try:  nbdinfo --list " + base);
        out.println("      nbdinfo " + base + "/" + server.exports().get(0).name());
        out.println("stop: Ctrl-C or SIGTERM (drains connections, flushes every device)");
        out.println(READY);
        out.flush();
    }

    /** Makes SIGTERM and SIGINT wake the serving thread; returns the handlers they had. */
    private List<SignalHandler> handleStopSignals(Kernel kernel) {
        List<SignalHandler> previous = new ArrayList<>();
        for (String name : STOP_SIGNALS) {
            previous.add(Signal.handle(new Signal(name), signal -> requestStop(kernel)));
        }
        return previous;
    }

    /** Puts back the handlers {@link #handleStopSignals} replaced. */
    private static void restoreSignals(List<SignalHandler> previous) {
        for (int i = 0; i < STOP_SIGNALS.size(); i++) {
            Signal.handle(new Signal(STOP_SIGNALS.get(i)), previous.get(i));
        }
    }

    /** Runs on the JVM's signal thread: wakes the serving thread and returns at once. */
    private void requestStop(Kernel kernel) {
        try (Kernel.Attachment a = kernel.attach("serve-signal")) {
            stopRequested.complete();
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

    private static int fail(PrintWriter err, int code, String message) {
        err.println("blkstack serve: " + message);
        err.flush();
        return code;
    }
}
