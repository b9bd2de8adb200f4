package io.blkstack.cli;

import com.fasterxml.jackson.databind.JsonNode;
import io.blkstack.config.StackConfig;
import io.blkstack.control.ControlApi;
import io.blkstack.control.ControlClient;
import io.blkstack.units.Durations;
import java.io.IOException;
import java.io.PrintWriter;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code blkstack ctl [--socket PATH] VERB ...}: the client of a running server's control socket
 * ({@link io.blkstack.control.ControlServer}), with dmsetup's verbs and, where dmsetup has one,
 * its output format: {@code ls}, {@code info}, {@code table}, {@code status}, {@code create},
 * {@code load}, {@code suspend}, {@code resume}, {@code reload}, {@code remove}, {@code message},
 * plus {@code export ls|add|remove}, {@code stats} and {@code dump}. Changes print nothing on success, as
 * dmsetup's do. A refusal prints the server's message and exits 1 (the request was wrong: a bad
 * table, a busy device) or 2 (the server could not do it: a suspend that timed out, no server).
 */
@Command(
        name = "ctl",
        mixinStandardHelpOptions = true,
        versionProvider = BlkstackVersion.class,
        description = "Operate a running blkstack serve through its control socket (dmsetup's verbs).",
        subcommands = {CtlCommand.Ls.class, CtlCommand.Info.class, CtlCommand.TableVerb.class, CtlCommand.Status.class,
            CtlCommand.Create.class, CtlCommand.Load.class, CtlCommand.Suspend.class, CtlCommand.Resume.class,
            CtlCommand.Reload.class, CtlCommand.Remove.class, CtlCommand.Message.class, CtlCommand.ExportVerb.class,
            CtlCommand.Stats.class, CtlCommand.Dump.class})
final class CtlCommand {

    @Option(names = "--socket", paramLabel = "PATH",
            description = "The server's control socket (default: " + StackConfig.DEFAULT_CONTROL
                    + " in the working directory, where serve puts it by default).")
    Path socket;

    @Option(names = "--timeout", paramLabel = "DURATION", converter = DurationConverter.Positive.class,
            defaultValue = "120s", description = "How long to wait for the server's reply (default: ${DEFAULT-VALUE}).")
    long timeoutNanos;

    /** What every verb shares: finding the root's options, sending, reporting a refusal. */
    abstract static class Verb implements Callable<Integer> {

        @Spec
        CommandSpec spec;

        /** Sends one request and hands a successful reply to {@link #print}; returns the exit code. */
        final int request(String method, String path, Object body) {
            CtlCommand root = root();
            Path socket = root.socket != null ? root.socket : Path.of(StackConfig.DEFAULT_CONTROL);
            PrintWriter out = spec.commandLine().getOut();
            PrintWriter err = spec.commandLine().getErr();
            try (ControlClient client = new ControlClient(socket, root.timeoutNanos)) {
                ControlClient.Reply reply = client.send(method, path, body);
                if (!reply.ok()) {
                    JsonNode error = client.tree(reply);
                    err.println("blkstack ctl: " + error.path("message").asText(reply.body().strip()));
                    err.flush();
                    return reply.status() >= 500 ? ExitCodes.RUNTIME : ExitCodes.USAGE;
                }
                print(client, reply, out);
                out.flush();
                return ExitCodes.SUCCESS;
            } catch (IOException e) {
                err.println("blkstack ctl: " + e.getMessage());
                err.flush();
                return ExitCodes.RUNTIME;
            }
        }

        /** Prints a successful reply; changes print nothing, like dmsetup's. */
        void print(ControlClient client, ControlClient.Reply reply, PrintWriter out) throws IOException {
        }

        private CtlCommand root() {
            for (CommandSpec s = spec; s != null; s = s.parent()) {
                if (s.userObject() instanceof CtlCommand c) {
                    return c;
                }
            }
            throw new IllegalStateException("ctl verb " + spec.name() + " outside blkstack ctl");
        }
    }

