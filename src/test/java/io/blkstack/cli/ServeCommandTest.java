package io.blkstack.cli;

import static io.blkstack.cli.CommandRun.run;
import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.Programs;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code blkstack serve} as a user runs it: a separate JVM (the test's class path) in a scratch
 * directory, on {@code --listen 127.0.0.1:0}. It waits for the ready line, reads the real port
 * from the output, lists the exports with {@code nbdinfo --list} when nbdinfo is installed, then
 * sends SIGTERM and expects a drained, flushed shutdown with exit code 0. Bad arguments and
 * configurations are checked in-process: they exit 1 before anything starts.
 */
class ServeCommandTest {

    private static final Pattern LISTENING = Pattern.compile("listening on 127\\.0\\.0\\.1:(\\d+)");
    /** Bound on the server's shutdown after SIGTERM. */
    private static final long STOP_SECONDS_MAX = 60;

    @TempDir
    Path tmp;

    @Test
    @Timeout(120)
    void defaultStackServesAndStopsCleanlyOnSigterm() throws Exception {
        Process p = start(List.of("serve", "--listen", "127.0.0.1:0"));
        List<String> lines = new ArrayList<>();
        int port = awaitReady(p, lines);
        String out = String.join("\n", lines);
        assertTrue(out.contains("nbd://127.0.0.1:" + port + "/default"), out);
        assertTrue(out.contains("nbdinfo --list nbd://127.0.0.1:" + port), out);
        assertEquals(1L << 30, Files.size(tmp.resolve("blkstack-data/a.img")), "sparse backing file created");
        assertEquals(1L << 30, Files.size(tmp.resolve("blkstack-data/b.img")));
        assertEquals(1L << 30, Files.size(tmp.resolve("blkstack-data/cow.img")));
        if (Programs.installed("nbdinfo")) {
            String list = runProgram("nbdinfo", "--list", "nbd://127.0.0.1:" + port);
            assertTrue(list.contains("export=\"default\""), list);
            assertTrue(list.contains("export-size: 2147483648"), list);
            assertTrue(list.contains("export=\"snap\""), list);
        }
        p.destroy(); // SIGTERM
        assertTrue(p.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS), "serve did not stop after SIGTERM");
        String err = Files.readString(stderrFile());
        assertEquals(0, p.exitValue(), err);
        assertTrue(err.contains("every device flushed and closed"), err);
    }

    @Test
    @Timeout(120)
    void configFileAndListenOptionServe() throws Exception {
        Path config = tmp.resolve("stack.yaml");
        Files.writeString(config, """
                memory: 16MiB
                listen: 127.0.0.1:1
                devices:
                  m: { memory: 16MiB }
                mapped:
                  lin: "0 32768 linear m 0"
                exports:
                  disk: { device: lin, description: "sixteen mebibytes" }
                """);
        Process p = start(List.of("serve", "--config", config.toString(), "--listen", "127.0.0.1:0"));
        List<String> lines = new ArrayList<>();
        int port = awaitReady(p, lines);
        assertNotEquals(1, port, "--listen overrides the configuration's listen");
        assertTrue(String.join("\n", lines).contains("page arena 16MiB"), lines.toString());
        if (Programs.installed("nbdinfo")) {
            String info = runProgram("nbdinfo", "nbd://127.0.0.1:" + port + "/disk");
            assertTrue(info.contains("export-size: 16777216"), info);
            assertTrue(info.contains("sixteen mebibytes"), info);
        }
        p.destroy();
        assertTrue(p.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS), "serve did not stop after SIGTERM");
        assertEquals(0, p.exitValue());
    }

    /**
     * Proves {@code --listen} is repeatable and takes a Unix socket: one server listens on TCP and
     * on {@code unix:PATH} at once, prints an {@code nbd+unix:///EXPORT?socket=PATH} URI for each
     * export next to the TCP ones, creates the socket 0600, serves nbdinfo over it (when installed),
     * and removes the socket file when it stops.
     */
    @Test
    @Timeout(120)
    void listenOnTcpAndUnixSocketAtOnce() throws Exception {
        Path socket = tmp.resolve("nbd.sock");
        Process p = start(List.of("serve", "--listen", "127.0.0.1:0", "--listen", "unix:" + socket));
        List<String> lines = new ArrayList<>();
        int port = awaitReady(p, lines);
        String out = String.join("\n", lines);
        assertTrue(out.contains("nbd://127.0.0.1:" + port + "/default"), out);
        assertTrue(out.contains("nbd+unix:///default?socket=" + socket), out);
        assertTrue(out.contains("nbd+unix:///snap?socket=" + socket), out);
        assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(socket)));
        if (Programs.installed("nbdinfo")) {
            String info = runProgram("nbdinfo", "nbd+unix:///default?socket=" + socket);
            assertTrue(info.contains("export-size: 2147483648"), info);
        }
        p.destroy();
        assertTrue(p.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS), "serve did not stop after SIGTERM");
        assertEquals(0, p.exitValue(), Files.readString(stderrFile()));
        assertFalse(Files.exists(socket), "the socket file is removed on stop");
    }

    /**
     * Proves TLS flags are checked before anything starts: an unknown mode, TLS on without a
     * certificate and key, and a certificate file that is not PEM exit 1 naming the problem.
     */
    @Test
    void badTlsSettingsExit1() throws Exception {
        CommandRun mode = run("serve", "--listen", "127.0.0.1:0", "--tls-mode", "maybe");
        assertEquals(1, mode.exitCode(), mode.err());
        assertTrue(mode.err().contains("--tls-mode: 'maybe' is not off, on or require"), mode.err());
        CommandRun noKey = run("serve", "--listen", "127.0.0.1:0", "--tls-mode", "require");
        assertEquals(1, noKey.exitCode(), noKey.err());
        assertTrue(noKey.err().contains("needs --tls-cert and --tls-key"), noKey.err());
        Path junk = tmp.resolve("junk.pem");
        Files.writeString(junk, "not a certificate\n");
        CommandRun notPem = run("serve", "--listen", "127.0.0.1:0", "--tls-mode", "on", "--tls-cert", junk.toString(),
                "--tls-key", junk.toString());
        assertEquals(1, notPem.exitCode(), notPem.err());
        assertTrue(notPem.err().contains(junk + " holds no PEM certificate"), notPem.err());
    }

    /**
     * Proves a server owns its backing files: while one {@code serve} runs a thin pool (with the
     * connection flags, which it reports), a second {@code serve} of the same configuration exits 2
     * naming the locked metadata file, without ever becoming ready, and {@code thin check} says the
     * pool is live; after the first stops, {@code thin check} takes its shared lock and finds the
     * metadata clean. Before the fix the second server started and both wrote the same files.
     */
    @Test
    @Timeout(180)
    void secondServeOnTheSameFilesExits2NamingTheLockedFile() throws Exception {
        Path config = tmp.resolve("thin.yaml");
        Files.writeString(config, """
                memory: 16MiB
                devices:
                  meta: { file: thin-data/meta.img, size: 4MiB }
                  data: { file: thin-data/data.img, size: 64MiB }
                mapped:
                  pool: "0 131072 thin-pool meta data 128 16"
                  vol0: "0 131072 thin pool 0"
                exports:
                  vol0: { device: vol0 }
                """);
        Process first = start(List.of("serve", "--config", config.toString(), "--listen", "127.0.0.1:0",
                "--max-connections", "3", "--handshake-timeout", "5s", "--idle-timeout", "off", "--reply-timeout", "45s",
                "--request-timeout", "90s"),
                stderrFile());
        List<String> lines = new ArrayList<>();
        awaitReady(first, lines);
        assertTrue(lines.contains("  at most 3 connections, handshake timeout 5s, idle timeout off, reply timeout 45s,"
                + " request timeout 90s"), lines.toString());

        Path secondErr = tmp.resolve("second-stderr.txt");
        Process second = start(List.of("serve", "--config", config.toString(), "--listen", "127.0.0.1:0"), secondErr);
        List<String> secondOut = new ArrayList<>();
        try (BufferedReader out = new BufferedReader(new InputStreamReader(second.getInputStream(), StandardCharsets.UTF_8))) {
            for (String line; (line = out.readLine()) != null; ) {
                secondOut.add(line);
                assertNotEquals(ServeCommand.READY, line, "a second server started on the same files");
            }
        } finally {
            if (second.isAlive()) {
                second.destroyForcibly();
            }
        }
        assertTrue(second.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS), "second serve did not exit");
        String err = Files.readString(secondErr);
        assertEquals(ExitCodes.RUNTIME, second.exitValue(), err + secondOut);
        Path meta = tmp.resolve("thin-data/meta.img");
        assertTrue(err.contains("blkstack serve: " + config + ":3: devices.meta.file: " + meta
                + " is in use (locked by another process)"), err);

        CommandRun live = run("thin", "check", config.toString(), "--pool", "pool");
        assertEquals(ExitCodes.RUNTIME, live.exitCode(), live.err());
        assertTrue(live.err().contains(meta + " is in use (locked by another process): the pool is live"), live.err());

        first.destroy();
        assertTrue(first.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS), "serve did not stop after SIGTERM");
        assertEquals(0, first.exitValue(), Files.readString(stderrFile()));
        CommandRun stopped = run("thin", "check", config.toString(), "--pool", "pool");
        assertEquals(0, stopped.exitCode(), stopped.err());
        assertTrue(stopped.out().contains("thin metadata clean"), stopped.out());
    }

    /**
     * Proves the accept task survives a real EMFILE: {@code serve} runs under {@code ulimit -n 160};
     * clients connect one by one, each waiting for its greeting, until the server logs that accept
     * failed (the last client stays in the listen backlog). Then 20 clients hang up, freeing
     * descriptors, and the waiting client gets its greeting, the server logs that it accepts again,
     * and a new client is served too. Every wait is for an event (a greeting, a log line) taken from
     * one queue, with a bound; before the fix the first EMFILE ended the accept task for good.
     */
    @Test
    @Timeout(180)
    void acceptRecoversFromRealDescriptorExhaustion() throws Exception {
        assumeTrue(Programs.installed("bash"), "bash is not installed");
        Path config = tmp.resolve("mem.yaml");
        Files.writeString(config, """
                memory: 16MiB
                devices:
                  m: { memory: 16MiB }
                exports:
                  disk: { device: m }
                """);
        String javaBin = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        String command = "ulimit -n 160 && exec '" + javaBin + "' --enable-native-access=ALL-UNNAMED -cp '" + System.getProperty("java.class.path") + "' "
                + Main.class.getName() + " serve --config '" + config + "' --listen 127.0.0.1:0";
        Process p = new ProcessBuilder("bash", "-c", command).directory(tmp.toFile()).start();
        BlockingQueue<String> events = new LinkedBlockingQueue<>();
        List<String> stderr = new CopyOnWriteArrayList<>();
        Thread.ofVirtual().start(() -> {
            try (BufferedReader err = new BufferedReader(new InputStreamReader(p.getErrorStream(), StandardCharsets.UTF_8))) {
                for (String line; (line = err.readLine()) != null; ) {
                    stderr.add(line);
                    events.add("log " + line);
                }
            } catch (IOException e) {
                // the process ended
            }
        });
        List<SocketChannel> clients = new ArrayList<>();
        try {
            int port = awaitReady(p, new ArrayList<>());
            InetSocketAddress address = new InetSocketAddress("127.0.0.1", port);
            int pending = -1;
            for (int i = 0; i < 1000 && pending < 0; i++) {
                SocketChannel c = SocketChannel.open(address);
                clients.add(c);
                awaitGreetingInBackground(c, i, events);
                String event = nextEvent(events, stderr, "greeting " + i, "Too many open files");
                if (event.startsWith("log")) {
                    pending = i;
                }
            }
            assertTrue(pending > 0, "the server never ran out of descriptors: " + stderr);
            assertTrue(stderr.stream().anyMatch(l -> l.contains("nbd: accept failed (1 in a row): Too many open files;"
                    + " retrying in 10ms")), stderr.toString());
            for (int i = 0; i < 20; i++) {
                clients.get(i).close();
            }
            nextEvent(events, stderr, "greeting " + pending, null);
            SocketChannel fresh = SocketChannel.open(address);
            clients.add(fresh);
            awaitGreetingInBackground(fresh, -2, events);
            nextEvent(events, stderr, "greeting -2", null);
            // The log line may still be on its way through the pipe when the greeting arrives: it is
            // either in stderr already, or its event is still to come (stderr gets a line before
            // events does).
            if (stderr.stream().noneMatch(l -> l.contains("nbd: accepting again after"))) {
                nextEvent(events, stderr, null, "nbd: accepting again after");
            }
            assertTrue(stderr.stream().anyMatch(l -> l.matches("blkstack serve: nbd: accepting again after \\d+ failed"
                    + " accept\\(s\\)")), stderr.toString());
        } finally {
            for (SocketChannel c : clients) {
                c.close();
            }
            p.destroy();
        }
        assertTrue(p.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS), "serve did not stop after SIGTERM");
        assertEquals(0, p.exitValue(), stderr.toString());
    }

    /** Reads the 18-byte NBD greeting on {@code c} in a virtual thread; posts "greeting ID" when it arrives. */
    private static void awaitGreetingInBackground(SocketChannel c, int id,
            BlockingQueue<String> events) {
        Thread.ofVirtual().start(() -> {
            ByteBuffer greeting = ByteBuffer.allocate(18);
            try {
                while (greeting.hasRemaining() && c.read(greeting) >= 0) {
                    // keep reading
                }
                if (!greeting.hasRemaining() && greeting.getLong(0) == 0x4e42444d41474943L) {
                    events.add("greeting " + id);
                }
            } catch (IOException e) {
                // closed by the test
            }
        });
    }

    /**
     * Takes events until one equals {@code wanted} (returned) or is a log line containing
     * {@code orLog} (returned); other events are skipped. Fails after 60 s without one.
     */
    private static String nextEvent(BlockingQueue<String> events, List<String> stderr,
            String wanted, String orLog) throws InterruptedException {
        while (true) {
            String e = events.poll(60, TimeUnit.SECONDS);
            assertNotNull(e, "no '" + wanted + "' within 60 s; server stderr: " + stderr);
            if (e.equals(wanted) || (orLog != null && e.startsWith("log ") && e.contains(orLog))) {
                return e;
            }
        }
    }

    @Test
    void connectionFlagsAreCheckedBeforeAnythingStarts() {
        usageError("--max-connections: 0 is not in 1..65536", "--max-connections", "0", "--listen", "127.0.0.1:0");
        usageError("'10' is not a duration", "--handshake-timeout", "10", "--listen", "127.0.0.1:0");
        CommandRun idle = usageError("'never' is not a duration", "--idle-timeout", "never", "--listen", "127.0.0.1:0");
        assertTrue(idle.err().contains("or off"), idle.err());
        usageError("'0s' is not a positive duration, or off", "--reply-timeout", "0s", "--listen", "127.0.0.1:0");
    }

    @Test
    void dataPathSwitchesNameTheirChoices() {
        usageError("--read-references must be on, large or off, not 'sometimes'", "--read-references", "sometimes",
                "--listen", "127.0.0.1:0");
        usageError("--direct-issue must be on, reads, writes or off, not 'always'", "--direct-issue", "always",
                "--listen", "127.0.0.1:0");
    }

    /** Runs {@code serve ARGS}, which must exit as a usage error whose message contains {@code expected}. */
    private static CommandRun usageError(String expected, String... args) {
        String[] command = new String[args.length + 1];
        command[0] = "serve";
        System.arraycopy(args, 0, command, 1, args.length);
        CommandRun r = run(command);
        assertEquals(ExitCodes.USAGE, r.exitCode(), r.err());
        assertTrue(r.err().contains(expected), r.err());
        return r;
    }

    @Test
    void badListenIsAUsageError() {
        usageError("'127.0.0.1'", "--listen", "127.0.0.1");
        usageError("70000", "--listen", "127.0.0.1:70000");
    }

    @Test
    void brokenConfigIsAUsageErrorNamingTheLine() throws Exception {
        Path config = tmp.resolve("bad.yaml");
        Files.writeString(config, "devices:\n  m: { memory: 16MiB }\nexports:\n  disk: { device: nosuch }\n");
        CommandRun r = run("serve", "--config", config.toString(), "--listen", "127.0.0.1:0");
        assertEquals(ExitCodes.USAGE, r.exitCode());
        assertTrue(r.err().contains(config + ":4: exports.disk.device: 'nosuch'"), r.err());
    }

    @Test
    void embeddedDefaultIsAValidConfiguration() throws Exception {
        var config = ServeCommand.defaultConfig();
        assertEquals("127.0.0.1:10809", config.listen().toString());
        assertEquals("default", config.exports().get(0).name());
        String report = TableCommand.Check.check(config);
        assertTrue(report.contains("0 4194304 striped 2 128 a 0 b 0"), report);
        assertTrue(report.contains("0 4194304 snapshot stripe0 cow P 16"), report);
    }

    /** Where the serve process's stderr goes. */
    private Path stderrFile() {
        return tmp.resolve("serve-stderr.txt");
    }

    /** Starts {@code blkstack ARGS} in a new JVM in the scratch directory. */
    private Process start(List<String> args) throws Exception {
        return start(args, stderrFile());
    }

    /** Starts {@code blkstack ARGS} in a new JVM in the scratch directory, stderr to {@code stderr}. */
    private Process start(List<String> args, Path stderr) throws Exception {
        List<String> command = MainProcess.command(args.toArray(String[]::new));
        // stderr goes to a file: a destroyed process's pipes may be closed before they are read.
        return new ProcessBuilder(command).directory(tmp.toFile()).redirectError(stderr.toFile()).start();
    }

    /** Reads stdout up to the ready line; returns the port from the "listening on" line. */
    private int awaitReady(Process p, List<String> lines) throws Exception {
        BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
        int port = -1;
        for (String line; (line = out.readLine()) != null; ) {
            lines.add(line);
            Matcher m = LISTENING.matcher(line);
            if (m.find()) {
                port = Integer.parseInt(m.group(1));
            }
            if (line.equals(ServeCommand.READY)) {
                assertTrue(port > 0, "no port before the ready line: " + lines);
                return port;
            }
        }
        String err = Files.readString(stderrFile());
        fail("serve ended before it was ready; stdout " + lines + ", stderr: " + err);
        return -1;
    }

    /** Runs a program to completion; fails on a non-zero exit. */
    private String runProgram(String... command) throws Exception {
        assumeTrue(Programs.installed(command[0]), command[0] + " is not installed");
        Path log = Files.createTempFile(tmp, "program", ".txt");
        Process p = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), String.join(" ", command) + " did not finish");
        String text = Files.readString(log, StandardCharsets.UTF_8);
        assertEquals(0, p.exitValue(), String.join(" ", command) + " failed:\n" + text);
        return text;
    }
}
