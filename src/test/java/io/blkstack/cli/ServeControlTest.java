package io.blkstack.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * {@code serve}'s control socket as a user meets it: a separate JVM serves a configuration with
 * {@code --control}; the socket is 0600 and announced before the ready line; {@code blkstack ctl}
 * (in-process) lists the stack and creates a device; a second {@code serve} on the same control
 * path (other data, other port) is refused with exit 2 while the first answers; after SIGTERM the
 * first removes its socket, and a dump it wrote serves again.
 */
class ServeControlTest {

    private static final long STOP_SECONDS_MAX = 60;

    @TempDir
    Path tmp;

    @Test
    @Timeout(180)
    void serveAnswersOnItsControlSocketAndKeepsItsPath() throws Exception {
        Path socket = tmp.resolve("ctl.sock");
        Path config = config("one.yaml");
        Process first = start("first.err", "serve", "--config", config.toString(), "--listen", "127.0.0.1:0",
                "--control", socket.toString());
        try {
            List<String> lines = awaitReady(first, "first.err");
            assertTrue(lines.contains("control: " + socket + "  (blkstack ctl --socket " + socket + " ls)"),
                    lines.toString());
            assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(socket)));

            String[] ls = ctl(socket, "ls");
            assertEquals("0", ls[0], ls[2]);
            assertTrue(ls[1].contains("lin\t(mapped, 32768 sectors) depends on: m; exported as: disk;"), ls[1]);
            assertEquals("0", ctl(socket, "create", "top", "--table", "0 2048 linear lin 0")[0]);
            String[] dump = ctl(socket, "dump");
            assertEquals("0", dump[0], dump[2]);
            Path kept = Files.writeString(tmp.resolve("kept.yaml"), dump[1]);

            Process second = start("second.err", "serve", "--config", config("two.yaml").toString(), "--listen",
                    "127.0.0.1:0", "--control", socket.toString());
            assertTrue(second.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS), "the second serve ended");
            String err = Files.readString(tmp.resolve("second.err"));
            assertEquals(2, second.exitValue(), err);
            assertTrue(err.contains("is in use: a running server answers on it"), err);
            assertEquals("0", ctl(socket, "info", "top")[0], "the first server still answers");

            first.destroy(); // SIGTERM
            assertTrue(first.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS), "serve stopped");
            assertEquals(0, first.exitValue(), Files.readString(tmp.resolve("first.err")));
            assertFalse(Files.exists(socket), "the socket file is removed at stop");

            Process again = start("again.err", "serve", "--config", kept.toString(), "--listen", "127.0.0.1:0");
            try {
                awaitReady(again, "again.err");
                String[] info = ctl(socket, "info", "top");
                assertEquals("0", info[0], info[2]);
                assertTrue(info[1].contains("Depends on:        lin"), info[1]);
            } finally {
                again.destroy();
                assertTrue(again.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS));
            }
        } finally {
            first.destroyForcibly();
        }
    }

    /**
     * The live thin workflow on a served pool over files: {@code create_snap 7 0}, a device for
     * id 7 created, exported and listed, then unexported, removed and deleted; after the server
     * stops, {@code thin check} finds the pool's metadata clean.
     */
    @Test
    @Timeout(180)
    void liveThinChangesLeaveCleanMetadata() throws Exception {
        Path socket = tmp.resolve("thin.sock");
        Path config = Files.writeString(tmp.resolve("thin.yaml"), """
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
        Process server = start("thin.err", "serve", "--config", config.toString(), "--listen", "127.0.0.1:0",
                "--control", socket.toString());
        try {
            awaitReady(server, "thin.err");
            String[][] steps = {
                {"message", "pool", "0", "create_snap 7 0"},
                {"create", "snap7", "--table", "0 131072 thin pool 7"},
                {"export", "add", "snap7", "--device", "snap7", "--readonly"},
                {"export", "remove", "snap7"},
                {"remove", "snap7"},
                {"message", "pool", "0", "delete 7"},
                {"message", "pool", "0", "create_thin 8"},
            };
            for (String[] step : steps) {
                String[] r = ctl(socket, step);
                assertEquals("0", r[0], String.join(" ", step) + ": " + r[2]);
            }
            String[] status = ctl(socket, "status", "pool");
            assertTrue(status[1].startsWith("0 131072 thin-pool "), status[1]);
            server.destroy();
            assertTrue(server.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS), "serve stopped");
            assertEquals(0, server.exitValue(), Files.readString(tmp.resolve("thin.err")));
        } finally {
            server.destroyForcibly();
        }
        CommandLine check = Main.commandLine();
        StringWriter out = new StringWriter();
        check.setOut(new PrintWriter(out, true));
        check.setErr(new PrintWriter(new StringWriter(), true));
        assertEquals(0, check.execute("thin", "check", config.toString(), "--pool", "pool"), out.toString());
        assertTrue(out.toString().contains("thin metadata clean"), out.toString());
    }

    private Path config(String name) throws Exception {
        return Files.writeString(tmp.resolve(name), """
                memory: 16MiB
                devices:
                  m: { memory: 16MiB }
                mapped:
                  lin: "0 32768 linear m 0"
                exports:
                  disk: { device: lin }
                """);
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