    /** A device route: {@code /v1/devices/NAME[/tail]}. */
    static String device(String name, String tail) {
        return ControlApi.PREFIX + "/devices/" + URLEncoder.encode(name, StandardCharsets.UTF_8).replace("+", "%20")
                + (tail.isEmpty() ? "" : "/" + tail);
    }

    /** The table text of {@code --table} lines or {@code --file}. */
    static final class TableSource {
        @Option(names = "--table", paramLabel = "LINE", required = true,
                description = "A dmsetup table line (repeat for several, or separate lines with newlines).")
        List<String> lines;

        @Option(names = "--file", paramLabel = "FILE", required = true, description = "A file of dmsetup table lines.")
        Path file;

        String text() throws IOException {
            return file != null ? Files.readString(file, StandardCharsets.UTF_8) : String.join("\n", lines) + "\n";
        }
    }

    @Command(name = "ls", description = "List devices (with what they depend on, use and export) and exports.")
    static final class Ls extends Verb {
        @Override
        public Integer call() {
            return request("GET", ControlApi.PREFIX + "/devices", null);
        }

        @Override
        void print(ControlClient client, ControlClient.Reply reply, PrintWriter out) throws IOException {
            ControlApi.DeviceList list = client.read(reply, ControlApi.DeviceList.class);
            for (ControlApi.DeviceInfo d : list.devices()) {
                out.println(d.name() + "\t(" + d.kind() + ", " + d.sizeSectors() + " sectors"
                        + (d.state().equals("ACTIVE") ? "" : ", " + d.state()) + ")"
                        + words(" depends on", d.dependsOn()) + words(" used by", d.usedBy())
                        + words(" exported as", d.exportedAs()));
            }
            for (ControlApi.ExportInfo e : list.exports()) {
                out.println("export " + e.name() + "\t(" + e.device() + (e.readonly() ? ", read-only" : "")
                        + ", " + e.clients() + " client(s))");
            }
        }
    }

    private static String words(String label, List<String> names) {
        return names == null || names.isEmpty() ? "" : label + ": " + String.join(", ", names) + ";";
    }

    @Command(name = "info", description = "Show a device's state, tables, dependencies and exports (dmsetup info).")
    static final class Info extends Verb {
        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @Override
        public Integer call() {
            return request("GET", device(name, ""), null);
        }

        @Override
        void print(ControlClient client, ControlClient.Reply reply, PrintWriter out) throws IOException {
            ControlApi.DeviceInfo d = client.read(reply, ControlApi.DeviceInfo.class);
            out.printf("%-19s%s%n", "Name:", d.name());
            out.printf("%-19s%s%n", "State:", d.state());
            out.printf("%-19s%s%n", "Kind:", d.kind());
            if (d.targets() != null) {
                out.printf("%-19s%s%n", "Tables present:", Boolean.TRUE.equals(d.inactiveTable()) ? "LIVE & INACTIVE"
                        : "LIVE");
                out.printf("%-19s%d%n", "Number of targets:", d.targets());
            }
            out.printf("%-19s%d%n", "Size (sectors):", d.sizeSectors());
            out.printf("%-19s%d%n", "Open count:", d.clients());
            out.printf("%-19s%s%n", "Depends on:", list(d.dependsOn()));
            out.printf("%-19s%s%n", "Used by:", list(d.usedBy()));
            out.printf("%-19s%s%n", "Exported as:", list(d.exportedAs()));
        }
    }

    private static String list(List<String> names) {
        return names == null || names.isEmpty() ? "-" : String.join(", ", names);
    }

    /** Prints each line of a {@link ControlApi.Lines} reply. */
    abstract static class LinesVerb extends Verb {
        @Override
        void print(ControlClient client, ControlClient.Reply reply, PrintWriter out) throws IOException {
            for (String line : client.read(reply, ControlApi.Lines.class).lines()) {
                out.println(line);
            }
        }
    }

