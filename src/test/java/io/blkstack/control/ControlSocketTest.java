package io.blkstack.control;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.JsonNode;
import io.blkstack.block.TestKernel;
import io.blkstack.cli.Main;
import io.blkstack.config.MiniNbdClient;
import io.blkstack.config.Stack;
import io.blkstack.config.StackConfig;
import io.blkstack.dm.MappedDevice;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.nbd.NbdServer;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * The control socket against a real running stack (memory devices, a linear device, a thin pool
 * with a volume, the NBD server on an ephemeral port), driven through {@code blkstack ctl}'s code
 * in-process and through raw HTTP requests (and {@code curl --unix-socket} where curl is
 * installed): every verb, every refusal (and that a refusal changes nothing), the socket's mode
 * and ownership, the live thin-snapshot workflow read back over NBD, and 100 live reloads under a
 * writing and verifying client with no error.
 */
class ControlSocketTest {

    private static final long MiB = 1L << 20;
    private static final String CONFIG = """
            memory: 32MiB
            control: ctl.sock
            devices:
              a: { memory: 8MiB }
              slow: { memory: 1MiB, latency: 5s }
              meta: { memory: 4MiB }
              data: { memory: 16MiB }
            mapped:
              lin: "0 16384 linear a 0"
              pool: "0 32768 thin-pool meta data 128 16"
              vol0: "0 32768 thin pool 0"
              slowlin: "0 2048 linear slow 0"
            exports:
              lin: { device: lin }
              vol0: { device: vol0 }
              slowlin: { device: slowlin }
            """;

    @TempDir
    Path tmp;

    private TestKernel tk;
    private Stack stack;
    private NbdServer server;
    private ControlServer control;
    private Path socket;
    private final List<String> log = new CopyOnWriteArrayList<>();

    @BeforeEach
    void start() throws Exception {
        StackConfig config = StackConfig.parse("test.yaml", CONFIG, tmp);
        tk = new TestKernel("control", config.memoryBytes(), Policies.defaults(), Faults.NONE);
        stack = Stack.build(tk.kernel, config, Stack.Mode.SERVE);
        server = new NbdServer(tk.kernel, stack.exports(), new InetSocketAddress("127.0.0.1", 0));
        server.start();
        socket = config.controlPath();
        assertEquals(tmp.resolve("ctl.sock"), socket, "YAML control resolves against the file's directory");
        LiveStack live = new LiveStack(tk.kernel, stack, server, config, 5_000_000_000L, log::add);
        control = ControlServer.start(socket, live, log::add);
    }

    @AfterEach
    void stop() {
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

    // ---- helpers -----------------------------------------------------------------------------

    private record Run(int exitCode, String out, String err) {
    }

    /** Runs {@code blkstack ctl --socket SOCKET args...} in-process. */
    private Run ctl(String... args) {
        CommandLine commandLine = Main.commandLine();
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        commandLine.setOut(new PrintWriter(out, true));
        commandLine.setErr(new PrintWriter(err, true));
        List<String> all = new ArrayList<>(List.of("ctl", "--socket", socket.toString()));
        all.addAll(Arrays.asList(args));
        int code = commandLine.execute(all.toArray(new String[0]));
        return new Run(code, out.toString(), err.toString());
    }

    private Run ok(String... args) {
        Run r = ctl(args);
        assertEquals(0, r.exitCode, String.join(" ", args) + ": " + r.err);
        return r;
    }

    private ControlClient.Reply raw(String method, String path, String body) throws IOException {
        try (ControlClient client = new ControlClient(socket, 60_000_000_000L)) {
            return body == null ? client.send(method, path, null) : client.sendRaw(method, path, body);
        }
    }

    private JsonNode json(ControlClient.Reply reply) throws IOException {
        try (ControlClient client = new ControlClient(socket, 60_000_000_000L)) {
            return client.tree(reply);
        }
    }

    private InetSocketAddress nbd() {
        return server.localAddress();
    }

    private static byte[] pattern(long seed, int bytes) {
        byte[] data = new byte[bytes];
        new Random(seed).nextBytes(data);
        return data;
    }

    // ---- the socket --------------------------------------------------------------------------

    /**
     * The socket is 0600; a second server on the same path is refused while the first answers;
     * a stale socket (its server gone) is replaced; a path that is not a socket is refused.
     */
    @Test
    @Timeout(60)
    void socketIsPrivateAndALiveServerKeepsItsPath() throws Exception {
        assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(socket)));
        IOException owned = assertThrows(IOException.class, () -> ControlServer.start(socket, null, log::add));
        assertTrue(owned.getMessage().contains("in use"), owned.getMessage());
        assertEquals(0, ok("ls").exitCode, "the first server still answers");

