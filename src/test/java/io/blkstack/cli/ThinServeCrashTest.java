package io.blkstack.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.Programs;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code blkstack serve --config examples/thin.yaml} survives SIGKILL: a separate JVM serves a
 * copy of the example in a scratch directory; qemu-io writes a pattern to {@code vol0} and
 * flushes it; a second qemu-io run writes further 1 MiB extents, with a flush every few, and
 * after it reported some of them the server is killed with SIGKILL while the rest are still being
 * sent. {@code blkstack thin check} then passes on the metadata as the crash left it, a restarted
 * server serves the flushed pattern unchanged (and the snapshot taken at the first start still
 * reads zeros), and thin check passes again after a clean SIGTERM stop. Runs only when qemu-io
 * and stdbuf are installed.
 */
class ThinServeCrashTest {

    private static final Pattern LISTENING = Pattern.compile("listening on 127\\.0\\.0\\.1:(\\d+)");
    private static final long STOP_SECONDS_MAX = 60;
    private static final long PROGRAM_SECONDS_MAX = 120;
    /** Extents the second workload would write; far more than are written before the kill. */
    private static final int SECOND_WORKLOAD_WRITES = 400;
    /** Extents reported written before the kill. */
    private static final int WRITES_BEFORE_KILL = 24;

    @TempDir
    Path tmp;

    @Test
    @Timeout(240)
    void sigkillMidWorkloadLeavesCleanMetadataAndKeepsFlushedWrites() throws Exception {
        assumeTrue(Programs.installed("qemu-io"), "qemu-io is not installed");
        assumeTrue(Programs.installed("stdbuf"), "stdbuf is not installed");
        Path config = tmp.resolve("thin.yaml");
        Files.copy(Path.of("examples/thin.yaml"), config);

        // First start: creates the files and thin ids 0, 1 and 2 (a snapshot of the empty 0).
        Process server = start(config, "serve-1");
        int port = awaitReady(server, "serve-1");
        String vol0 = "nbd://127.0.0.1:" + port + "/vol0";
        String vol1 = "nbd://127.0.0.1:" + port + "/vol1";
        String written = qemuIo(vol0, "write -P 0xab 0 8M", "write -P 0xcd 16M 4M", "flush");
        assertTrue(written.contains("wrote 8388608/8388608 bytes at offset 0"), written);
        qemuIo(vol1, "write -P 0x3c 1M 2M", "flush");

        // Second workload on vol0 past the flushed pattern; SIGKILL the server while it runs.
        List<String> command = new ArrayList<>(List.of("stdbuf", "-oL", "qemu-io", "-f", "raw", vol0));
        for (int i = 0; i < SECOND_WORKLOAD_WRITES; i++) {
            command.add("-c");
            command.add("write -P 0x5a " + (64 + i) + "M 1M");
            if (i % 8 == 7) {
                command.add("-c");
                command.add("flush");
            }
        }
        Path workloadLog = tmp.resolve("workload.txt");
        Process workload = new ProcessBuilder(command).redirectError(workloadLog.toFile()).start();
        BufferedReader lines = new BufferedReader(new InputStreamReader(workload.getInputStream(), StandardCharsets.UTF_8));
        int wrote = 0;
        for (String line; wrote < WRITES_BEFORE_KILL && (line = lines.readLine()) != null; ) {
            if (line.startsWith("wrote ")) {
                wrote++;
            }
        }
        assertEquals(WRITES_BEFORE_KILL, wrote, "the second workload ended early: " + Files.readString(workloadLog));
        server.destroyForcibly(); // SIGKILL
        assertTrue(server.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS), "serve did not die of SIGKILL");
        assertEquals(137, server.exitValue(), "killed by SIGKILL");
        int moreLines = 0;
        for (String line; (line = lines.readLine()) != null; ) {
            moreLines += line.startsWith("wrote ") ? 1 : 0;
        }
        assertTrue(workload.waitFor(PROGRAM_SECONDS_MAX, TimeUnit.SECONDS), "qemu-io did not end after the server died");
        assertNotEquals(0, workload.exitValue(), "the second workload finished before the kill (" + moreLines
                + " more writes reported): the kill was not mid-workload");
        assertTrue(WRITES_BEFORE_KILL + moreLines < SECOND_WORKLOAD_WRITES, "every write of the second workload completed");