    @Command(name = "table", description = "Print a device's live table, as it would be loaded (dmsetup table).")
    static final class TableVerb extends LinesVerb {
        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @Override
        public Integer call() {
            return request("GET", device(name, "table"), null);
        }
    }

    @Command(name = "status", description = "Print each target's status line (dmsetup status).")
    static final class Status extends LinesVerb {
        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @Override
        public Integer call() {
            return request("GET", device(name, "status"), null);
        }
    }

    @Command(name = "create", description = "Create a mapped device from a table and make it live.")
    static final class Create extends Verb {
        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @ArgGroup(exclusive = true, multiplicity = "1")
        TableSource table;

        @Override
        public Integer call() throws IOException {
            return request("POST", ControlApi.PREFIX + "/devices", new ControlApi.CreateRequest(name, table.text()));
        }
    }

    @Command(name = "load", description = "Load a table as the inactive table; resume makes it live.")
    static final class Load extends Verb {
        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @ArgGroup(exclusive = true, multiplicity = "1")
        TableSource table;

        @Override
        public Integer call() throws IOException {
            return request("PUT", device(name, "table"), new ControlApi.TableRequest(table.text(), null));
        }
    }

    /** {@code --timeout} of a suspend, as the server parses it. */
    abstract static class TimedVerb extends Verb {
        @Option(names = "--suspend-timeout", paramLabel = "DURATION", converter = DurationConverter.Positive.class,
                description = "How long the suspend may wait for I/O in flight (default: the server's).")
        Long suspendTimeoutNanos;

        String timeout() {
            return suspendTimeoutNanos == null ? null : Durations.format(suspendTimeoutNanos);
        }
    }

    @Command(name = "suspend", description = "Suspend a device: hold new I/O once the I/O in flight finished.")
    static final class Suspend extends TimedVerb {
        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @Override
        public Integer call() {
            return request("POST", device(name, "suspend"), new ControlApi.SuspendRequest(timeout()));
        }
    }

    @Command(name = "resume", description = "Resume a device; a loaded table becomes live.")
    static final class Resume extends TimedVerb {
        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @Override
        public Integer call() {
            return request("POST", device(name, "resume"), new ControlApi.SuspendRequest(timeout()));
        }
    }

    @Command(name = "reload", description = "Load a table, suspend, resume: swap a live device's table.")
    static final class Reload extends TimedVerb {
        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @ArgGroup(exclusive = true, multiplicity = "1")
        TableSource table;

        @Override
        public Integer call() throws IOException {
            return request("POST", device(name, "reload"), new ControlApi.TableRequest(table.text(), timeout()));
        }
    }

    @Command(name = "remove", description = "Remove a mapped device nothing uses any more.")
    static final class Remove extends Verb {
        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @Override
        public Integer call() {
            return request("DELETE", device(name, ""), null);
        }
    }

    @Command(name = "message", description = "Send a message to the target at SECTOR (dmsetup message), such as"
            + " 'create_thin 1' or 'create_snap 7 0' to a thin pool.")
    static final class Message extends Verb {
        @Parameters(index = "0", paramLabel = "NAME")
        String name;

        @Parameters(index = "1", paramLabel = "SECTOR")
        long sector;

        @Parameters(index = "2..*", arity = "1..*", paramLabel = "MESSAGE")
        List<String> words;

        @Override
        public Integer call() {
            return request("POST", device(name, "message"),
                    new ControlApi.MessageRequest(sector, String.join(" ", words)));
        }

        @Override
        void print(ControlClient client, ControlClient.Reply reply, PrintWriter out) throws IOException {
            String text = client.read(reply, ControlApi.MessageReply.class).reply();
            if (text != null && !text.isEmpty()) {
                out.println(text);
            }
        }
    }

    @Command(name = "export", description = "List, add and remove NBD exports.",
            subcommands = {ExportVerb.ExportLs.class, ExportVerb.ExportAdd.class, ExportVerb.ExportRemove.class})
    static final class ExportVerb {

