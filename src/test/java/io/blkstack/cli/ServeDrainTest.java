package io.blkstack.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.blkstack.config.MiniNbdClient;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.io.InputStreamReader;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * {@code serve}'s shutdown has an end even when a request never would: a separate JVM serves a
 * thin volume over a pool of four 64 KiB blocks that waits for space for ever
 * ({@code no-space-timeout: 0s}); a client fills the pool and sends a fifth write, which the pool
 * queues (the test waits for the pool's "out of data space" line on the server's stderr, read as a
 * pipe, so nothing sleeps or polls). Then the server is signalled. Before the drain deadline
 * existed, this shutdown waited for that write for ever.
 */
class ServeDrainTest {

    private static final Pattern LISTENING = Pattern.compile("listening on 127\\.0\\.0\\.1:(\\d+)");
    private static final int BLOCK_BYTES = 64 * 1024;
    private static final long STOP_SECONDS_MAX = 60;
    /** NBD's EIO. */
    private static final int EIO = 5;
    /** NBD's ENOSPC. */
    private static final int ENOSPC = 28;

    private static final String CONFIG = """
            memory: 16MiB
            no-space-timeout: %s
            devices:
              meta: { memory: 1MiB }
              data: { memory: 256KiB }
            mapped:
              pool: |
                0 512 thin-pool meta data 128 0
              vol: |
                0 8192 thin pool 1
            exports:
              vol: { device: vol }
            """;

    @TempDir
    Path tmp;

    private final ExecutorService clientThread = Executors.newSingleThreadExecutor();
    private Process server;
    private BufferedReader serverErr;
    private final List<String> errLines = new ArrayList<>();

    @AfterEach
    void tearDown() {
        if (server != null) {
            server.destroyForcibly();
        }
        clientThread.shutdownNow();
    }

