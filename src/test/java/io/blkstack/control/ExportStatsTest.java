package io.blkstack.control;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.JsonNode;
import io.blkstack.block.TestKernel;
import io.blkstack.cli.Main;
import io.blkstack.config.MiniNbdClient;
import io.blkstack.config.Stack;
import io.blkstack.config.StackConfig;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.nbd.NbdProtocol;
import io.blkstack.nbd.NbdServer;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * Per-export statistics (nbdkit's stats filter): two exports of one linear device, one
 * read-write and one read-only, each driven by an NBD client with a known script of requests
 * (successes of every command, and failures the server must refuse: a read past the end,
 * EINVAL; a write past the end, ENOSPC; a write to the read-only export, EPERM). Once the
 * export shows nothing in flight (the client has every reply; the writer counts a request just
 * after sending it, so a bounded poll waits for that), the counters equal the script exactly in
 * the control socket's JSON, in {@code ctl stats --export} and {@code ctl stats}, and in a
 * {@code /metrics} scrape parsed strictly; each export counts only its own requests, while the
 * device counts both. An export removed and added again starts from zero.
 */
class ExportStatsTest {

    private static final String CONFIG = """
            memory: 32MiB
            control: ctl.sock
            devices:
              a: { memory: 8MiB }
            mapped:
              lin: "0 16384 linear a 0"
            exports:
              disk: { device: lin }
              ro: { device: lin, readonly: true }
            """;
    private static final long SIZE_BYTES = 16384L * 512;
    /** Polls of the in-flight count before the test gives up (each one a control request or a scrape). */
    private static final int POLLS_MAX = 500;

    @TempDir
    Path tmp;

    private TestKernel tk;
    private Stack stack;
    private NbdServer server;
    private ControlServer control;
    private MetricsServer metrics;
    private Path socket;

    @BeforeEach
    void start() throws Exception {
        StackConfig config = StackConfig.parse("test.yaml", CONFIG, tmp);
        tk = new TestKernel("export-stats", config.memoryBytes(), Policies.defaults(), Faults.NONE);
        stack = Stack.build(tk.kernel, config, Stack.Mode.SERVE);
        server = new NbdServer(tk.kernel, stack.exports(), new InetSocketAddress("127.0.0.1", 0));
        server.start();
        socket = config.controlPath();
        List<String> log = new CopyOnWriteArrayList<>();
        control = ControlServer.start(socket, new LiveStack(tk.kernel, stack, server, config, 5_000_000_000L,
                log::add), log::add);
        metrics = MetricsServer.start(tk.kernel, new InetSocketAddress("127.0.0.1", 0));
    }

    @AfterEach
    void stop() {
        if (metrics != null) {
            metrics.close();
        }
        if (control != null) {
            control.close();
        }
        if (server != null) {
            server.close();
        }
        if (stack != null) {
            stack.close();
        }
        if (tk != null) {
            tk.close();
        }
    }

    @Test
    @Timeout(120)
    void eachExportCountsExactlyItsOwnRequests() throws Exception {
        InetSocketAddress nbd = server.localAddress();
        try (MiniNbdClient disk = new MiniNbdClient(nbd, "disk"); MiniNbdClient ro = new MiniNbdClient(nbd, "ro")) {
            for (int i = 0; i < 4; i++) {
                assertEquals(0, disk.write(i * 4096L, new byte[4096]));
            }
            for (int i = 0; i < 3; i++) {
                assertEquals(8192, disk.read(i * 8192L, 8192).length);
            }
            assertEquals(0, disk.flush());
            assertEquals(0, disk.command(NbdProtocol.CMD_TRIM, 0, 4096));
            assertEquals(0, disk.command(NbdProtocol.CMD_TRIM, 65536, 4096));
            assertEquals(0, disk.command(NbdProtocol.CMD_WRITE_ZEROES, 131072, 8192));
            assertEquals(NbdProtocol.EINVAL, disk.command(NbdProtocol.CMD_READ, SIZE_BYTES, 4096));
            assertEquals(NbdProtocol.ENOSPC, disk.write(SIZE_BYTES - 512, new byte[4096]));

            assertEquals(NbdProtocol.EPERM, ro.write(0, new byte[4096]));
            assertEquals(4096, ro.read(0, 4096).length);
            assertEquals(4096, ro.read(4096, 4096).length);

            JsonNode d = settled("disk");
            assertEquals(4, d.path("reads").asLong());
            assertEquals(3 * 8192, d.path("readBytes").asLong(), "a failed read moved no bytes");
            assertEquals(5, d.path("writes").asLong());
            assertEquals(4 * 4096, d.path("writtenBytes").asLong(), "a failed write wrote no bytes");
            assertEquals(1, d.path("flushes").asLong());
            assertEquals(2, d.path("trims").asLong());
            assertEquals(8192, d.path("trimmedBytes").asLong());
            assertEquals(1, d.path("writeZeroes").asLong());
            assertEquals(8192, d.path("zeroedBytes").asLong());
            assertEquals(0, d.path("blockStatus").asLong());
            assertEquals(0, d.path("inFlight").asLong());
            assertEquals(Map.of("EPERM", 0L, "EIO", 0L, "ENOMEM", 0L, "EINVAL", 1L, "ENOSPC", 1L, "EOVERFLOW", 0L,
                    "ENOTSUP", 0L, "ESHUTDOWN", 0L), errors(d));
            assertEquals(4, d.path("latency").path("read").path("count").asLong());
            assertEquals(5, d.path("latency").path("write").path("count").asLong());
            assertEquals(4, d.path("latency").path("other").path("count").asLong());
            assertEquals("lin", d.path("device").asText());
            assertEquals(1, d.path("clients").asInt());

            JsonNode r = settled("ro");
            assertEquals(2, r.path("reads").asLong());
            assertEquals(8192, r.path("readBytes").asLong());
            assertEquals(1, r.path("writes").asLong());
            assertEquals(0, r.path("writtenBytes").asLong());
            assertEquals(1, r.path("errors").path("EPERM").asLong());
            assertEquals(0, r.path("flushes").asLong());

            String[] one = ctl("stats", "--export", "disk");
            assertEquals("0", one[0], one[2]);
            // EXPORT DEVICE READS READ_BYTES WRITES WRITE_BYTES FLUSHES TRIMS TRIM_BYTES WZEROES WZERO_BYTES BSTATUS INFLIGHT ERRORS
            assertEquals(List.of("disk", "lin", "4", "24576", "5", "16384", "1", "2", "8192", "1", "8192", "0", "0",
                    "EINVAL=1,ENOSPC=1"), row(one[1], "disk "), one[1]);
            String[] all = ctl("stats");
            assertEquals("0", all[0], all[2]);
            assertEquals(List.of("ro", "lin", "2", "8192", "1", "0", "0", "0", "0", "0", "0", "0", "0", "EPERM=1"),
                    row(all[1], "ro "), all[1]);
            assertTrue(all[1].lines().anyMatch(l -> l.startsWith("lin ")), "devices come first: " + all[1]);
            assertEquals("1", ctl("stats", "--export", "nosuch")[0]);
            assertEquals("1", ctl("stats", "lin", "--export", "disk")[0], "a device or an export, not both");

            PrometheusText m = scrape();
            assertEquals("counter", m.type("blkstack_export_requests_total"));
            assertEquals("histogram", m.type("blkstack_export_latency_seconds"));
            assertEquals(4, m.value("blkstack_export_requests_total", "export", "disk", "device", "lin", "command", "read"));
            assertEquals(5, m.value("blkstack_export_requests_total", "export", "disk", "device", "lin", "command", "write"));
            assertEquals(2, m.value("blkstack_export_requests_total", "export", "disk", "device", "lin", "command", "trim"));
            assertEquals(1, m.value("blkstack_export_requests_total", "export", "disk", "device", "lin", "command",
                    "write_zeroes"));
            assertEquals(1, m.value("blkstack_export_requests_total", "export", "disk", "device", "lin", "command", "flush"));
            assertEquals(3 * 8192, m.value("blkstack_export_bytes_total", "export", "disk", "device", "lin", "command",
                    "read"));
            assertEquals(4 * 4096, m.value("blkstack_export_bytes_total", "export", "disk", "device", "lin", "command",
                    "write"));
            assertEquals(1, m.value("blkstack_export_errors_total", "export", "disk", "device", "lin", "error", "EINVAL"));
            assertEquals(1, m.value("blkstack_export_errors_total", "export", "disk", "device", "lin", "error", "ENOSPC"));
            assertEquals(0, m.value("blkstack_export_errors_total", "export", "disk", "device", "lin", "error", "EIO"));
            assertEquals(1, m.value("blkstack_export_errors_total", "export", "ro", "device", "lin", "error", "EPERM"));
            assertEquals(0, m.value("blkstack_export_in_flight", "export", "disk", "device", "lin"));
            assertEquals(4, m.value("blkstack_export_latency_seconds_count", "export", "disk", "device", "lin",
                    "class", "read"));
            assertEquals(5, m.value("blkstack_export_latency_seconds_bucket", "export", "disk", "device", "lin",
                    "class", "write", "le", "+Inf"));
            assertEquals(2, m.value("blkstack_export_requests_total", "export", "ro", "device", "lin", "command", "read"));
            // The device counts what both exports sent down: 3 + 2 reads of data, 4 writes (failed
            // requests never became bios), and the zeroes and trims under their own operations.
            assertEquals(5, m.value("blkstack_device_ios_total", "device", "lin", "op", "read"));
            assertEquals(4, m.value("blkstack_device_ios_total", "device", "lin", "op", "write"));
        }
        String[] removed = ctl("export", "remove", "ro");
        assertEquals("0", removed[0], removed[2]);
        assertEquals("0", ctl("export", "add", "ro", "--device", "lin", "--readonly")[0]);
        JsonNode again = settled("ro");
        assertEquals(0, again.path("reads").asLong(), "an export added again starts from zero");
        assertEquals(0, again.path("errors").path("EPERM").asLong());
    }

    /** The export's statistics once nothing is in flight (bounded polling of a progress condition). */
    private JsonNode settled(String export) throws IOException {
        try (ControlClient client = new ControlClient(socket, 60_000_000_000L)) {
            JsonNode last = null;
            for (int i = 0; i < POLLS_MAX; i++) {
                ControlClient.Reply reply = client.send("GET", "/v1/exports/" + export + "/stats", null);
                assertEquals(200, reply.status(), reply.body());
                last = client.tree(reply);
                if (last.path("inFlight").asLong() == 0) {
                    return last;
                }
            }
            fail("export " + export + " still has requests in flight after " + POLLS_MAX + " polls: " + last);
            return last;
        }
    }

    private static Map<String, Long> errors(JsonNode stats) {
        Map<String, Long> out = new java.util.HashMap<>();
        stats.path("errors").properties().forEach(e -> out.put(e.getKey(), e.getValue().asLong()));
        return out;
    }

    private PrometheusText scrape() throws Exception {
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + metrics.port()
                + "/metrics")).timeout(Duration.ofSeconds(30)).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode(), r.body());
        return PrometheusText.parse(r.body());
    }

    /** The whitespace-separated columns of the first line of {@code text} that starts with {@code prefix}. */
    private static List<String> row(String text, String prefix) {
        String line = text.lines().filter(l -> l.startsWith(prefix)).findFirst()
                .orElseThrow(() -> new AssertionError("no line '" + prefix + "' in\n" + text));
        return List.of(line.trim().split("\\s+"));
    }

    /** {@code blkstack ctl --socket SOCKET args...} in-process: exit code, stdout, stderr. */
    private String[] ctl(String... args) {
        CommandLine commandLine = Main.commandLine();
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        commandLine.setOut(new PrintWriter(out, true));
        commandLine.setErr(new PrintWriter(err, true));
        List<String> all = new ArrayList<>(List.of("ctl", "--socket", socket.toString()));
        all.addAll(Arrays.asList(args));
        int code = commandLine.execute(all.toArray(new String[0]));
        return new String[] {Integer.toString(code), out.toString(), err.toString()};
    }
}