        @Command(name = "ls", description = "List the exports with their devices and clients.")
        static final class ExportLs extends Verb {
            @Override
            public Integer call() {
                return request("GET", ControlApi.PREFIX + "/exports", null);
            }

            @Override
            void print(ControlClient client, ControlClient.Reply reply, PrintWriter out) throws IOException {
                for (ControlApi.ExportInfo e : client.read(reply, ControlApi.ExportList.class).exports()) {
                    out.println(e.name() + "\t" + e.device() + "\t" + (e.readonly() ? "ro" : "rw") + "\t"
                            + e.sizeBytes() + "\t" + e.clients() + " client(s)"
                            + (e.description().isEmpty() ? "" : "\t" + e.description()));
                }
            }
        }

        @Command(name = "add", description = "Export a device over NBD under NAME.")
        static final class ExportAdd extends Verb {
            @Parameters(index = "0", paramLabel = "NAME")
            String name;

            @Option(names = "--device", paramLabel = "DEVICE", required = true, description = "The device to export.")
            String device;

            @Option(names = "--readonly", description = "Refuse writes, trims and zeroes.")
            boolean readOnly;

            @Option(names = "--description", paramLabel = "TEXT", description = "A description for clients.")
            String description;

            @Override
            public Integer call() {
                return request("POST", ControlApi.PREFIX + "/exports",
                        new ControlApi.ExportRequest(name, device, readOnly, description));
            }
        }

        @Command(name = "remove", description = "Stop exporting NAME; refused while clients are connected unless"
                + " --force, which closes them after their in-flight requests.")
        static final class ExportRemove extends Verb {
            @Parameters(index = "0", paramLabel = "NAME")
            String name;

            @Option(names = "--force", description = "Close connected clients after their in-flight requests.")
            boolean force;

            @Override
            public Integer call() {
                return request("DELETE", ControlApi.PREFIX + "/exports/"
                        + URLEncoder.encode(name, StandardCharsets.UTF_8) + (force ? "?force=true" : ""), null);
            }

            @Override
            void print(ControlClient client, ControlClient.Reply reply, PrintWriter out) throws IOException {
                int closed = client.read(reply, ControlApi.Removed.class).connectionsClosed();
                if (closed > 0) {
                    out.println("closing " + closed + " connection(s) once their in-flight requests finish");
                }
            }
        }
    }

    @Command(name = "stats", description = "Print the I/O statistics of every device and export, of device NAME,"
            + " or of one export (--export): for devices (as dmstats report) completed bios and sectors per"
            + " operation; for exports (as nbdkit's stats filter) NBD requests and bytes per command; errors,"
            + " in flight and latency percentiles for both.")
    static final class Stats extends Verb {
        @Parameters(index = "0", arity = "0..1", paramLabel = "NAME", description = "One device (default: all).")
        String name;

        @Option(names = "--export", paramLabel = "EXPORT", description = "One export instead of a device.")
        String export;

        @Override
        public Integer call() {
            if (name != null && export != null) {
                spec.commandLine().getErr().println("blkstack ctl stats: name a device or --export, not both");
                return ExitCodes.USAGE;
            }
            if (export != null) {
                return request("GET", ControlApi.PREFIX + "/exports/" + encode(export) + "/stats", null);
            }
            return request("GET", ControlApi.PREFIX + "/stats" + (name == null ? "" : "/" + encode(name)), null);
        }

        private static String encode(String text) {
            return URLEncoder.encode(text, StandardCharsets.UTF_8).replace("+", "%20");
        }

        @Override
        void print(ControlClient client, ControlClient.Reply reply, PrintWriter out) throws IOException {
            if (export != null) {
                printExports(List.of(client.read(reply, ControlApi.ExportStatsReply.class)), out);
                return;
            }
            if (name != null) {
                printDevices(List.of(client.read(reply, ControlApi.DeviceStatsReply.class)), out);
                return;
            }
            ControlApi.StatsList all = client.read(reply, ControlApi.StatsList.class);
            printDevices(all.devices(), out);
            out.println();
            printExports(all.exports(), out);
        }

