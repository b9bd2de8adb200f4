package io.blkstack.cli;

import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.config.ConfigException;
import io.blkstack.config.ListenAddress;
import io.blkstack.config.MiniNbdClient;
import io.blkstack.config.StackConfig;
import io.blkstack.control.PrometheusText;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * {@code serve --metrics} and {@code ctl stats} as a user meets them: a separate JVM serves a
 * linear device over memory with metrics on a free loopback port; an NBD client issues a known
 * number of reads, writes and a flush of known sizes; {@code /metrics}, parsed strictly, counts
 * exactly that I/O on the exported device, and {@code ctl stats} prints the same numbers; an idle
 * thin pool shows its size, no data used, and mode rw. A bad
 * {@code --metrics} value is a usage error naming it; an address beyond loopback warns.
 */
class ServeMetricsTest {

    private static final long STOP_SECONDS_MAX = 60;
    private static final Pattern LISTENING = Pattern.compile("listening on 127\\.0\\.0\\.1:(\\d+)");
    private static final Pattern METRICS = Pattern.compile("^metrics: (http://127\\.0\\.0\\.1:\\d+/metrics) ");
    /** How many scrapes may pass until the last completion is counted (a reply may leave just before it). */
    private static final int SCRAPES_MAX = 200;

    @TempDir
    Path tmp;