    // Proves the drain deadline: SIGTERM with --drain-timeout 1s; the deadline passes with the
    // write still queued, the pool fails it with EIO (the client's write returns EIO), every device
    // is flushed, and the process exits 2, saying why. The data written before is unaffected.
    @Test
    @Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD) // a stuck stderr read cannot be interrupted
    void theDrainDeadlineFailsTheStuckWriteBackAndExitsTwo() throws Exception {
        int port = startServer("--drain-timeout", "1s", "--hung-task-timeout", "0s");
        try (MiniNbdClient client = new MiniNbdClient(new InetSocketAddress("127.0.0.1", port), "vol")) {
            Future<Integer> stuck = fillAndSendOneMore(client);
            signal("TERM");
            assertEquals(EIO, stuck.get(STOP_SECONDS_MAX, TimeUnit.SECONDS), "the stuck write's reply");
        } catch (IOException e) {
            // DISC on a connection the server already closed
        }
        int code = awaitExit();
        String err = String.join("\n", errLines);
        assertEquals(ExitCodes.RUNTIME, code, err);
        assertTrue(err.contains("drain deadline of 1s passed with 1 connection(s) open"), err);
        assertTrue(err.contains("failed 1 request(s) waiting in devices with EIO"), err);
        assertTrue(err.contains("every device flushed and closed"), err);
    }

    // Proves the second signal and the watchdog: with a drain deadline of ten minutes and a
    // hung-task threshold of 1 s, SIGTERM starts the drain; the watchdog reports the serving task
    // blocked in the drain, naming the connection's request and the pool's out-of-data-space queue
    // that holds its bio; then a second SIGTERM skips the rest of the drain: the write fails with EIO and the
    // process exits 2 long before the deadline.
    @Test
    @Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD) // a stuck stderr read cannot be interrupted
    void aSecondSignalSkipsTheDrainAndTheWatchdogNamesThePool() throws Exception {
        int port = startServer("--drain-timeout", "600s", "--hung-task-timeout", "1s");
        try (MiniNbdClient client = new MiniNbdClient(new InetSocketAddress("127.0.0.1", port), "vol")) {
            Future<Integer> stuck = fillAndSendOneMore(client);
            signal("TERM");
            awaitErrLine(l -> l.contains("blocked for more than") && l.contains("nbd server drain"));
            awaitErrLine(l -> l.contains("queued on thin-pool pool's out-of-data-space queue"));
            // TERM again, not INT: a shell without job control starts background jobs with SIGINT
            // ignored, and a JVM that inherits that never sees it (serve's own handling is the same
            // for both). CI started with `nohup ... &` failed here for that reason alone.
            signal("TERM");
            assertEquals(EIO, stuck.get(STOP_SECONDS_MAX, TimeUnit.SECONDS), "the stuck write's reply");
        } catch (IOException e) {
            // DISC on a connection the server already closed
        }
        int code = awaitExit();
        String err = String.join("\n", errLines);
        assertEquals(ExitCodes.RUNTIME, code, err);
        System.out.println(err);
        assertTrue(err.contains("second signal: skipping the drain"), err);
        assertTrue(err.contains("connection nbd-1: 1 request(s) in flight: nbd WRITE"), err);
        assertTrue(err.contains("failed 1 request(s) waiting in devices with EIO"), err);
    }

    /**
     * Sends a signal with kill(1): {@link Process#destroy} would also close this side's pipes, and
     * the test reads the server's stderr to its end.
     */
    private void signal(String name) throws Exception {
        Process kill = new ProcessBuilder("kill", "-" + name, Long.toString(server.pid())).start();
        assertTrue(kill.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS) && kill.exitValue() == 0, "kill -" + name);
    }

    // Proves the end-to-end shape of the first half: with no-space-timeout: 1s the write into
    // the full pool is answered with ENOSPC by itself (no signal), the data written before still
    // reads back, and a stop afterwards has nothing to wait for: exit 0.
    @Test
    @Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD) // a stuck stderr read cannot be interrupted
    void aFullPoolAnswersENOSPCAfterItsTimeoutAndTheServerStopsCleanly() throws Exception {
        int port = startServerWith("1s", "--hung-task-timeout", "0s");
        try (MiniNbdClient client = new MiniNbdClient(new InetSocketAddress("127.0.0.1", port), "vol")) {
            for (int b = 0; b < 4; b++) {
                assertEquals(0, client.write((long) b * BLOCK_BYTES, pattern(b)), "write of block " + b);
            }
            assertEquals(ENOSPC, client.write(4L * BLOCK_BYTES, pattern(4)), "the write that needs a fifth block");
            assertEquals(ENOSPC, client.write(5L * BLOCK_BYTES, pattern(5)), "a later write that needs a block");
            assertEquals(0, client.write(0, pattern(9)), "a write to a provisioned block");
            assertEquals(0, client.flush());
            assertTrue(java.util.Arrays.equals(pattern(1), client.read(BLOCK_BYTES, BLOCK_BYTES)), "block 1 reads back");
        }
        signal("TERM");
        int code = awaitExit();
        String err = String.join("\n", errLines);
        assertEquals(ExitCodes.SUCCESS, code, err);
        assertTrue(err.contains("no_space_timeout of 1 s expired: failing 1 queued write(s)"), err);
    }

    // Proves the last resort: a request no target can fail. The thin pool's data device is a delay
    // target that holds writes for ten minutes, so a 4 KiB write to a new block (and the zeroing of
    // the rest of that block, chained to it) waits there; the delay target's status, read through
    // the control socket until it shows the held write (a bounded poll of the server's own
    // state), is the test's signal that the request is stuck. SIGTERM with --drain-timeout 1s: after the
    // deadline nothing waits for it: the connection is cut (the client's write fails with the
    // connection's end), the final flush (bounded by its own deadline; it no longer has a pool
    // worker blocked behind the write to wait for, since thin zeroes a new block's rest chained to
    // the write) completes, and the process exits 2 saying the devices still hold requests,
    // instead of waiting ten minutes.
    @Test
    @Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD) // a stuck stderr read cannot be interrupted
    void aRequestNoTargetCanFailIsCutAndTheProcessStillExits() throws Exception {
        String yaml = """
                memory: 16MiB
                devices:
                  meta: { memory: 1MiB }
                  m: { memory: 4MiB }
                mapped:
                  slowdata: |
                    0 8192 delay m 0 0 m 0 600000 m 0 0
                  pool: |
                    0 8192 thin-pool meta slowdata 128 0
                  vol: |
                    0 8192 thin pool 1
                exports:
                  vol: { device: vol }
                """;
        Path socket = tmp.resolve("ctl.sock");
        int port = startServerOn(yaml, "--drain-timeout", "1s", "--control", socket.toString());
        try (MiniNbdClient client = new MiniNbdClient(new InetSocketAddress("127.0.0.1", port), "vol")) {
            Future<Integer> stuck = clientThread.submit(() -> client.write(0, new byte[4096]));
            awaitHeldWrite(socket, "slowdata");
            signal("TERM");
            ExecutionException e = assertThrows(ExecutionException.class, () -> stuck.get(STOP_SECONDS_MAX, TimeUnit.SECONDS));
            assertTrue(e.getCause() instanceof IOException, "the write ended with " + e.getCause());
        } catch (IOException e) {
            // DISC on a connection the server already closed
        }
        int code = awaitExit();
        String err = String.join("\n", errLines);
        assertEquals(ExitCodes.RUNTIME, code, err);
        assertTrue(err.contains("drain deadline of 1s passed with 1 connection(s) open"), err);
        assertTrue(err.contains("closed 1 connection(s) whose requests are still held: connection nbd-1: 1 request(s) in flight:"
                + " nbd WRITE"), err);
        assertTrue(err.contains("the devices are not closed"), err);
    }

    /**
     * Proves the stop of a server with a suspended device: a client's write arrives while {@code
     * ctl suspend} holds the device; SIGTERM then resumes the device with its live table (no resume
     * could come once the control socket closed), so the write succeeds, the drain ends at once and
     * every device is flushed and closed. Before, the drain waited out its deadline, the final
     * flush waited on the suspended device too, and serve exited leaving its devices open.
     */
    @Test
    @Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD) // a stuck stderr read cannot be interrupted
    void aSuspendedDeviceIsResumedAtStopSoItsHeldWriteFinishes() throws Exception {
        String yaml = """
                memory: 16MiB
                devices:
                  m: { memory: 4MiB }
                mapped:
                  lin: "0 8192 linear m 0"
                exports:
                  lin: { device: lin }
                """;
        Path socket = tmp.resolve("ctl.sock");
        int port = startServerOn(yaml, "--drain-timeout", "600s", "--control", socket.toString());
        assertEquals(0, ctl(socket, "suspend", "lin").code(), "ctl suspend lin");
        try (MiniNbdClient client = new MiniNbdClient(new InetSocketAddress("127.0.0.1", port), "lin")) {
            Future<Integer> held = clientThread.submit(() -> client.write(0, pattern(1)));
            awaitExportInFlight(socket, "lin");
            signal("TERM");
            assertEquals(0, held.get(STOP_SECONDS_MAX, TimeUnit.SECONDS), "the held write's reply");
        } catch (IOException e) {
            // DISC on a connection the server already closed
        }
        int code = awaitExit();
        String err = String.join("\n", errLines);
        assertEquals(ExitCodes.SUCCESS, code, err);
        assertTrue(err.contains("resumed suspended device(s) lin with their live tables"), err);
    }

    /** A {@code ctl} command's exit code and standard output. */
    private record CtlRun(int code, String out) {
    }

    private static CtlRun ctl(Path socket, String... args) {
        CommandLine commandLine = Main.commandLine();
        StringWriter out = new StringWriter();
        commandLine.setOut(new PrintWriter(out, true));
        commandLine.setErr(new PrintWriter(new StringWriter(), true));
        List<String> all = new ArrayList<>(List.of("ctl", "--socket", socket.toString()));
        all.addAll(List.of(args));
        return new CtlRun(commandLine.execute(all.toArray(String[]::new)), out.toString());
    }

    /**
     * Polls {@code ctl stats --export EXPORT} until a request of that export is in flight (its
     * header read); fails after {@link #STOP_SECONDS_MAX}.
     */
    private static void awaitExportInFlight(Path socket, String export) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(STOP_SECONDS_MAX);
        String last = "";
        while (System.nanoTime() < deadline) {
            CtlRun run = ctl(socket, "stats", "--export", export);
            last = run.out();
            for (String line : last.split("\n")) {
                String[] fields = line.trim().split("\\s+");
                if (run.code() == 0 && fields.length >= 14 && fields[0].equals(export) && !fields[12].equals("INFLIGHT")
                        && Long.parseLong(fields[12]) > 0) {
                    return;
                }
            }
            Thread.sleep(20); // the server is another process: its state can only be polled
        }
        fail("no request of export " + export + " was ever in flight; last stats: " + last);
    }

    /** Writes every block of the pool (each must succeed), then sends a fifth write on the client thread. */
    private Future<Integer> fillAndSendOneMore(MiniNbdClient client) throws Exception {
        for (int b = 0; b < 4; b++) {
            assertEquals(0, client.write((long) b * BLOCK_BYTES, pattern(b)), "write of block " + b);
        }
        Future<Integer> stuck = clientThread.submit(() -> client.write(4L * BLOCK_BYTES, pattern(4)));
        awaitErrLine(l -> l.contains("out of data space: queueing writes that need a block until blocks are freed"));
        return stuck;
    }

    private static byte[] pattern(int seed) {
        byte[] b = new byte[BLOCK_BYTES];
        new java.util.Random(seed).nextBytes(b);
        return b;
    }

    /** Starts {@code serve} on the test configuration; returns the port once it is ready. */
    private int startServer(String... extra) throws Exception {
        return startServerWith("0s", extra);
    }

    /** Starts {@code serve} with the given {@code no-space-timeout}; returns the port once it is ready. */
    private int startServerWith(String noSpaceTimeout, String... extra) throws Exception {
        return startServerOn(CONFIG.formatted(noSpaceTimeout), extra);
    }

    /** Starts {@code serve} on the configuration {@code yaml}; returns the port once it is ready. */
    private int startServerOn(String yaml, String... extra) throws Exception {
        Path config = tmp.resolve("drain.yaml");
        Files.writeString(config, yaml);
        List<String> command = MainProcess.command("serve", "--config", config.toString(),
                "--listen", "127.0.0.1:0");
        command.addAll(List.of(extra));
        server = new ProcessBuilder(command).directory(tmp.toFile()).start();
        serverErr = new BufferedReader(new InputStreamReader(server.getErrorStream(), StandardCharsets.UTF_8));
        BufferedReader out = new BufferedReader(new InputStreamReader(server.getInputStream(), StandardCharsets.UTF_8));
        int port = -1;
        List<String> lines = new ArrayList<>();
        for (String line; (line = out.readLine()) != null; ) {
            lines.add(line);
            Matcher m = LISTENING.matcher(line);
            if (m.find()) {
                port = Integer.parseInt(m.group(1));
            }
            if (line.equals(ServeCommand.READY)) {
                return port;
            }
        }
        awaitExit();
        fail("serve ended before it was ready; stdout " + lines + ", stderr " + errLines);
        return -1;
    }

    /**
     * Polls {@code ctl status DEVICE} of a delay target (its info fields: reads, writes, flushes
     * held) until it holds a write; fails after {@link #STOP_SECONDS_MAX}.
     */
    private static void awaitHeldWrite(Path socket, String device) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(STOP_SECONDS_MAX);
        String last = "";
        while (System.nanoTime() < deadline) {
            CommandLine commandLine = Main.commandLine();
            StringWriter out = new StringWriter();
            commandLine.setOut(new PrintWriter(out, true));
            commandLine.setErr(new PrintWriter(new StringWriter(), true));
            if (commandLine.execute("ctl", "--socket", socket.toString(), "status", device) == 0) {
                last = out.toString().trim();
                String[] fields = last.split("\\s+");
                if (fields.length >= 3 && Integer.parseInt(fields[fields.length - 2]) > 0) {
                    return;
                }
            }
            Thread.sleep(20); // the server is another process: its state can only be polled
        }
        fail("the delay target never held the write; last status: " + last);
    }

    /** Reads the server's stderr up to the first line that matches; fails if it ends first. */
    private void awaitErrLine(Predicate<String> matching) throws IOException {
        for (String line; (line = serverErr.readLine()) != null; ) {
            errLines.add(line);
            if (matching.test(line)) {
                return;
            }
        }
        fail("serve's stderr ended without the expected line: " + String.join("\n", errLines));
    }

    /** Reads the rest of stderr and waits for the exit code. */
    private int awaitExit() throws Exception {
        for (String line; (line = serverErr.readLine()) != null; ) {
            errLines.add(line);
        }
        assertTrue(server.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS), "serve did not exit: " + errLines);
        return server.exitValue();
    }
}