        private static void printDevices(List<ControlApi.DeviceStatsReply> devices, PrintWriter out) {
            out.printf("%-16s %10s %12s %10s %12s %8s %8s %12s %8s %12s %8s  %s%n", "NAME", "READS", "READ_SECT",
                    "WRITES", "WRITE_SECT", "FLUSHES", "DISCARDS", "DISCARD_SECT", "WZEROES", "WZERO_SECT",
                    "INFLIGHT", "ERRORS");
            for (ControlApi.DeviceStatsReply d : devices) {
                out.printf("%-16s %10d %12d %10d %12d %8d %8d %12d %8d %12d %8d  %s%n", d.name(), d.reads(),
                        d.readSectors(), d.writes(), d.writtenSectors(), d.flushes(), d.discards(),
                        d.discardedSectors(), d.writeZeroes(), d.zeroedSectors(), d.inFlight(), errors(d.errors()));
            }
            out.println();
            printLatencyHeader(out, "NAME");
            for (ControlApi.DeviceStatsReply d : devices) {
                printLatency(out, d.name(), d.latency());
            }
        }

        private static void printExports(List<ControlApi.ExportStatsReply> exports, PrintWriter out) {
            out.printf("%-16s %-16s %10s %12s %10s %12s %8s %8s %12s %8s %12s %8s %8s  %s%n", "EXPORT", "DEVICE",
                    "READS", "READ_BYTES", "WRITES", "WRITE_BYTES", "FLUSHES", "TRIMS", "TRIM_BYTES", "WZEROES",
                    "WZERO_BYTES", "BSTATUS", "INFLIGHT", "ERRORS");
            for (ControlApi.ExportStatsReply e : exports) {
                out.printf("%-16s %-16s %10d %12d %10d %12d %8d %8d %12d %8d %12d %8d %8d  %s%n", e.name(), e.device(),
                        e.reads(), e.readBytes(), e.writes(), e.writtenBytes(), e.flushes(), e.trims(),
                        e.trimmedBytes(), e.writeZeroes(), e.zeroedBytes(), e.blockStatus(), e.inFlight(),
                        errors(e.errors()));
            }
            out.println();
            printLatencyHeader(out, "EXPORT");
            for (ControlApi.ExportStatsReply e : exports) {
                printLatency(out, e.name(), e.latency());
            }
        }

        private static void printLatencyHeader(PrintWriter out, String first) {
            out.printf("%-16s %-6s %10s %10s %10s %10s %10s %10s%n", first, "CLASS", "COUNT", "P50_US", "P90_US",
                    "P99_US", "P99.9_US", "MAX_US");
        }

        /** One line per latency class that recorded anything. */
        private static void printLatency(PrintWriter out, String name, Map<String, ControlApi.LatencyReply> latency) {
            latency.forEach((c, l) -> {
                if (l.count() > 0) {
                    out.printf("%-16s %-6s %10d %10.1f %10.1f %10.1f %10.1f %10.1f%n", name, c, l.count(),
                            l.p50Micros(), l.p90Micros(), l.p99Micros(), l.p999Micros(), l.maxMicros());
                }
            });
        }

        /** {@code 0}, or the statuses seen with their counts, such as {@code EIO=3,ENOSPC=1}. */
        private static String errors(Map<String, Long> counts) {
            StringBuilder b = new StringBuilder();
            counts.forEach((status, n) -> {
                if (n > 0) {
                    b.append(b.isEmpty() ? "" : ",").append(status).append('=').append(n);
                }
            });
            return b.isEmpty() ? "0" : b.toString();
        }
    }

    @Command(name = "dump", description = "Print the running stack as a YAML configuration serve --config accepts.")
    static final class Dump extends Verb {
        @Override
        public Integer call() {
            return request("GET", ControlApi.PREFIX + "/dump", null);
        }

        @Override
        void print(ControlClient client, ControlClient.Reply reply, PrintWriter out) {
            out.print(reply.body());
        }
    }
}