        // The crash left the last commit: thin check passes on it before anything reopens the pool.
        assertThinCheckClean(config, "after SIGKILL");

        // Restart: the flushed data is there, the snapshot still reads zeros.
        Process again = start(config, "serve-2");
        int port2 = awaitReady(again, "serve-2");
        String base = "nbd://127.0.0.1:" + port2 + "/";
        // qemu-io runs its commands in order: with write 23 reported, the flush after write 15 had
        // completed, so extents 64M..80M of the second workload were acknowledged by a flush too.
        String read = qemuIo(base + "vol0", "read -P 0xab 0 8M", "read -P 0xcd 16M 4M", "read -P 0 8M 8M",
                "read -P 0x5a 64M 16M");
        assertFalse(read.contains("Pattern verification failed"), read);
        assertTrue(read.contains("read 8388608/8388608 bytes at offset 0"), read);
        assertTrue(read.contains("read 4194304/4194304 bytes at offset 16777216"), read);
        assertTrue(read.contains("read 16777216/16777216 bytes at offset 67108864"), read);
        String read1 = qemuIo(base + "vol1", "read -P 0x3c 1M 2M", "read -P 0 0 1M");
        assertFalse(read1.contains("Pattern verification failed"), read1);
        String snap = qemuIo(base + "vol0snap", "read -P 0 0 32M");
        assertFalse(snap.contains("Pattern verification failed"), "the snapshot of the first start changed:\n" + snap);
        // The pool still takes writes after recovery.
        qemuIo(base + "vol0", "write -P 0x77 8M 1M", "flush", "read -P 0x77 8M 1M");
        again.destroy(); // SIGTERM
        assertTrue(again.waitFor(STOP_SECONDS_MAX, TimeUnit.SECONDS), "serve did not stop after SIGTERM");
        assertEquals(0, again.exitValue(), Files.readString(tmp.resolve("serve-2.err")));
        assertThinCheckClean(config, "after the clean stop");
    }

    /** Runs {@code blkstack thin check CONFIG --pool pool} in-process and expects exit 0. */
    private static void assertThinCheckClean(Path config, String when) {
        CommandRun r = CommandRun.run("thin", "check", config.toString(), "--pool", "pool");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), "thin check " + when + ":\n" + r.out() + r.err());
        assertTrue(r.out().contains("thin metadata clean"), r.out());
    }

    /** Starts {@code blkstack serve --config CONFIG --listen 127.0.0.1:0} in a new JVM in the scratch directory. */
    private Process start(Path config, String name) throws Exception {
        List<String> command = MainProcess.command("serve", "--config", config.toString(), "--listen", "127.0.0.1:0");
        return new ProcessBuilder(command).directory(tmp.toFile())
                .redirectError(tmp.resolve(name + ".err").toFile()).start();
    }

    /** Reads stdout up to the ready line; returns the port from the "listening on" line. */
    private int awaitReady(Process p, String name) throws Exception {
        BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
        List<String> lines = new ArrayList<>();
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
        fail(name + " ended before it was ready; stdout " + lines + ", stderr: " + Files.readString(tmp.resolve(name + ".err")));
        return -1;
    }

    /** Runs qemu-io on an NBD URI with the given commands; fails on a non-zero exit. */
    private String qemuIo(String uri, String... commands) throws Exception {
        List<String> command = new ArrayList<>(List.of("qemu-io", "-f", "raw", uri));
        for (String c : commands) {
            command.add("-c");
            command.add(c);
        }
        return Programs.run(tmp, PROGRAM_SECONDS_MAX, command.toArray(String[]::new));
    }
}