        Path stale = tmp.resolve("stale.sock");
        try (ServerSocketChannel gone = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            gone.bind(UnixDomainSocketAddress.of(stale));
        }
        assertTrue(Files.exists(stale), "a closed Unix server leaves its socket file behind");
        LiveStack live = new LiveStack(tk.kernel, stack, server, StackConfig.parse("t", CONFIG, tmp), 1_000_000_000L,
                log::add);
        try (ControlServer second = ControlServer.start(stale, live, log::add)) {
            assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(stale)));
            assertTrue(log.stream().anyMatch(l -> l.contains("replaced the stale control socket")), log.toString());
        }
        assertFalse(Files.exists(stale), "close removes the socket file");

        Path file = Files.writeString(tmp.resolve("plain"), "x");
        IOException notSocket = assertThrows(IOException.class, () -> ControlServer.start(file, live, log::add));
        assertTrue(notSocket.getMessage().contains("not a socket"), notSocket.getMessage());
    }

    // ---- every verb --------------------------------------------------------------------------

    @Test
    @Timeout(120)
    void everyVerbThroughCtl() throws Exception {
        String ls = ok("ls").out;
        assertTrue(ls.contains("a\t(memory, 16384 sectors) used by: lin;"), ls);
        assertTrue(ls.contains("lin\t(mapped, 16384 sectors) depends on: a; exported as: lin;"), ls);
        assertTrue(ls.contains("pool\t(mapped, 32768 sectors) depends on: meta, data; used by: vol0;"), ls);
        assertTrue(ls.contains("vol0\t(mapped, 32768 sectors) depends on: pool, data; exported as: vol0;"), ls);
        assertTrue(ls.contains("export vol0\t(vol0, 0 client(s))"), ls);

        assertEquals("0 16384 linear a 0\n", ok("table", "lin").out);
        String status = ok("status", "pool").out;
        assertTrue(status.startsWith("0 32768 thin-pool "), status);

        ok("create", "half", "--table", "0 8192 linear a 8192");
        String info = ok("info", "half").out;
        assertTrue(info.contains("State:             ACTIVE"), info);
        assertTrue(info.contains("Tables present:    LIVE\n"), info);
        assertTrue(info.contains("Depends on:        a"), info);

        ok("load", "half", "--table", "0 4096 linear a 8192", "--table", "4096 4096 linear a 12288");
        assertTrue(ok("info", "half").out.contains("LIVE & INACTIVE"));
        assertEquals("0 8192 linear a 8192\n", ok("table", "half").out, "a loaded table is not live yet");
        ok("suspend", "half");
        assertTrue(ok("info", "half").out.contains("State:             SUSPENDED"));
        ok("resume", "half");
        assertEquals("0 4096 linear a 8192\n4096 4096 linear a 12288\n", ok("table", "half").out);
        assertTrue(ok("info", "half").out.contains("State:             ACTIVE"));

        Path file = Files.writeString(tmp.resolve("half.table"), "0 8192 linear a 8192\n");
        ok("reload", "half", "--file", file.toString());
        assertEquals("0 8192 linear a 8192\n", ok("table", "half").out);

        ok("export", "add", "half", "--device", "half", "--readonly", "--description", "the upper half of a");
        String exports = ok("export", "ls").out;
        assertTrue(exports.contains("half\thalf\tro\t4194304\t0 client(s)\tthe upper half of a"), exports);
        byte[] data = pattern(1, 8192);
        try (MiniNbdClient c = new MiniNbdClient(nbd(), "lin")) {
            assertEquals(0, c.write(8192L * 512, data));
            assertEquals(0, c.flush());
        }
        try (MiniNbdClient c = new MiniNbdClient(nbd(), "half")) {
            assertArrayEquals(data, c.read(0, data.length), "the new export serves the device");
        }
        ok("export", "remove", "half");
        assertThrows(IOException.class, () -> new MiniNbdClient(nbd(), "half"), "a removed export refuses clients");

        ok("message", "pool", "0", "create_thin", "3");
        ok("create", "vol3", "--table", "0 32768 thin pool 3");
        ok("remove", "vol3");
        ok("message", "pool", "0", "delete 3");
        ok("remove", "half");
        assertEquals(1, ctl("info", "half").exitCode, "removed");

        String dump = ok("dump").out;
        StackConfig again = StackConfig.parse("dump.yaml", dump, tmp);
        assertEquals(List.of("lin", "pool", "vol0", "slowlin"), again.mapped().stream().map(m -> m.name()).toList());
        assertEquals("0 16384 linear a 0\n", again.mapped().get(0).table());
        assertEquals(List.of("lin", "vol0", "slowlin"), again.exports().stream().map(e -> e.name()).toList());
        assertEquals(socket, again.control());
        assertTrue(log.stream().anyMatch(l -> l.equals("reloaded half")), log.toString());
    }

    /** A dump after a live create lists the new device after what it names, and serve accepts it. */
    @Test
    @Timeout(60)
    void dumpKeepsLiveChangesInDependencyOrder() throws Exception {
        ok("create", "top", "--table", "0 4096 linear lin 0");
        ok("reload", "lin", "--table", "0 16384 linear a 0");
        ok("export", "add", "top", "--device", "top");
        StackConfig again = StackConfig.parse("dump.yaml", ok("dump").out, tmp);
        List<String> order = again.mapped().stream().map(m -> m.name()).toList();
        assertTrue(order.indexOf("lin") < order.indexOf("top"), order.toString());
        assertTrue(again.exports().stream().anyMatch(e -> e.name().equals("top") && e.device().equals("top")));
        List<String> built = new CopyOnWriteArrayList<>();
        Thread dry = new Thread(() -> {
            try (TestKernel other = new TestKernel("dump-check", 32 * MiB, Policies.defaults(), Faults.NONE);
                    Stack check = Stack.build(other.kernel, again, Stack.Mode.DRY)) {
                check.mappedDevices().forEach(m -> built.add(m.name() + " " + m.capacitySectors()));
            } catch (Exception e) {
                built.add(e.toString());
            }
        }, "dump-check");
        dry.start();
        dry.join(TimeUnit.SECONDS.toMillis(30));
        assertTrue(built.contains("top 4096"), "the dump builds: " + built);
    }

    // ---- refusals ----------------------------------------------------------------------------

    /** Each refusal has its status, code and a message naming device, line and value; nothing changes. */
    @Test
    @Timeout(60)
    void refusalsSayWhyAndChangeNothing() throws Exception {
        ControlClient.Reply badJson = raw("POST", "/v1/devices", "{\"name\": \"x\", \"table\": ");
        assertEquals(400, badJson.status());
        assertEquals("bad-json", json(badJson).path("error").asText());

        ControlClient.Reply unknownField = raw("POST", "/v1/devices", "{\"name\":\"x\",\"tabel\":\"0 8 linear a 0\"}");
        assertEquals(400, unknownField.status());
        assertEquals("tabel", json(unknownField).path("value").asText());

        ControlClient.Reply unknownVerb = raw("POST", "/v1/devices/lin/explode", "{}");
        assertEquals(404, unknownVerb.status());
        assertEquals("unknown-route", json(unknownVerb).path("error").asText());
        assertEquals(405, raw("PATCH", "/v1/devices/lin", null).status());
        Run noVerb = ctl("explode", "lin");
        assertEquals(1, noVerb.exitCode, noVerb.err);

        Run gap = ctl("create", "gappy", "--table", "0 100 linear a 0", "--table", "200 100 linear a 100");
        assertEquals(1, gap.exitCode);
        assertTrue(gap.err.contains("gappy") && gap.err.contains("line 2") && gap.err.contains("'200'")
                && gap.err.contains("gap"), gap.err);
        ControlClient.Reply gapReply = raw("POST", "/v1/devices",
                "{\"name\":\"gappy\",\"table\":\"0 100 linear a 0\\n200 100 linear a 100\"}");
        assertEquals(400, gapReply.status());
        JsonNode g = json(gapReply);
        assertEquals("bad-table", g.path("error").asText());
        assertEquals("gappy", g.path("device").asText());
        assertEquals(2, g.path("line").asInt());
        assertEquals("200", g.path("value").asText());
        assertEquals(1, ctl("info", "gappy").exitCode, "nothing was created");

        Run thinExists = ctl("message", "pool", "0", "create_thin", "0");
        assertEquals(1, thinExists.exitCode);
        assertTrue(thinExists.err.contains("pool") && thinExists.err.contains("create_thin 0"), thinExists.err);

        Run exported = ctl("remove", "lin");
        assertEquals(1, exported.exitCode);
        assertTrue(exported.err.contains("busy: exported as lin"), exported.err);
        Run used = ctl("remove", "pool");
        assertTrue(used.err.contains("busy: used by vol0 / exported as") == false
                && used.err.contains("busy: used by vol0"), used.err);
        assertEquals("0 16384 linear a 0\n", ok("table", "lin").out, "still there, unchanged");

        Run cycle = ctl("load", "lin", "--table", "0 16384 linear lin 0");
        assertEquals(1, cycle.exitCode);
        assertTrue(cycle.err.contains("cycle"), cycle.err);
        Run size = ctl("reload", "lin", "--table", "0 8192 linear a 0");
        assertTrue(size.err.contains("8192") && size.err.contains("lin"), size.err);
        assertFalse(ok("info", "lin").out.contains("INACTIVE"), "a refused load leaves no inactive table");

        Run bottom = ctl("remove", "a");
        assertTrue(bottom.err.contains("bottom device"), bottom.err);
        assertEquals(1, ctl("info", "nosuch").exitCode);
        assertEquals(1, ctl("export", "add", "lin", "--device", "a").exitCode, "export name taken");

        try (MiniNbdClient c = new MiniNbdClient(nbd(), "vol0")) {
            Run connected = ctl("export", "remove", "vol0");
            assertEquals(1, connected.exitCode);
            assertTrue(connected.err.contains("1 client(s) connected"), connected.err);
            assertEquals(0, c.write(0, pattern(3, 4096)), "the refused remove did not touch the client");
        }
    }

    /**
     * Malformed and refused requests of every kind change nothing: the dump, every device's
     * info, table and status, and the export list are the same before and after, and no change
     * was logged. Each refusal is a 4xx with an error code and a message.
     */
    @Test
    @Timeout(300)
    void malformedRequestsChangeNothing() throws Exception {
        try (ControlClient client = new ControlClient(socket, 60_000_000_000L)) {
            malformedRequestsChangeNothing(client);
        }
    }

    private void malformedRequestsChangeNothing(ControlClient client) throws Exception {
        String before = state(client);
        int logged = log.size();
        String[][] raw = {
            {"POST", "/v1/devices", "[1, 2]"},
            {"POST", "/v1/devices", "null"},
            {"POST", "/v1/devices", "{\"name\":\"lin\",\"table\":\"0 8 linear a 0\"}"},
            {"POST", "/v1/devices", "{\"name\":\"bad name\",\"table\":\"0 8 linear a 0\"}"},
            {"POST", "/v1/devices", "{\"name\":\"n1\",\"table\":\"0 8 linear nosuch 0\"}"},
            {"POST", "/v1/devices", "{\"name\":\"n1\",\"table\":\"0 8 frobnicate a 0\"}"},
            {"POST", "/v1/devices", "{\"name\":\"n1\",\"table\":\"0 8 linear a\"}"},
            {"POST", "/v1/devices", "{\"name\":\"n1\"}"},
            {"PUT", "/v1/devices/lin/table", "{\"table\":\"0 8192 linear a 0\\n9000 7384 linear a 9000\"}"},
            {"PUT", "/v1/devices/nosuch/table", "{\"table\":\"0 8 linear a 0\"}"},
            {"POST", "/v1/devices/lin/reload", "{\"table\":\"0 16384 linear a 0\",\"timeout\":\"soon\"}"},
            {"POST", "/v1/devices/lin/reload", "{\"table\":\"0 8192 linear a 0\"}"},
            {"POST", "/v1/devices/lin/resume", "{\"timeout\":\"-1s\"}"},
            {"POST", "/v1/devices/nosuch/suspend", ""},
            {"POST", "/v1/devices/a/suspend", ""},
            {"DELETE", "/v1/devices/a", null},
            {"DELETE", "/v1/devices/pool", null},
            {"POST", "/v1/devices/pool/message", "{\"sector\":0,\"message\":\"create_thin x\"}"},
            {"POST", "/v1/devices/pool/message", "{\"sector\":0,\"message\":\"create_snap 9 99\"}"},
            {"POST", "/v1/devices/pool/message", "{\"sector\":0,\"message\":\"set_transaction_id 5 6\"}"},
            {"POST", "/v1/devices/pool/message", "{\"sector\":0,\"message\":\"delete 42\"}"},
            {"POST", "/v1/devices/pool/message", "{\"sector\":99999999,\"message\":\"create_thin 9\"}"},
            {"POST", "/v1/devices/pool/message", "{\"sector\":-1,\"message\":\"create_thin 9\"}"},
            {"POST", "/v1/devices/pool/message", "{\"sector\":0,\"message\":\"  \"}"},
            {"POST", "/v1/devices/lin/message", "{\"sector\":0,\"message\":\"hello\"}"},
            {"POST", "/v1/exports", "{\"name\":\"e1\",\"device\":\"nosuch\"}"},
            {"POST", "/v1/exports", "{\"name\":\"e1\"}"},
            {"POST", "/v1/exports", "{\"name\":\"lin\",\"device\":\"a\"}"},
            {"POST", "/v1/exports", "{\"name\":\"e1\",\"device\":\"a\",\"readonly\":\"maybe\"}"},
            {"DELETE", "/v1/exports/nosuch", null},
            {"DELETE", "/v1/exports/lin?force=perhaps", null},
            {"GET", "/v1/exports/nosuch/stats", null},
            {"GET", "/v1/stats/nosuch", null},
            {"PUT", "/v1/dump", "{}"},
            {"GET", "/v2/devices", null},
        };
        for (String[] r : raw) {
            ControlClient.Reply reply = r[2] == null ? client.send(r[0], r[1], null) : client.sendRaw(r[0], r[1], r[2]);
            String what = String.join(" ", r) + " -> " + reply.status() + " " + reply.body();
            assertTrue(reply.status() >= 400 && reply.status() < 500, what);
            JsonNode error = client.tree(reply);
            assertEquals(reply.status(), error.path("status").asInt(), what);
            assertFalse(error.path("error").asText().isEmpty(), what);
            assertFalse(error.path("message").asText().isEmpty(), what);
        }
        assertEquals(before, state(client), "no refusal changed anything");
        assertEquals(logged, log.size(), "no change was logged: " + log.subList(logged, log.size()));
    }

    /**
     * Everything a request could change, as text: the dump, every device's info (state, tables,
     * dependencies, exports), every export, and each mapped device's table and status.
     */
    private static String state(ControlClient client) throws IOException {
        StringBuilder b = new StringBuilder();
        for (String path : List.of("/v1/dump", "/v1/devices", "/v1/exports", "/v1/devices/lin/table",
                "/v1/devices/pool/table", "/v1/devices/vol0/table", "/v1/devices/slowlin/table",
                "/v1/devices/lin/status", "/v1/devices/pool/status", "/v1/devices/vol0/status",
                "/v1/devices/slowlin/status")) {
            ControlClient.Reply reply = client.send("GET", path, null);
            assertEquals(200, reply.status(), path + ": " + reply.body());
            b.append(reply.body());
        }
        return b.toString();
    }

    /**
     * A request sent while the device is suspended is held, and after resume it is mapped by the
     * table loaded before the suspend: a write to sector 0 of {@code win} (live table: a at 0;
     * loaded: a at 8192) stays in flight on the export while suspended, completes after resume,
     * and lands at sector 8192 of a, not at 0 (read back through {@code lin}, which maps all of a).
     */
    @Test
    @Timeout(60)
    void aRequestSentWhileSuspendedIsHeldThenMappedByTheLoadedTable() throws Exception {
        ok("create", "win", "--table", "0 4096 linear a 0");
        ok("export", "add", "win", "--device", "win");
        ok("load", "win", "--table", "0 4096 linear a 8192");
        ok("suspend", "win");
        byte[] data = pattern(31, 4096);
        List<Integer> results = new CopyOnWriteArrayList<>();
        Thread writer = new Thread(() -> {
            try (MiniNbdClient c = new MiniNbdClient(nbd(), "win")) {
                results.add(c.write(0, data));
            } catch (IOException e) {
                results.add(-1);
            }
        }, "held-write");
        writer.start();
        io.blkstack.nbd.ExportStats stats = server.exportStats("win");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (stats.snapshot().inFlight() == 0 && System.nanoTime() < deadline) {
            java.util.concurrent.locks.LockSupport.parkNanos(200_000);
        }
        assertEquals(1, stats.snapshot().inFlight(), "the write reached the server");
        assertEquals(List.of(), results, "held while suspended");
        assertTrue(ok("info", "win").out.contains("State:             SUSPENDED"));
        ok("resume", "win");
        writer.join(TimeUnit.SECONDS.toMillis(30));
        assertEquals(List.of(0), results, "completed after resume");
        assertEquals("0 4096 linear a 8192\n", ok("table", "win").out);
        try (MiniNbdClient c = new MiniNbdClient(nbd(), "lin")) {
            assertArrayEquals(data, c.read(8192L * 512, data.length), "mapped by the loaded table");
            assertArrayEquals(new byte[data.length], c.read(0, data.length), "not by the old one");
        }
    }

    /** {@code curl --unix-socket} reaches the same routes (when curl is installed). */
    @Test
    @Timeout(60)
    void curlSpeaksToTheSocket() throws Exception {
        if (!installed("curl")) {
            return;
        }
        String ls = curl("-s", "--unix-socket", socket.toString(), "http://localhost/v1/devices");
        assertTrue(ls.contains("\"name\":\"pool\""), ls);
        String created = curl("-s", "-w", "%{http_code}", "--unix-socket", socket.toString(), "-X", "POST",
                "-H", "Content-Type: application/json", "-d", "{\"name\":\"c1\",\"table\":\"0 64 linear a 0\"}",
                "http://localhost/v1/devices");
        assertTrue(created.endsWith("201"), created);
        String bad = curl("-s", "-w", "%{http_code}", "--unix-socket", socket.toString(), "-X", "POST",
                "-d", "{not json", "http://localhost/v1/devices");
        assertTrue(bad.contains("\"error\":\"bad-json\"") && bad.endsWith("400"), bad);
        String busy = curl("-s", "-w", "%{http_code}", "--unix-socket", socket.toString(), "-X", "DELETE",
                "http://localhost/v1/devices/vol0");
        assertTrue(busy.contains("busy: exported as vol0") && busy.endsWith("409"), busy);
        Path huge = Files.writeString(tmp.resolve("huge.json"), "{\"name\":\"x\",\"table\":\""
                + "0".repeat((int) ControlServer.BODY_BYTES_MAX) + "\"}");
        String tooLarge = curl("-s", "-w", "%{http_code}", "--unix-socket", socket.toString(), "-X", "POST",
                "--data-binary", "@" + huge, "http://localhost/v1/devices");
        assertTrue(tooLarge.contains("\"error\":\"http\"") && tooLarge.endsWith("413"), tooLarge);
        String dump = curl("-s", "--unix-socket", socket.toString(), "http://localhost/v1/dump");
        assertTrue(dump.contains("c1: |\n    0 64 linear a 0"), dump);
    }

    // ---- thin workflow -----------------------------------------------------------------------

    /**
     * The live snapshot workflow: data written to vol0, {@code create_snap 7 0} while vol0 is
     * exported and in use, vol0 overwritten, a device for id 7 created and exported: over NBD it
     * reads vol0 as of the snapshot; then remove, and delete frees the id (a second delete says
     * it does not exist).
     */
    @Test
    @Timeout(120)
    void liveThinSnapshotWorkflow() throws Exception {
        byte[] before = pattern(11, 256 * 1024);
        byte[] after = pattern(12, 64 * 1024);
        try (MiniNbdClient vol0 = new MiniNbdClient(nbd(), "vol0")) {
            assertEquals(0, vol0.write(0, before));
            assertEquals(0, vol0.flush());
            ok("message", "pool", "0", "create_snap 7 0");
            assertEquals(0, vol0.write(64 * 1024, after));
            assertEquals(0, vol0.flush());
            ok("create", "snap7", "--table", "0 32768 thin pool 7");
            ok("export", "add", "snap7", "--device", "snap7", "--readonly");
            try (MiniNbdClient snap = new MiniNbdClient(nbd(), "snap7")) {
                assertArrayEquals(before, snap.read(0, before.length), "the snapshot is vol0 as of create_snap");
            }
            byte[] now = vol0.read(64 * 1024, after.length);
            assertArrayEquals(after, now, "the origin has the later data");
        }
        Run busy = ctl("message", "pool", "0", "delete", "7");
        assertEquals(1, busy.exitCode, "delete of an open thin device is refused");
        ok("export", "remove", "snap7");
        ok("remove", "snap7");
        ok("message", "pool", "0", "delete", "7");
        Run again = ctl("message", "pool", "0", "delete", "7");
        assertTrue(again.err.contains("does not exist"), again.err);
    }

    // ---- under I/O ---------------------------------------------------------------------------

    /**
     * 100 live reloads of lin between two equivalent tables (one linear line; two lines split at
     * the middle) while a client writes and reads back blocks across the whole device: no I/O
     * error and no mismatch, and every block reads back its last write at the end.
     */
    @Test
    @Timeout(300)
    void hundredReloadsUnderIoLoseNothing() throws Exception {
        int blocks = 64;
        int blockBytes = 128 * 1024;
        byte[][] last = new byte[blocks][];
        AtomicBoolean done = new AtomicBoolean();
        AtomicLong errors = new AtomicLong();
        AtomicLong ops = new AtomicLong();
        List<String> problems = new CopyOnWriteArrayList<>();
        CountDownLatch running = new CountDownLatch(1);
        Thread writer = new Thread(() -> {
            Random random = new Random(5);
            try (MiniNbdClient c = new MiniNbdClient(nbd(), "lin")) {
                while (!done.get()) {
                    int b = random.nextInt(blocks);
                    byte[] data = pattern(random.nextLong(), blockBytes);
                    if (c.write((long) b * blockBytes, data) != 0) {
                        errors.incrementAndGet();
                        problems.add("write error at block " + b);
                        continue;
                    }
                    last[b] = data;
                    if (!Arrays.equals(data, c.read((long) b * blockBytes, blockBytes))) {
                        errors.incrementAndGet();
                        problems.add("mismatch at block " + b);
                    }
                    if (ops.incrementAndGet() == 10) {
                        running.countDown();
                    }
                }
                for (int b = 0; b < blocks; b++) {
                    if (last[b] != null && !Arrays.equals(last[b], c.read((long) b * blockBytes, blockBytes))) {
                        errors.incrementAndGet();
                        problems.add("final mismatch at block " + b);
                    }
                }
            } catch (IOException e) {
                errors.incrementAndGet();
                problems.add(e.toString());
            } finally {
                running.countDown();
            }
        }, "reload-io");
        writer.start();
        assertTrue(running.await(60, TimeUnit.SECONDS), "the client started");
        try (ControlClient client = new ControlClient(socket, 60_000_000_000L)) {
            for (int i = 0; i < 100; i++) {
                String table = i % 2 == 0 ? "0 8192 linear a 0\n8192 8192 linear a 8192\n" : "0 16384 linear a 0\n";
                ControlClient.Reply r = client.send("POST", "/v1/devices/lin/reload",
                        new ControlApi.TableRequest(table, null));
                assertEquals(200, r.status(), r.body());
            }
        }
        long opsDuringReloads = ops.get();
        done.set(true);
        writer.join(TimeUnit.SECONDS.toMillis(120));
        assertFalse(writer.isAlive(), "the client finished");
        assertEquals(0, errors.get(), problems.toString());
        assertTrue(opsDuringReloads >= 10, "the client ran while the tables were swapped");
        assertEquals("0 16384 linear a 0\n", ok("table", "lin").out);
    }

    /**
     * A suspend that cannot finish in time fails and leaves the device running: a write is in
     * flight on a device whose memory answers after 5 s, the suspend may wait 100 ms, so it is
     * refused with 503 timeout; the write then completes and the device is still ACTIVE.
     */
    @Test
    @Timeout(60)
    void suspendTimeoutLeavesTheDeviceRunning() throws Exception {
        MappedDevice slow = (MappedDevice) stack.device("slowlin");
        List<Integer> results = new CopyOnWriteArrayList<>();
        Thread writer = new Thread(() -> {
            try (MiniNbdClient c = new MiniNbdClient(nbd(), "slowlin")) {
                results.add(c.write(0, pattern(9, 4096)));
            } catch (IOException e) {
                results.add(-1);
            }
        }, "slow-write");
        writer.start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (slow.inFlight() == 0 && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }
        assertTrue(slow.inFlight() > 0, "the write reached the device");
        Run r = ctl("suspend", "slowlin", "--suspend-timeout", "100ms");
        assertEquals(2, r.exitCode, r.err);
        assertTrue(r.err.contains("suspend did not finish within 100ms") && r.err.contains("slowlin"), r.err);
        assertTrue(ok("info", "slowlin").out.contains("State:             ACTIVE"));
        writer.join(TimeUnit.SECONDS.toMillis(30));
        assertEquals(List.of(0), results, "the write in flight completed");
    }

    /**
     * {@code export remove --force} with a request in flight (on memory that answers after 5 s):
     * without force it is refused; with force the export is gone for new clients at once, the
     * request in flight still gets its successful reply, and then the connection ends. The
     * control requests go through one started client, so they take milliseconds of the 5 s.
     */
    @Test
    @Timeout(60)
    void forcedExportRemoveFinishesTheRequestInFlightThenCloses() throws Exception {
        MappedDevice slow = (MappedDevice) stack.device("slowlin");
        List<Object> results = new CopyOnWriteArrayList<>();
        CountDownLatch forced = new CountDownLatch(1);
        ControlClient control = new ControlClient(socket, 60_000_000_000L);
        assertEquals(200, control.send("GET", "/v1/exports", null).status(), "warm: the client is started");
        assertEquals(404, control.send("DELETE", "/v1/exports/nosuch", null).status(), "warm: the refusal path too");
        Thread client = new Thread(() -> {
            try (MiniNbdClient c = new MiniNbdClient(nbd(), "slowlin")) {
                results.add(c.write(0, pattern(4, 4096)));
                forced.await(30, TimeUnit.SECONDS);
                try {
                    c.read(0, 4096);
                    results.add("a read after the forced remove was served");
                } catch (IOException e) {
                    results.add("closed");
                }
            } catch (IOException | InterruptedException e) {
                if (!results.contains("closed")) {
                    results.add(e.toString()); // closing a connection the server ended may fail: not news
                }
            }
        }, "forced-remove-client");
        client.start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (slow.inFlight() == 0 && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }
        assertTrue(slow.inFlight() > 0, "the write reached the device");
        try (control) {
            ControlClient.Reply refused = control.send("DELETE", "/v1/exports/slowlin", null);
            assertEquals(409, refused.status(), refused.body());
            assertTrue(refused.body().contains("1 client(s) connected"), refused.body());
            ControlClient.Reply removed = control.send("DELETE", "/v1/exports/slowlin?force=true", null);
            assertEquals(200, removed.status(), removed.body());
            assertEquals(1, control.tree(removed).path("connectionsClosed").asInt(), removed.body());
        }
        assertEquals(List.of(), results, "the write was still in flight when the export was removed");
        forced.countDown();
        assertThrows(IOException.class, () -> new MiniNbdClient(nbd(), "slowlin"), "gone for new clients");
        client.join(TimeUnit.SECONDS.toMillis(30));
        assertEquals(List.of(0, "closed"), results, "the write in flight was answered, then the connection ended");
    }

    /**
     * A hung control client (it sent half a request and stops) stalls neither the data path nor
     * the other control clients: NBD I/O and a full control request both complete while it hangs.
     */
    @Test
    @Timeout(60)
    void aHungControlClientStallsNothing() throws Exception {
        try (java.nio.channels.SocketChannel hung = java.nio.channels.SocketChannel.open(StandardProtocolFamily.UNIX)) {
            hung.connect(UnixDomainSocketAddress.of(socket));
            hung.write(java.nio.ByteBuffer.wrap(("POST /v1/devices/lin/reload HTTP/1.1\r\nHost: localhost\r\n"
                    + "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"table\":").getBytes(
                    java.nio.charset.StandardCharsets.US_ASCII)));
            byte[] data = pattern(21, 64 * 1024);
            try (MiniNbdClient c = new MiniNbdClient(nbd(), "lin")) {
                assertEquals(0, c.write(0, data));
                assertArrayEquals(data, c.read(0, data.length));
            }
            assertEquals("0 16384 linear a 0\n", ok("table", "lin").out);
            ok("reload", "lin", "--table", "0 16384 linear a 0");
        }
    }

    private static boolean installed(String program) {
        try {
            Process p = new ProcessBuilder(program, "--version").redirectErrorStream(true).start();
            p.getInputStream().readAllBytes();
            return p.waitFor(10, TimeUnit.SECONDS) && p.exitValue() == 0;
        } catch (IOException | InterruptedException e) {
            return false;
        }
    }

    private static String curl(String... args) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>(List.of("curl"));
        command.addAll(List.of(args));
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        assertTrue(p.waitFor(30, TimeUnit.SECONDS), "curl finished");
        return out;
    }
}