    @Test
    @Timeout(180)
    void metricsAndCtlStatsCountExactlyTheIoIssued() throws Exception {
        Path socket = tmp.resolve("ctl.sock");
        Path config = Files.writeString(tmp.resolve("m.yaml"), """
                memory: 32MiB
                devices:
                  m: { memory: 16MiB }
                  meta: { memory: 4MiB }
                  tdata: { memory: 16MiB }
                mapped:
                  lin: "0 32768 linear m 0"
                  pool: "0 32768 thin-pool meta tdata 128 16"
                exports:
                  disk: { device: lin }
                """);
        Process server = start("serve.err", "serve", "--config", config.toString(), "--listen", "127.0.0.1:0",
                "--control", socket.toString(), "--metrics", "127.0.0.1:0");
        try {
            List<String> lines = awaitReady(server, "serve.err");
            int nbdPort = -1;
            String url = null;
            for (String line : lines) {
                Matcher l = LISTENING.matcher(line);
                nbdPort = l.find() ? Integer.parseInt(l.group(1)) : nbdPort;
                Matcher m = METRICS.matcher(line);
                url = m.find() ? m.group(1) : url;
            }
            assertNotEquals(-1, nbdPort, lines.toString());
            assertNotNull(url, "the metrics URL is announced: " + lines);

            int writes = 5;
            int writeBytes = 4096;
            int reads = 3;
            int readBytes = 8192;
            try (MiniNbdClient client = new MiniNbdClient(new InetSocketAddress("127.0.0.1", nbdPort), "disk")) {
                for (int i = 0; i < writes; i++) {
                    byte[] data = new byte[writeBytes];
                    Arrays.fill(data, (byte) (i + 1));
                    assertEquals(0, client.write((long) i * writeBytes, data));
                }
                for (int i = 0; i < reads; i++) {
                    assertEquals(readBytes, client.read((long) i * readBytes, readBytes).length);
                }
                assertEquals(0, client.flush());

                PrometheusText metrics = scrapeSettled(url, "lin");
                assertEquals("counter", metrics.type("blkstack_device_ios_total"));
                assertEquals("histogram", metrics.type("blkstack_device_latency_seconds"));
                assertEquals(writes, metrics.value("blkstack_device_ios_total", "device", "lin", "op", "write"));
                assertEquals(reads, metrics.value("blkstack_device_ios_total", "device", "lin", "op", "read"));
                assertEquals(1, metrics.value("blkstack_device_ios_total", "device", "lin", "op", "flush"));
                assertEquals(0, metrics.value("blkstack_device_ios_total", "device", "lin", "op", "discard"));
                assertEquals(writes * writeBytes / 512,
                        metrics.value("blkstack_device_sectors_total", "device", "lin", "op", "write"));
                assertEquals(reads * readBytes / 512,
                        metrics.value("blkstack_device_sectors_total", "device", "lin", "op", "read"));
                assertEquals(0, metrics.value("blkstack_device_errors_total", "device", "lin", "status", "EIO"));
                assertEquals(reads, metrics.value("blkstack_device_latency_seconds_count", "device", "lin",
                        "class", "read"));
                assertEquals(writes, metrics.value("blkstack_device_latency_seconds_bucket", "device", "lin",
                        "class", "write", "le", "+Inf"));
                assertEquals(1, metrics.value("blkstack_nbd_export_clients", "export", "disk", "device", "lin"));
                assertEquals(1, metrics.value("blkstack_nbd_connections"));
                assertEquals(0, metrics.value("blkstack_mempool_pool_waits_total", "pool", "nbd-bio"));
                assertTrue(metrics.value("blkstack_pages_free") > 0);
                assertEquals(metrics.value("blkstack_pages"),
                        metrics.value("blkstack_pages_free") + metrics.value("blkstack_pages_used"));
                // The ledger: the payload budget is promised and, with no request in flight, nothing of it is taken.
                double budget = metrics.value("blkstack_pages_ledger", "owner", "nbd payload budget", "kind", "promise",
                        "state", "owed");
                assertTrue(budget > 0);
                assertEquals(0, metrics.value("blkstack_pages_ledger", "owner", "nbd payload budget", "kind", "promise",
                        "state", "held"));
                assertEquals(budget, metrics.value("blkstack_pages_promised"));
                for (String counter : List.of("blkstack_bioset_rescuer_punts_total", "blkstack_wq_maydays_total",
                        "blkstack_wq_rescuer_runs_total", "blkstack_pages_shrinker_scans_total",
                        "blkstack_watchdog_hung_tasks_total")) {
                    assertTrue(metrics.value(counter) >= 0, counter);
                }
                assertTrue(metrics.has("blkstack_mempool_reserve"), "every mempool's reserve is shown");
                assertEquals(32768 / 128, metrics.value("blkstack_thin_pool_data_blocks", "device", "pool", "target", "0"));
                assertEquals(0, metrics.value("blkstack_thin_pool_data_blocks_used", "device", "pool", "target", "0"));
                assertEquals(1, metrics.value("blkstack_thin_pool_mode", "device", "pool", "target", "0", "mode", "rw"));
                assertEquals(0, metrics.value("blkstack_thin_pool_mode", "device", "pool", "target", "0",
                        "mode", "out_of_data_space"));

                String[] stats = ctl(socket, "stats", "lin");
                assertEquals("0", stats[0], stats[2]);
                String row = stats[1].lines().filter(s -> s.startsWith("lin ")).findFirst().orElseThrow();
                String[] cols = row.trim().split("\\s+");
                // NAME READS READ_SECT WRITES WRITE_SECT FLUSHES DISCARDS DISCARD_SECT WZEROES WZERO_SECT INFLIGHT ERRORS
                assertEquals(List.of("lin", "3", "48", "5", "40", "1", "0", "0", "0", "0", "0", "0"),
                        List.of(cols), stats[1]);
                String[] dump = ctl(socket, "dump");
                assertTrue(dump[1].contains("metrics: 127.0.0.1:0\n"), "dump keeps the metrics address: " + dump[1]);
                String[] all = ctl(socket, "stats");
                assertEquals("0", all[0], all[2]);
                assertTrue(all[1].lines().anyMatch(s -> s.startsWith("m ")), "every device is listed: " + all[1]);
                assertEquals("1", ctl(socket, "stats", "nosuch")[0]);
            }
            server.destroy();
            assertTrue(server.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS), "serve stopped");
            assertEquals(0, server.exitValue(), Files.readString(tmp.resolve("serve.err")));
        } finally {
            server.destroyForcibly();
        }
    }

    @Test
    void yamlMetricsIsAnAddressCheckedWithItsLine() throws Exception {
        String stack = """
                devices:
                  m: { memory: 1MiB }
                exports:
                  disk: { device: m }
                """;
        StackConfig good = StackConfig.parse("s.yaml", "metrics: 127.0.0.1:9109\n" + stack, tmp);
        assertEquals(new ListenAddress("127.0.0.1", 9109), good.metrics());
        assertNull(StackConfig.parse("s.yaml", stack, tmp).metrics(), "off unless asked");
        ConfigException e = assertThrows(ConfigException.class,
                () -> StackConfig.parse("s.yaml", "memory: 16MiB\nmetrics: 9109\n" + stack, tmp));
        assertEquals(2, e.line(), e.getMessage());
        assertTrue(e.getMessage().contains("metrics") && e.getMessage().contains("'9109'"), e.getMessage());
    }

    @Test
    void aBadMetricsAddressIsAUsageErrorNamingIt() {
        String[] r = serveInProcess("--metrics", "nonsense");
        assertEquals("1", r[0], r[2]);
        assertTrue(r[2].contains("--metrics: 'nonsense' is not an address"), r[2]);
        r = serveInProcess("--metrics", "127.0.0.1:99999");
        assertEquals("1", r[0], r[2]);
        assertTrue(r[2].contains("--metrics: '127.0.0.1:99999'"), r[2]);
    }

    @Test
    void metricsBeyondLoopbackWarns() {
        // --max-connections 0 stops serve right after the addresses are checked, so nothing binds.
        String[] wide = serveInProcess("--metrics", "0.0.0.0:0", "--max-connections", "0");
        assertEquals("1", wide[0], wide[2]);
        assertTrue(wide[2].contains("warning: metrics on 0.0.0.0:0, beyond loopback"), wide[2]);
        String[] local = serveInProcess("--metrics", "127.0.0.1:0", "--max-connections", "0");
        assertEquals("1", local[0], local[2]);
        assertFalse(local[2].contains("warning"), local[2]);
    }

    /**
     * Scrapes until {@code device} has nothing in flight: a reply can reach the client a moment
     * before its bio's completion is counted. Bounded by {@link #SCRAPES_MAX} scrapes.
     */
    private static PrometheusText scrapeSettled(String url, String device) throws Exception {
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        PrometheusText last = null;
        for (int i = 0; i < SCRAPES_MAX; i++) {
            HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create(url)).timeout(Duration.ofSeconds(30))
                    .build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(200, r.statusCode(), r.body());
            last = PrometheusText.parse(r.body());
            if (last.value("blkstack_device_in_flight", "device", device) == 0) {
                return last;
            }
        }
        fail(device + " still has bios in flight after " + SCRAPES_MAX + " scrapes");
        return last;
    }

    private String[] serveInProcess(String... args) {
        CommandLine commandLine = Main.commandLine();
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        commandLine.setOut(new PrintWriter(out, true));
        commandLine.setErr(new PrintWriter(err, true));
        List<String> all = new ArrayList<>(List.of("serve", "--listen", "127.0.0.1:0"));
        all.addAll(List.of(args));
        int code = commandLine.execute(all.toArray(new String[0]));
        return new String[] {Integer.toString(code), out.toString(), err.toString()};
    }

    /** {@code blkstack ctl --socket SOCKET ARGS} in-process: exit code, stdout, stderr. */
    private static String[] ctl(Path socket, String... args) {
        CommandLine commandLine = Main.commandLine();
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        commandLine.setOut(new PrintWriter(out, true));
        commandLine.setErr(new PrintWriter(err, true));
        List<String> all = new ArrayList<>(List.of("ctl", "--socket", socket.toString()));
        all.addAll(List.of(args));
        int code = commandLine.execute(all.toArray(new String[0]));
        return new String[] {Integer.toString(code), out.toString(), err.toString()};
    }

    private Process start(String stderr, String... args) throws Exception {
        return new ProcessBuilder(MainProcess.command(args)).directory(tmp.toFile())
                .redirectError(tmp.resolve(stderr).toFile()).start();
    }

    private List<String> awaitReady(Process p, String stderr) throws Exception {
        BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
        List<String> lines = new ArrayList<>();
        for (String line; (line = out.readLine()) != null; ) {
            lines.add(line);
            if (line.equals(ServeCommand.READY)) {
                return lines;
            }
        }
        fail("serve ended before it was ready; stdout " + lines + ", stderr: " + Files.readString(tmp.resolve(stderr)));
        return lines;
    }
}
